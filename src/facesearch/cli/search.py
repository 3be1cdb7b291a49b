"""``facesearch search``, ``compare`` and ``users ...``: 1:N and 1:1 matching. Candidates are
leads for human review, never identifications."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from facesearch.cli.common import (
    CaseOpt,
    HomeOpt,
    JsonOpt,
    MaxOpt,
    PurposeOpt,
    SearchThresholdOpt,
    ThresholdOpt,
    emit,
    err,
    out,
    risk_text,
    service,
)
from facesearch.services.users import Association
from facesearch.shapes.search import CompareOut, SearchOut
from facesearch.shapes.users import AssociationOut, UserOut, UserSearchOut, UsersPage
from facesearch.types import Caller
from facesearch.vision import similarity as sim

users_app = typer.Typer(no_args_is_help=True, help="Users: several faces of one person.")


def search(
    collection: str,
    image: Path,
    home: HomeOpt = None,
    all_faces: Annotated[bool, typer.Option("--all-faces", help="Search every face in the "
                                                                "probe, not only the largest.")] = False,
    max_results: MaxOpt = 10,
    threshold: SearchThresholdOpt = None,
    purpose: PurposeOpt = None,
    case: CaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection with the face(s) of a probe image. Candidates are leads for human
    review, never identifications."""
    with service(home) as fs:
        res = fs.search.by_image(collection, image, max_results=max_results,
                                 threshold=threshold, all_faces=all_faces,
                                 caller=Caller.local(purpose, case))
    risk = res.risk
    if as_json:
        emit(SearchOut.of(res))
        return
    for p in res.results:
        box = ", ".join(f"{v:.0f}" for v in res.faces.boxes[p.face_index])
        t = Table("rank", "similarity", "external id", "face id", "enrolled quality",
                  title=f"probe face {p.face_index + 1} [{box}] - candidates for human review "
                        f"(threshold {res.threshold:g}, {res.collection_size} faces searched; "
                        f"{risk_text(risk)})")
        for rank, m in enumerate(p.matches, 1):
            t.add_row(str(rank), f"{m.similarity:.2f}", m.face.external_id or "", m.face.face_id,
                      m.enrolled_quality_band or "")
        out.print(t)
        if not p.matches:
            out.print("no candidate at or above the threshold")
    if risk is not None and risk.quality_band is not None:
        out.print(f"probe quality band {risk.quality_band} (recognisability "
                  f"{risk.recognisability:g})")
    for w in res.warnings:
        out.print(f"[yellow]warning[/] {w}")


def compare(
    source: Path,
    target: Path,
    home: HomeOpt = None,
    threshold: ThresholdOpt = sim.DEFAULT_THRESHOLD,
    as_json: JsonOpt = False,
) -> None:
    """Compare the largest face of SOURCE with the faces of TARGET (1:1)."""
    with service(home) as fs:
        c = fs.search.compare(source, target, threshold=threshold)
    risk = c.risk
    if as_json:
        emit(CompareOut.of(c))
        return
    verdict = "[green]match[/]" if c.match else "[red]no match[/]"
    out.print(f"similarity {c.similarity:.2f} (threshold {c.threshold:g}; {risk_text(risk)}): "
              f"{verdict}")


@users_app.command("create")
def users_create(collection: str, user_id: str, home: HomeOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Create a user."""
    with service(home) as fs:
        u = fs.users.create(collection, user_id)
    emit(UserOut.model_validate(u)) if as_json else out.print(f"created user {u.user_id}")


@users_app.command("delete")
def users_delete(collection: str, user_id: str, home: HomeOpt = None) -> None:
    """Delete a user (its faces stay in the collection)."""
    with service(home) as fs:
        fs.users.delete(collection, user_id)
    err.print(f"deleted user {user_id}")


@users_app.command("list")
def users_list(collection: str, home: HomeOpt = None,
               limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
               next_token: Annotated[int, typer.Option()] = 0, as_json: JsonOpt = False) -> None:
    """List users."""
    with service(home) as fs:
        users, nxt = fs.users.list_users(collection, limit=limit, after=next_token)
    if as_json:
        emit(UsersPage(users=[UserOut.model_validate(u) for u in users],
                       next_token=None if nxt is None else str(nxt)))
        return
    t = Table("user id", "status", "faces")
    for u in users:
        t.add_row(u.user_id, u.status, str(u.face_count))
    out.print(t)
    if nxt is not None:
        out.print(f"more: --next-token {nxt}")


@users_app.command("associate")
def users_associate(collection: str, user_id: str, face_ids: list[str], home: HomeOpt = None,
                    threshold: Annotated[float | None, typer.Option(
                        min=0, max=100, help="least similarity (0-100) to the user's faces "
                        "(default: the search gate's, Rekognition's)")] = None,
                    as_json: JsonOpt = False) -> None:
    """Associate faces with a user."""
    with service(home) as fs:
        a = fs.users.associate(collection, user_id, face_ids, user_match_threshold=threshold)
    _print_association(a, as_json, f"associated {len(a.done)} face(s) with {user_id}",
                       "not associated")


@users_app.command("disassociate")
def users_disassociate(collection: str, user_id: str, face_ids: list[str],
                       home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Remove faces from a user."""
    with service(home) as fs:
        a = fs.users.disassociate(collection, user_id, face_ids)
    _print_association(a, as_json, f"disassociated {len(a.done)} face(s) from {user_id}",
                       "not disassociated")


def _print_association(a: Association, as_json: bool, done: str, failed: str) -> None:
    if as_json:
        emit(AssociationOut.of(a))
        return
    out.print(done)
    for f, r in a.failed:
        err.print(f"[yellow]{failed}[/] {f}: {', '.join(r)}")


@users_app.command("search")
def users_search(
    collection: str,
    home: HomeOpt = None,
    user: Annotated[str | None, typer.Option(help="Search with this user's faces.")] = None,
    face: Annotated[str | None, typer.Option(help="Search with this stored face.")] = None,
    image: Annotated[Path | None, typer.Option(help="Search with a probe image.")] = None,
    max_results: MaxOpt = 10,
    threshold: SearchThresholdOpt = None,
    purpose: PurposeOpt = None,
    case: CaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search users by user id, face id or probe image."""
    if sum(x is not None for x in (user, face, image)) != 1:
        raise typer.BadParameter("give exactly one of --user, --face or --image")
    caller = Caller.local(purpose, case)
    with service(home) as fs:
        if image is not None:
            res = fs.users.search_by_image(collection, image, max_users=max_results,
                                           threshold=threshold, caller=caller)
        else:
            res = fs.users.search(collection, user_id=user, face_id=face, max_users=max_results,
                                  threshold=threshold, caller=caller)
    risk = res.risk
    if as_json:
        emit(UserSearchOut.of(res))
        return
    t = Table("rank", "similarity", "user id",
              title=f"candidates for human review (threshold {res.threshold:g}; "
                    f"{risk_text(risk)})")
    for rank, m in enumerate(res.matches, 1):
        t.add_row(str(rank), f"{m.similarity:.2f}", m.user_id)
    out.print(t)
