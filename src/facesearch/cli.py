"""Command-line interface: thin commands over the service objects.

Tables for people, ``--json`` for scripts. Every facesearch error exits with status 1 and a
one-line reason on stderr (mapped once, in :func:`main`); usage errors exit with 2.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from . import calibration as cal
from . import similarity as sim
from .errors import AlreadyExistsError, FaceSearchError
from .eval_cli import eval_app
from .service import FaceSearch
from .types import Caller, Faces, QualityFilter

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Self-hosted, accountable face search.")
collection_app = typer.Typer(no_args_is_help=True, help="Create, list, describe, delete collections.")
faces_app = typer.Typer(no_args_is_help=True, help="List and delete the faces of a collection.")
users_app = typer.Typer(no_args_is_help=True, help="Users: several faces of one person.")
app.add_typer(collection_app, name="collection")
app.add_typer(faces_app, name="faces")
app.add_typer(users_app, name="users")
app.add_typer(eval_app, name="eval")

out = Console()
err = Console(stderr=True)

HomeOpt = Annotated[Path | None, typer.Option("--home", envvar="FACESEARCH_HOME",
                                              help="Data directory.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
ThresholdOpt = Annotated[float, typer.Option("--threshold", "-t", min=0, max=100,
                                             help="Minimum similarity (0-100).")]
SearchThresholdOpt = Annotated[float | None, typer.Option(
    "--threshold", "-t", min=0, max=100, show_default=False,
    help="Minimum similarity (0-100); default: the collection's (80, or its floor).")]
PurposeOpt = Annotated[str | None, typer.Option(
    "--purpose", envvar="FACESEARCH_PURPOSE", help="Why this search is made (recorded in the "
    "audit trail; required by law-enforcement collections).")]
CaseOpt = Annotated[str | None, typer.Option(
    "--case", envvar="FACESEARCH_CASE", help="Case reference (recorded in the audit trail).")]
MaxOpt = Annotated[int, typer.Option("--max", "-n", min=1, max=4096,
                                     help="Most candidates per face.")]


@contextmanager
def service(home: Path | None) -> Iterator[FaceSearch]:
    fs = FaceSearch.open(home)
    try:
        yield fs
    finally:
        fs.shutdown()


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _r(v: float, nd: int = 2) -> float:
    return round(float(v), nd)


def _risk(model_version: str, threshold: float, gallery: int | None) -> cal.ThresholdRisk | None:
    """What ``threshold`` means for this model (None without a calibration for it)."""
    c = cal.find_calibration(model_version)
    return None if c is None else c.risk(threshold, gallery)


def _risk_json(r: cal.ThresholdRisk | None) -> dict[str, Any]:
    return {"false_match_rate": None if r is None else float(f"{r.false_match_rate:.3g}"),
            "expected_fpir": None if r is None or r.expected_fpir is None
            else float(f"{r.expected_fpir:.3g}"),
            "fmr_extrapolated": None if r is None else r.extrapolated}


def _risk_text(r: cal.ThresholdRisk | None) -> str:
    return "no calibration for this model" if r is None else cal.format_risk(r)


def faces_json(faces: Faces, i: int) -> dict[str, Any]:
    d: dict[str, Any] = {
        "box": [_r(v, 1) for v in faces.boxes[i]],
        "score": _r(faces.scores[i], 4),
        "landmarks": [[_r(x, 1), _r(y, 1)] for x, y in faces.landmarks[i]],
    }
    if faces.quality is not None:
        q = faces.quality
        d["quality"] = {"size": _r(q.size[i], 1), "sharpness": _r(q.sharpness[i], 1),
                        "brightness": _r(q.brightness[i], 1), "yaw": _r(q.yaw[i], 1),
                        "pitch": _r(q.pitch[i], 1), "roll": _r(q.roll[i], 1)}
    return d


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


# -- collections ----------------------------------------------------------------------------

def _collection_json(c: Any) -> dict[str, Any]:
    return {"name": c.name, "model_version": c.model_version, "created_at": c.created_at,
            "faces": c.face_count, "users": c.user_count, "images": c.image_count}


@collection_app.command("create")
def collection_create(name: str, home: HomeOpt = None, as_json: JsonOpt = False,
                      exist_ok: Annotated[bool, typer.Option(
                          "--exist-ok", help="Succeed if it already exists.")] = False,
                      law_enforcement: Annotated[bool, typer.Option(
                          "--law-enforcement", help="Strict policy: purpose and case required, "
                          "threshold floor at FMR 1e-6, at most 50 candidates.")] = False,
                      ) -> None:
    """Create an empty collection."""
    from .policy import CollectionPolicy

    with service(home) as fs:
        try:
            c = fs.collections.create(name, policy=CollectionPolicy(
                law_enforcement=law_enforcement))
        except AlreadyExistsError:
            if not exist_ok:
                raise
            c = fs.collections.describe(name)
    if as_json:
        emit_json(_collection_json(c))
    else:
        out.print(f"created collection [bold]{c.name}[/] (model {c.model_version})")


@collection_app.command("list")
def collection_list(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """List collections."""
    with service(home) as fs:
        cs = fs.collections.list()
    if as_json:
        emit_json({"collections": [_collection_json(c) for c in cs]})
        return
    t = Table("name", "faces", "users", "images", "model", "created")
    for c in cs:
        t.add_row(c.name, str(c.face_count), str(c.user_count), str(c.image_count),
                  c.model_version, _ts(c.created_at))
    out.print(t)


@collection_app.command("describe")
def collection_describe(name: str, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show a collection's size and model."""
    with service(home) as fs:
        c = fs.collections.describe(name)
    if as_json:
        emit_json(_collection_json(c))
        return
    t = Table(show_header=False)
    for k, v in _collection_json(c).items():
        t.add_row(k, _ts(v) if k == "created_at" else str(v))
    out.print(t)


@collection_app.command("delete")
def collection_delete(name: str, home: HomeOpt = None,
                      yes: Annotated[bool, typer.Option("--yes", "-y",
                                                        help="Do not ask.")] = False) -> None:
    """Delete a collection and every face in it."""
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Delete collection {name!r} and all its faces?", abort=True)
    with service(home) as fs:
        fs.collections.delete(name)
    err.print(f"deleted collection {name}")


@collection_app.command("reembed")
def collection_reembed(
    name: str, home: HomeOpt = None,
    drop_missing: Annotated[bool, typer.Option(
        "--drop-missing", help="Erase faces whose source image is gone or changed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-embed a collection made with another face model, from its source image files."""
    with service(home) as fs:
        r = fs.collections.reembed(name, drop_missing=drop_missing)
    if as_json:
        emit_json({"collection": r.collection, "old_model": r.old_model,
                   "new_model": r.new_model, "faces_reembedded": r.faces_reembedded,
                   "dropped": r.dropped,
                   "missing": [{"face_id": f, "reason": w} for f, w in r.missing]})
        return
    out.print(f"re-embedded {r.faces_reembedded} face(s) of {name} with {r.new_model}"
              + (f"; erased {r.dropped} that could not be" if r.dropped else ""))


# -- indexing -------------------------------------------------------------------------------

class _RateColumn(ProgressColumn):
    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()

    def render(self, task: Task) -> Text:
        faces = task.fields.get("faces", 0)
        dt = max(time.monotonic() - self.started, 1e-6)
        return Text(f"{faces} faces, {faces / dt:.1f} faces/s", style="progress.data.speed")


@app.command("index")
def index(
    collection: str,
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (recursive).")],
    home: HomeOpt = None,
    external_id: Annotated[str | None, typer.Option(help="External id (one file only).")] = None,
    id_from: Annotated[str, typer.Option(help="External id from the file 'name', the 'parent' "
                                              "folder, or 'none'.")] = "name",
    max_faces: Annotated[int | None, typer.Option(min=1, max=4096,
                                                  help="Index at most N faces per image.")] = None,
    quality_filter: Annotated[QualityFilter, typer.Option(help="Quality bar.")] = QualityFilter.AUTO,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: all "
                                                           "cores).")] = None,
    force: Annotated[bool, typer.Option(help="Index content already in the collection "
                                             "again.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index the faces of image files and folders (resumable: done files are skipped)."""
    from .indexing import BulkIndexer, FileResult, IdFrom, Outcome, iter_image_files

    try:
        id_source = IdFrom(id_from)
    except ValueError:
        raise typer.BadParameter("--id-from must be name, parent or none") from None
    files = list(iter_image_files(paths))
    if external_id is not None and len(files) != 1:
        raise typer.BadParameter("--external-id needs exactly one image file")
    with service(home) as fs:
        fs.collections.describe(collection)  # fail fast on an unknown collection
        indexer = BulkIndexer(fs.collections, collection, settings=fs.settings,
                              workers=workers, quality_filter=quality_filter,
                              max_faces=max_faces, id_from=id_source, external_id=external_id,
                              force=force)
        rate = _RateColumn()
        progress = Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), rate,
                            TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                            disable=as_json or not err.is_terminal)
        with progress:
            task = progress.add_task("index", total=len(files), faces=0)
            faces = 0

            def on_result(r: FileResult) -> None:
                nonlocal faces
                faces += r.faces_indexed
                progress.update(task, advance=1, faces=faces)
                if as_json:
                    emit_json({"path": str(r.path), "outcome": r.outcome.value,
                               "faces_indexed": r.faces_indexed, "reason": r.reason,
                               "face_ids": [f.face_id for f in r.result.indexed]
                               if r.result is not None else []})
                elif r.outcome in (Outcome.FAILED, Outcome.NO_FACE):
                    progress.console.print(f"[yellow]{r.outcome.value}[/] {r.path}: {r.reason}")

            summary = indexer.run(files, on_result)
    if as_json:
        emit_json({"summary": {"files": summary.files, "indexed": summary.indexed,
                               "skipped": summary.skipped, "no_face": summary.no_face,
                               "failed": summary.failed, "faces": summary.faces}})
        return
    t = Table("files", "indexed", "faces", "skipped (already indexed)", "no face", "failed")
    t.add_row(str(summary.files), str(summary.indexed), str(summary.faces),
              str(summary.skipped), str(summary.no_face), str(summary.failed))
    out.print(t)
    if summary.failed and not summary.indexed and not summary.skipped:
        raise typer.Exit(1)


# -- search, compare, detect, embed ---------------------------------------------------------

def _match_json(m: Any) -> dict[str, Any]:
    return {"face_id": m.face.face_id, "external_id": m.face.external_id,
            "similarity": _r(m.similarity, 3), "image_id": m.face.image_id,
            "user_id": m.face.user_id, "box": [_r(v, 1) for v in m.face.box]}


@app.command("search")
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
        res = fs.collections.search_by_image(collection, image, max_results=max_results,
                                             threshold=threshold, all_faces=all_faces,
                                             caller=Caller.local(purpose, case))
    risk = _risk(res.model_version, res.threshold, max(res.collection_size, 1))
    if as_json:
        emit_json({
            "search_id": res.search_id, "label": res.label,
            "width": res.width, "height": res.height, "threshold": res.threshold,
            "model_version": res.model_version, "collection_size": res.collection_size,
            **_risk_json(risk),
            "faces": [{**faces_json(res.faces, p.face_index),
                       "matches": [_match_json(m) for m in p.matches]} for p in res.results],
        })
        return
    for p in res.results:
        box = ", ".join(f"{v:.0f}" for v in res.faces.boxes[p.face_index])
        t = Table("rank", "similarity", "external id", "face id",
                  title=f"probe face {p.face_index + 1} [{box}] - candidates for human review "
                        f"(threshold {res.threshold:g}, {res.collection_size} faces searched; "
                        f"{_risk_text(risk)})")
        for rank, m in enumerate(p.matches, 1):
            t.add_row(str(rank), f"{m.similarity:.2f}", m.face.external_id or "", m.face.face_id)
        out.print(t)
        if not p.matches:
            out.print("no candidate at or above the threshold")


@app.command("compare")
def compare(
    source: Path,
    target: Path,
    home: HomeOpt = None,
    threshold: ThresholdOpt = sim.DEFAULT_THRESHOLD,
    as_json: JsonOpt = False,
) -> None:
    """Compare the largest face of SOURCE with the faces of TARGET (1:1)."""
    with service(home) as fs:
        c = fs.collections.compare(source, target, threshold=threshold)
        risk = _risk(fs.pipeline.model_version, c.threshold, None)
    if as_json:
        emit_json({"similarity": _r(c.similarity, 3), "match": c.match, "threshold": c.threshold,
                   **_risk_json(risk),
                   "target_faces": [{**faces_json(c.target, i), "similarity": _r(s, 3)}
                                    for i, s in enumerate(c.similarities)]})
        return
    verdict = "[green]match[/]" if c.match else "[red]no match[/]"
    out.print(f"similarity {c.similarity:.2f} (threshold {c.threshold:g}; {_risk_text(risk)}): "
              f"{verdict}")


@app.command("detect")
def detect(
    image: Path,
    home: HomeOpt = None,
    annotate: Annotated[Path | None, typer.Option(help="Write a copy with boxes and "
                                                       "landmarks drawn.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Detect faces: boxes, scores, landmarks and quality."""
    from .decode import load_image

    with service(home) as fs:
        img = load_image(image, fs.settings.limits)
        faces = fs.pipeline.detect(img)
    if annotate is not None:
        from .draw import annotate_faces

        annotate_faces(img.pixels, faces, annotate)
    if as_json:
        emit_json({"width": img.width, "height": img.height,
                   "faces": [faces_json(faces, i) for i in range(len(faces))]})
        return
    t = Table("#", "box (x1, y1, x2, y2)", "score", "size", "sharpness", "brightness",
              "yaw", "pitch", "roll", title=f"{image} ({img.width}x{img.height})")
    q = faces.quality
    assert q is not None
    for i in range(len(faces)):
        t.add_row(str(i + 1), ", ".join(f"{v:.0f}" for v in faces.boxes[i]),
                  f"{faces.scores[i]:.2f}", f"{q.size[i]:.0f}", f"{q.sharpness[i]:.0f}",
                  f"{q.brightness[i]:.0f}", f"{q.yaw[i]:.0f}", f"{q.pitch[i]:.0f}",
                  f"{q.roll[i]:.0f}")
    out.print(t)
    if not len(faces):
        out.print("no face found")


@app.command("embed")
def embed(
    paths: Annotated[list[Path], typer.Argument(help="Image files.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the embedding of every face of each image (JSON lines with --json)."""
    from .decode import load_image

    failed = 0
    with service(home) as fs:
        for p in paths:
            try:
                img = load_image(p, fs.settings.limits)
            except FaceSearchError as exc:
                failed += 1
                err.print(f"[red]error[/] {p}: {exc.message}")
                if as_json:
                    emit_json({"path": str(p), "error": exc.message})
                continue
            faces = fs.pipeline.analyze(img)
            assert faces.embeddings is not None
            if as_json:
                emit_json({"path": str(p), "model_version": fs.pipeline.model_version,
                           "faces": [{"box": [_r(v, 1) for v in faces.boxes[i]],
                                      "embedding": [round(float(x), 6)
                                                    for x in faces.embeddings[i]]}
                                     for i in range(len(faces))]})
            else:
                out.print(f"{p}: {len(faces)} face(s)")
                for i in range(len(faces)):
                    e = faces.embeddings[i]
                    out.print(f"  [{', '.join(f'{v:.0f}' for v in faces.boxes[i])}] "
                              f"{' '.join(f'{x:+.3f}' for x in e[:6])} ...")
    if failed == len(paths):
        raise typer.Exit(1)


# -- faces ----------------------------------------------------------------------------------

def _face_json(f: Any) -> dict[str, Any]:
    return {"face_id": f.face_id, "external_id": f.external_id, "image_id": f.image_id,
            "user_id": f.user_id, "box": [_r(v, 1) for v in f.box], "score": _r(f.score, 4),
            "source": f.source, "image_sha256": f.image_sha256, "created_at": f.created_at,
            "model_version": f.model_version}


@faces_app.command("list")
def faces_list(
    collection: str,
    home: HomeOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=4096)] = 100,
    next_token: Annotated[int, typer.Option(help="Cursor from the previous page.")] = 0,
    user: Annotated[str | None, typer.Option(help="Only faces of this user.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List faces of a collection, a page at a time."""
    with service(home) as fs:
        faces, nxt = fs.collections.list_faces(collection, limit=limit, after=next_token,
                                               user_id=user)
    if as_json:
        emit_json({"faces": [_face_json(f) for f in faces], "next_token": nxt})
        return
    t = Table("face id", "external id", "user", "box", "source")
    for f in faces:
        t.add_row(f.face_id, f.external_id or "", f.user_id or "",
                  ", ".join(f"{v:.0f}" for v in f.box), f.source or "")
    out.print(t)
    if nxt is not None:
        out.print(f"more: --next-token {nxt}")


@faces_app.command("delete")
def faces_delete(collection: str, face_ids: list[str], home: HomeOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Delete faces by id."""
    with service(home) as fs:
        deleted, missing = fs.collections.delete_faces(collection, face_ids)
    if as_json:
        emit_json({"deleted": deleted, "not_found": missing})
    else:
        out.print(f"deleted {len(deleted)} face(s)")
        for m in missing:
            err.print(f"[yellow]not found[/] {m}")
    if missing and not deleted:
        raise typer.Exit(1)


# -- users ----------------------------------------------------------------------------------

def _user_json(u: Any) -> dict[str, Any]:
    return {"user_id": u.user_id, "status": u.status, "faces": u.face_count,
            "created_at": u.created_at}


@users_app.command("create")
def users_create(collection: str, user_id: str, home: HomeOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Create a user."""
    with service(home) as fs:
        u = fs.users.create(collection, user_id)
    emit_json(_user_json(u)) if as_json else out.print(f"created user {u.user_id}")


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
        users, nxt = fs.users.list(collection, limit=limit, after=next_token)
    if as_json:
        emit_json({"users": [_user_json(u) for u in users], "next_token": nxt})
        return
    t = Table("user id", "status", "faces")
    for u in users:
        t.add_row(u.user_id, u.status, str(u.face_count))
    out.print(t)
    if nxt is not None:
        out.print(f"more: --next-token {nxt}")


def _association_json(a: Any) -> dict[str, Any]:
    return {"done": a.done, "failed": [{"face_id": f, "reasons": r} for f, r in a.failed],
            "user": _user_json(a.user)}


@users_app.command("associate")
def users_associate(collection: str, user_id: str, face_ids: list[str], home: HomeOpt = None,
                    threshold: Annotated[float, typer.Option(min=0, max=100)] = 75.0,
                    as_json: JsonOpt = False) -> None:
    """Associate faces with a user."""
    with service(home) as fs:
        a = fs.users.associate(collection, user_id, face_ids, user_match_threshold=threshold)
    if as_json:
        emit_json(_association_json(a))
        return
    out.print(f"associated {len(a.done)} face(s) with {user_id}")
    for f, r in a.failed:
        err.print(f"[yellow]not associated[/] {f}: {', '.join(r)}")


@users_app.command("disassociate")
def users_disassociate(collection: str, user_id: str, face_ids: list[str],
                       home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Remove faces from a user."""
    with service(home) as fs:
        a = fs.users.disassociate(collection, user_id, face_ids)
    if as_json:
        emit_json(_association_json(a))
        return
    out.print(f"disassociated {len(a.done)} face(s) from {user_id}")
    for f, r in a.failed:
        err.print(f"[yellow]not disassociated[/] {f}: {', '.join(r)}")


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
        info = fs.collections.describe(collection)
        risk = _risk(info.model_version, res.threshold, max(info.face_count, 1))
    if as_json:
        emit_json({"threshold": res.threshold, **_risk_json(risk),
                   "matches": [{"user_id": m.user_id, "similarity": _r(m.similarity, 3),
                                "face_id": m.face_id} for m in res.matches]})
        return
    t = Table("rank", "similarity", "user id",
              title=f"candidates for human review (threshold {res.threshold:g}; "
                    f"{_risk_text(risk)})")
    for rank, m in enumerate(res.matches, 1):
        t.add_row(str(rank), f"{m.similarity:.2f}", m.user_id)
    out.print(t)


# -- audit trail ----------------------------------------------------------------------------

audit_app = typer.Typer(no_args_is_help=True, help="The audit trail: verify, list, export, "
                                                   "checkpoint, public key.")
app.add_typer(audit_app, name="audit")

ActorOpt = Annotated[str | None, typer.Option("--actor", help="Only this key id or user.")]
CaseFilterOpt = Annotated[str | None, typer.Option("--case", help="Only this case reference.")]
CollectionFilterOpt = Annotated[str | None, typer.Option("--collection",
                                                         help="Only this collection.")]
OperationOpt = Annotated[str | None, typer.Option(
    "--operation", help="Only this operation ('search.*' for a prefix).")]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="From this time on: ISO 8601 (local time unless it has an offset) or "
                    "seconds since the epoch.")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Before this time (as --since).")]


def _audit_time(value: str | None, option: str) -> float | None:
    """``value`` as seconds since the epoch (a number, or ISO 8601 in local time)."""
    from datetime import datetime

    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise typer.BadParameter(f"{option} {value!r}: give ISO 8601 (2024-05-01T12:00) or "
                                 f"seconds since the epoch") from None


@audit_app.command("verify")
def audit_verify(
    home: HomeOpt = None,
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", help="Check checkpoints with this exported public key (PEM) instead "
                             "of the configured signing key.")] = None,
    witness: Annotated[Path | None, typer.Option(
        "--witness", help="Also hold the chain to the checkpoints in this witness file (kept "
                          "outside the data directory): shows a rewrite or a cut tail.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the hash chain and the signed checkpoints; exit 1 if anything was tampered with."""
    from .audit import read_witness

    pem = public_key.read_bytes() if public_key is not None else None
    witnessed = read_witness(witness) if witness is not None else None
    with service(home) as fs:
        report = fs.audit.verify(pem, witnessed)
    if as_json:
        emit_json({"ok": report.ok, "events": report.events, "head_seq": report.head_seq,
                   "head_hash": report.head_hash, "checkpoints": report.checkpoints,
                   "checkpoints_valid": report.checkpoints_valid,
                   "problems": [{"seq": p.seq, "kind": p.kind.value, "message": p.message}
                                for p in report.problems]})
    else:
        for p in report.problems:
            out.print(f"seq {p.seq}: {p.kind.value}: {p.message}", highlight=False,
                      soft_wrap=True)
        verdict = "ok" if report.ok else f"TAMPERED ({len(report.problems)} problem(s))"
        out.print(f"{verdict}: {report.events} events, head seq {report.head_seq} "
                  f"{report.head_hash[:16]}..., {report.checkpoints_valid} of "
                  f"{report.checkpoints} checkpoint(s) valid", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("list")
def audit_list(
    home: HomeOpt = None, actor: ActorOpt = None, case: CaseFilterOpt = None,
    collection: CollectionFilterOpt = None, operation: OperationOpt = None,
    since: SinceOpt = None, until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    next_token: Annotated[int, typer.Option(help="Cursor from the previous page.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List audit events, oldest first, a page at a time."""
    with service(home) as fs:
        records, nxt = fs.audit.query(
            actor=actor, case_ref=case, collection=collection, operation=operation,
            since=_audit_time(since, "--since"), until=_audit_time(until, "--until"),
            limit=limit, after_seq=next_token)
    if as_json:
        emit_json({"events": [r.to_json() for r in records], "next_token": nxt})
        return
    t = Table("seq", "time", "operation", "actor", "collection", "case", "purpose", "results")
    for r in records:
        e = r.event
        t.add_row(str(r.seq), _ts(r.ts), e.operation, e.actor, e.collection or "",
                  e.case_ref or "", e.purpose or "", str(len(e.results)))
    out.print(t)
    if nxt is not None:
        out.print(f"more: --next-token {nxt}")


@audit_app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write here instead of stdout.")] = None,
    home: HomeOpt = None, actor: ActorOpt = None, case: CaseFilterOpt = None,
    collection: CollectionFilterOpt = None, operation: OperationOpt = None,
    since: SinceOpt = None, until: UntilOpt = None,
) -> None:
    """Export audit events (every field, with their hashes) as JSON lines or CSV."""
    if fmt not in ("jsonl", "csv"):
        raise typer.BadParameter("--format must be jsonl or csv")
    filters = {"actor": actor, "case_ref": case, "collection": collection,
               "operation": operation, "since": _audit_time(since, "--since"),
               "until": _audit_time(until, "--until")}
    with service(home) as fs:
        if output is None:
            n = fs.audit.export(fmt, sys.stdout, **filters)  # type: ignore[arg-type]
        else:
            with output.open("w", encoding="utf-8", newline="") as f:
                n = fs.audit.export(fmt, f, **filters)  # type: ignore[arg-type]
    err.print(f"exported {n} event(s)")


@audit_app.command("checkpoint")
def audit_checkpoint(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Sign the current head of the chain now (if no checkpoint covers it yet)."""
    with service(home) as fs:
        cp = fs.audit.checkpoint()
    if as_json:
        emit_json(None if cp is None else {"seq": cp.seq, "head_hash": cp.head_hash,
                                           "ts": cp.ts, "signature": cp.signature,
                                           "key_fingerprint": cp.key_fingerprint})
    elif cp is None:
        out.print("the audit trail is empty: nothing to sign")
    else:
        out.print(f"checkpoint at seq {cp.seq}: {cp.head_hash} "
                  f"(key {cp.key_fingerprint[:16]}...)", highlight=False, soft_wrap=True)


@audit_app.command("prove")
def audit_prove(
    seq: Annotated[int, typer.Argument(min=1, help="The event's seq.")],
    home: HomeOpt = None,
) -> None:
    """Print an inclusion proof (JSON) of one event in the signed Merkle tree (RFC 9162) of
    the latest checkpoint, for an auditor to check with 'audit check-proof'."""
    with service(home) as fs:
        proof = fs.audit.prove(seq)
    emit_json(proof)


@audit_app.command("check-proof")
def audit_check_proof(
    proof: Annotated[Path, typer.Argument(help="A proof from 'audit prove' ('-': stdin).")],
    public_key: Annotated[Path, typer.Option("--public-key", help="The exported public key "
                                                                  "(PEM).")],
) -> None:
    """Check an inclusion proof offline (no data directory needed); exit 1 if it fails."""
    from .audit import check_proof

    text = sys.stdin.read() if str(proof) == "-" else proof.read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}") from None
    rec = check_proof(obj, public_key.read_bytes())
    out.print(f"ok: event {rec.seq} ({rec.event.operation} by {rec.event.actor}) is in the "
              f"signed tree of {obj['tree_size']} events", highlight=False, soft_wrap=True)


@audit_app.command("public-key")
def audit_public_key(home: HomeOpt = None) -> None:
    """Print the checkpoint signing key's public half (PEM), for auditors to keep elsewhere."""
    with service(home) as fs:
        pem = fs.audit.public_key()
    sys.stdout.write(pem.decode("ascii"))


# -- access keys and the HTTP server --------------------------------------------------------

keys_app = typer.Typer(no_args_is_help=True, help="Access keys for the HTTP API.")
app.add_typer(keys_app, name="keys")


def _key_json(k: Any) -> dict[str, Any]:
    return {"key_id": k.key_id, "role": k.role.value, "label": k.label,
            "created_at": k.created_at, "revoked_at": k.revoked_at, "active": k.active,
            "purpose": k.purpose, "case_ref": k.case_ref, "expires_at": k.expires_at}


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option("--role", help="admin, indexer, searcher or auditor.")],
    label: Annotated[str | None, typer.Option(help="Who or what holds the key.")] = None,
    purpose: Annotated[str | None, typer.Option(help="Issue the key for one case: its "
                                                     "purpose (with --case).")] = None,
    case: Annotated[str | None, typer.Option(help="Issue the key for one case: its "
                                                  "reference (with --purpose).")] = None,
    expires_in: Annotated[float | None, typer.Option(
        "--expires-in", min=0.001, help="Days until the key expires.")] = None,
    home: HomeOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create an access key; its secret is printed this once only."""
    with service(home) as fs:
        expires = time.time() + expires_in * 86400 if expires_in else None
        new = fs.keys.create(role, label, purpose=purpose, case_ref=case, expires_at=expires)
    if as_json:
        emit_json({**_key_json(new.info), "secret": new.secret})
        return
    out.print(f"access key id: {new.info.key_id}\nsecret:        {new.secret}\n"
              f"role:          {new.info.role.value}\n(the secret is shown only now)",
              highlight=False)


@keys_app.command("list")
def keys_list(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """List access keys (never their secrets)."""
    with service(home) as fs:
        keys = fs.keys.list()
    if as_json:
        emit_json({"keys": [_key_json(k) for k in keys]})
        return
    t = Table("key id", "role", "label", "created", "revoked")
    for k in keys:
        t.add_row(k.key_id, k.role.value, k.label or "", _ts(k.created_at),
                  _ts(k.revoked_at) if k.revoked_at else "")
    out.print(t)


@keys_app.command("revoke")
def keys_revoke(key_id: str, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke an access key (every server on this data directory refuses it at once)."""
    with service(home) as fs:
        k = fs.keys.revoke(key_id)
    emit_json(_key_json(k)) if as_json else err.print(f"revoked {k.key_id}")


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Inference worker threads.")] = None,
    home: HomeOpt = None,
) -> None:
    """Run the HTTP API: native REST under /v1 and the Rekognition-compatible endpoint at /."""
    from .api.app import serve as run_server
    from .api.settings import ApiSettings
    from .config import Settings

    given = {k: v for k, v in (("host", host), ("port", port), ("workers", workers))
             if v is not None}
    run_server(Settings(**({"home": home} if home else {})), ApiSettings(**given))


# -- accountability: policy, erasure, retention, review ------------------------------------

policy_app = typer.Typer(no_args_is_help=True, help="A collection's use policy.")
app.add_typer(policy_app, name="policy")


def _policy_json(info: Any) -> dict[str, Any]:
    p = info.policy
    return {"collection": info.name, "stated": info.settings.model_dump(),
            "effective": {"law_enforcement": p.law_enforcement,
                          "require_purpose": p.require_purpose,
                          "threshold_floor": round(p.threshold_floor, 3),
                          "floor_false_match_rate": p.floor_fmr,
                          "max_results_cap": p.max_results_cap,
                          "retention_days": p.retention_days}}


@policy_app.command("show")
def policy_show(collection: str, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the stated and effective policy of a collection."""
    with service(home) as fs:
        info = fs.collections.describe(collection)
    d = _policy_json(info)
    if as_json:
        emit_json(d)
        return
    t = Table("setting", "effective", "stated", title=f"policy of {collection}")
    for k, v in d["effective"].items():
        stated = d["stated"].get(k.replace("floor_false_match_rate", "-"), "")
        t.add_row(k, str(v), "" if stated is None else str(stated))
    out.print(t)


@policy_app.command("set")
def policy_set(
    collection: str,
    home: HomeOpt = None,
    law_enforcement: Annotated[bool | None, typer.Option(
        "--law-enforcement/--not-law-enforcement", help="Strict defaults for police use.")] = None,
    require_purpose: Annotated[bool | None, typer.Option(
        "--require-purpose/--no-require-purpose")] = None,
    floor: Annotated[float | None, typer.Option(min=0, max=100, help="Threshold floor.")] = None,
    max_results_cap: Annotated[int | None, typer.Option(min=1, max=4096)] = None,
    retention_days: Annotated[float | None, typer.Option(min=0.001)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a collection's policy (unset options keep their stated values)."""
    from .policy import CollectionPolicy

    with service(home) as fs:
        current = fs.collections.describe(collection).settings.model_dump()
        changes = {"law_enforcement": law_enforcement, "require_purpose": require_purpose,
                   "threshold_floor": floor, "max_results_cap": max_results_cap,
                   "retention_days": retention_days}
        current.update({k: v for k, v in changes.items() if v is not None})
        info = fs.collections.set_policy(collection, CollectionPolicy(**current))
    if as_json:
        emit_json(_policy_json(info))
    else:
        out.print(f"policy of {collection} updated (floor {info.policy.threshold_floor:.2f}, "
                  f"purpose {'required' if info.policy.require_purpose else 'optional'})")


def _receipt_json(r: Any) -> dict[str, Any]:
    return {"receipt_id": r.receipt_id, "collection": r.collection, "face_ids": r.face_ids,
            "images_erased": r.images_erased, "erased_at": r.erased_at, "reason": r.reason,
            "derived_erased": r.derived_erased}


@app.command("erase")
def erase(
    collection: str,
    home: HomeOpt = None,
    face_id: Annotated[list[str] | None, typer.Option("--face-id", help="Face id (repeat).")] = None,
    external_id: Annotated[str | None, typer.Option(help="Every face with this external "
                                                         "id.")] = None,
    user: Annotated[str | None, typer.Option(help="A user and all its faces.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase faces for good (vectors, metadata, index entries) and print the receipt."""
    with service(home) as fs:
        r = fs.collections.erase(collection, face_ids=face_id or None, external_id=external_id,
                                 user_id=user)
    if as_json:
        emit_json(_receipt_json(r))
    else:
        out.print(f"erased {len(r.face_ids)} face(s) from {collection}; receipt {r.receipt_id}")


@app.command("retention")
def retention(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Erase every face older than its collection's retention period, now."""
    with service(home) as fs:
        receipts = fs.collections.expire()
    if as_json:
        emit_json({"receipts": [_receipt_json(r) for r in receipts]})
    else:
        out.print(f"expired {sum(len(r.face_ids) for r in receipts)} face(s) in "
                  f"{len(receipts)} collection(s)")


@app.command("review")
def review(
    search_id: str,
    face_id: str,
    decision: Annotated[str, typer.Argument(help="confirmed, rejected or inconclusive")],
    home: HomeOpt = None,
    note: Annotated[str, typer.Option(help="Why.")] = "",
    collection: Annotated[str | None, typer.Option()] = None,
    purpose: PurposeOpt = None,
    case: CaseOpt = None,
) -> None:
    """Record an analyst's decision on a search candidate in the audit trail."""
    with service(home) as fs:
        fs.collections.review(search_id, face_id, decision, note=note, collection=collection,
                              caller=Caller.local(purpose, case))
    out.print(f"recorded: {decision}")


# -- video and streams ----------------------------------------------------------------------

video_app = typer.Typer(no_args_is_help=True, help="Find faces in stored video files.")
stream_app = typer.Typer(no_args_is_help=True, help="Watch live streams for watchlist faces.")
app.add_typer(video_app, name="video")
app.add_typer(stream_app, name="stream")

FpsOpt = Annotated[float, typer.Option("--fps", min=0.01, max=120,
                                       help="Frames analysed per second of video.")]


def _video_match_json(m: Any) -> dict[str, Any]:
    return {"face_id": m.face_id, "external_id": m.external_id, "image_id": m.image_id,
            "user_id": m.user_id, "similarity": _r(m.similarity, 3)}


def _run_video_job(fs: FaceSearch, job_id: str, quiet: bool) -> Any:
    """Wait for an in-process video job with a progress bar; Ctrl-C cancels it."""
    from .errors import FaceSearchError as _Error
    from .video import JobStatus

    progress = Progress(TextColumn("analysing"), BarColumn(),
                        TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=err, disable=quiet or not err.is_terminal)
    try:
        with progress:
            task = progress.add_task("video", total=100.0)
            while True:
                job = fs.video.wait(job_id, timeout_s=0.5)
                progress.update(task, completed=job.progress)
                if job.status is not JobStatus.IN_PROGRESS:
                    break
    except KeyboardInterrupt:
        fs.video.cancel(job_id)
        fs.video.wait(job_id, timeout_s=30)
        err.print("cancelled")
        raise typer.Exit(130) from None
    if job.status is not JobStatus.SUCCEEDED:
        raise _Error(f"video job {job.status.value.lower()}: {job.status_message}")
    return job


def _video_job_json(job: Any) -> dict[str, Any]:
    v = job.video
    return {"job_id": job.job_id, "status": job.status.value, "source": job.source,
            "collection": job.collection, "threshold": job.settings.threshold,
            "sample_fps": job.settings.sample_fps, "frames_analysed": job.frames_analysed,
            "video": None if v is None else {"format": v.format, "codec": v.codec,
                                             "width": v.width, "height": v.height,
                                             "fps": _r(v.fps, 3), "duration_ms": v.duration_ms}}


def _video_persons(fs: FaceSearch, job: Any) -> list[dict[str, Any]]:
    """Every person of a finished job with its timestamps and boxes (all result pages)."""
    from .video import JobKind

    people = {p.person_index: {"index": p.person_index, "first_ms": p.first_ms,
                               "last_ms": p.last_ms, "detections": p.detections,
                               "matches": [_video_match_json(m) for m in p.matches],
                               "timestamps": []} for p in fs.video.persons(job.job_id)}
    if job.kind is JobKind.FACE_SEARCH:
        token = None
        while True:
            page = fs.video.face_search_results(job.job_id, next_token=token, sort_by="INDEX")
            for pm in page.persons:
                people[pm.person_index]["timestamps"].append(
                    {"timestamp_ms": pm.timestamp_ms, "box": [_r(v, 1) for v in pm.face.box],
                     "confidence": _r(pm.face.confidence, 4)})
            token = page.next_token
            if token is None:
                break
    return list(people.values())


def _print_persons(persons: list[dict[str, Any]], title: str, with_matches: bool) -> None:
    cols = ["person", "from (s)", "to (s)", "seen"]
    if with_matches:
        cols += ["best candidate", "similarity", "others"]
    t = Table(*cols, title=title)
    for p in persons:
        row = [str(p["index"]), f"{p['first_ms'] / 1000:.2f}", f"{p['last_ms'] / 1000:.2f}",
               str(p["detections"])]
        if with_matches:
            ms = p["matches"]
            best = ms[0] if ms else None
            row += [(best["external_id"] or best["face_id"]) if best else "",
                    f"{best['similarity']:.2f}" if best else "",
                    ", ".join(f"{m['external_id'] or m['face_id']} {m['similarity']:.1f}"
                              for m in ms[1:4])]
        t.add_row(*row)
    out.print(t)


@video_app.command("search")
def video_search(
    collection: str,
    file: Path,
    home: HomeOpt = None,
    fps: FpsOpt = 5.0,
    threshold: SearchThresholdOpt = None,
    max_results: MaxOpt = 10,
    purpose: PurposeOpt = None,
    case: CaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the faces of a video file against a collection (candidates for human review).

    Reports each person (a face tracked across frames), when it was seen, and its candidates.
    """
    from .video import VideoJobSettings

    settings = VideoJobSettings(sample_fps=fps, threshold=threshold, max_results=max_results)
    with service(home) as fs:
        job_id = fs.video.start_face_search(collection, file, settings=settings,
                                            caller=Caller.local(purpose, case))
        job = _run_video_job(fs, job_id, as_json)
        persons = _video_persons(fs, job)
    if as_json:
        emit_json({**_video_job_json(job), "label": "candidates for human review, not "
                                                    "identifications", "persons": persons})
        return
    matched = sum(1 for p in persons if p["matches"])
    _print_persons(persons, f"{file}: {len(persons)} person(s), {matched} with candidates "
                            f"for human review", True)


@video_app.command("detect")
def video_detect(
    file: Path,
    home: HomeOpt = None,
    fps: FpsOpt = 5.0,
    as_json: JsonOpt = False,
) -> None:
    """Detect and track the faces of a video file."""
    from .video import VideoJobSettings

    with service(home) as fs:
        job_id = fs.video.start_face_detection(
            file, settings=VideoJobSettings(sample_fps=fps), caller=Caller.local())
        job = _run_video_job(fs, job_id, as_json)
        persons = _video_persons(fs, job)
        faces = []
        token = None
        while True:
            page = fs.video.face_detection_results(job_id, next_token=token)
            faces += [{"timestamp_ms": d.timestamp_ms, "box": [_r(v, 1) for v in d.face.box],
                       "confidence": _r(d.face.confidence, 4),
                       "landmarks": [[_r(x, 1), _r(y, 1)] for x, y in d.face.landmarks],
                       "quality": {"size": _r(d.face.size, 1),
                                   "sharpness": _r(d.face.sharpness, 1),
                                   "brightness": _r(d.face.brightness, 1),
                                   "yaw": _r(d.face.yaw, 1), "pitch": _r(d.face.pitch, 1),
                                   "roll": _r(d.face.roll, 1)}} for d in page.faces]
            token = page.next_token
            if token is None:
                break
    if as_json:
        emit_json({**_video_job_json(job), "faces": faces,
                   "persons": [{k: v for k, v in p.items() if k not in ("matches", "timestamps")}
                               for p in persons]})
        return
    _print_persons(persons, f"{file}: {len(faces)} face(s) in {job.frames_analysed} analysed "
                            f"frames, {len(persons)} person(s)", False)


@stream_app.command("run")
def stream_run(
    collection: str,
    url: Annotated[str, typer.Argument(help="rtsp://, http(s):// (MJPEG, HLS), /dev/videoN, or "
                                            "a video file (looped as a camera).")],
    home: HomeOpt = None,
    threshold: SearchThresholdOpt = None,
    jsonl: Annotated[Path | None, typer.Option(help="Append each event to this JSONL "
                                                    "file.")] = None,
    webhook: Annotated[str | None, typer.Option(help="POST each event to this URL.")] = None,
    duration: Annotated[float | None, typer.Option(min=0, help="Stop after S seconds "
                                                               "(default: Ctrl-C).")] = None,
    max_fps: Annotated[float | None, typer.Option(min=0.01, help="Most frames processed per "
                                                                 "second.")] = None,
    snapshots: Annotated[bool, typer.Option(help="Save a JPEG crop of each matched "
                                                 "face.")] = False,
    loop: Annotated[bool, typer.Option(help="Loop a file input.")] = True,
    purpose: PurposeOpt = None,
    case: CaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Watch a live stream in the foreground and print one event per person and watchlist
    identity (candidates for human review). Ctrl-C stops."""
    from .stream import ProcessorStatus, StreamProcessor, StreamSettings
    from .video import authorize_search

    settings = StreamSettings(input_url=url, collection=collection, threshold=threshold,
                              jsonl_path=jsonl, webhook_url=webhook, max_fps=max_fps,
                              snapshots=snapshots, loop=loop)
    caller = Caller.local(purpose, case)
    with service(home) as fs:
        # Fail fast on an unknown collection or a search its policy refuses.
        authorize_search(fs.collections, collection, caller, threshold, settings.max_results,
                         "search.stream")
        _ = fs.pipeline  # load the models before the clock starts
        proc = StreamProcessor("cli", settings, fs.collections, caller=caller,
                               snapshot_dir=fs.home / "snapshots" / "cli", snapshot_root=fs.home)
        sub = proc.hub.subscribe()
        proc.start()
        end = None if duration is None else time.monotonic() + duration
        try:
            while end is None or time.monotonic() < end:
                ev = sub.get(timeout_s=0.5)
                if ev is not None:
                    if as_json:
                        emit_json(ev.to_json())
                    else:
                        out.print(f"{_ts(ev.captured_at)} track {ev.track_id}: "
                                  f"[bold]{ev.identity}[/] similarity {ev.match.similarity:.1f} "
                                  f"(latency {ev.latency_ms:.0f} ms)"
                                  + (f" {ev.snapshot}" if ev.snapshot else ""))
                if proc.status in (ProcessorStatus.FAILED, ProcessorStatus.STOPPED):
                    break
        except KeyboardInterrupt:
            pass
        finally:
            proc.shutdown()
        m = proc.metrics()
    err.print(f"{m.frames_in} frames in, {m.frames_processed} processed, {m.frames_dropped} "
              f"dropped, {m.events} events, {m.reconnects} reconnects; latency p50 "
              f"{m.latency_p50_ms} ms, p99 {m.latency_p99_ms} ms", highlight=False)
    if m.status is ProcessorStatus.FAILED:
        from .errors import FaceSearchError as _Error

        raise _Error(m.last_error or "the stream processor failed")


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C, so every command shuts down cleanly."""


_TERMINATED: list[bool] = []


def _on_sigterm(signum: int, frame: object) -> None:
    _TERMINATED.append(True)
    raise Terminated()


def main() -> None:
    """Entry point: run the app, mapping facesearch errors to one line and exit status 1.

    Usage errors (typer's, shown with the command's help hint) exit with status 2. SIGTERM
    (systemd, container runtimes) is handled like SIGINT: the command stops, shuts its
    services down (final audit checkpoint, index files written) and exits with 143.
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Setup warnings (secrets kept in the data directory) are for the server's log, not for
    # every one-shot command's stderr (whose errors are one line).
    logging.getLogger("facesearch.setup").addHandler(logging.NullHandler())
    try:
        _run()
    finally:
        if _TERMINATED:  # whatever the command made of the interruption
            err.print("terminated")
            sys.exit(128 + signal.SIGTERM)  # after the shutdown; the status says why


def _run() -> None:
    try:
        code = app(standalone_mode=False)
    except FaceSearchError as exc:
        err.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: bad or missing arguments and options
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {exc}")
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
