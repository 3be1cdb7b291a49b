"""Command-line interface: thin commands over the service objects.

Tables for people, ``--json`` for scripts. Every facesearch error exits with status 1 and a
one-line reason on stderr (mapped once, in :func:`main`); usage errors exit with 2.
"""

from __future__ import annotations

import json
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

from . import similarity as sim
from .errors import AlreadyExistsError, FaceSearchError
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
                          "--exist-ok", help="Succeed if it already exists.")] = False) -> None:
    """Create an empty collection."""
    with service(home) as fs:
        try:
            c = fs.collections.create(name)
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
        indexer = BulkIndexer(fs.collections, collection, pipeline_name=fs.settings.pipeline,
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
    if as_json:
        emit_json({
            "search_id": res.search_id, "label": res.label,
            "width": res.width, "height": res.height, "threshold": res.threshold,
            "model_version": res.model_version, "collection_size": res.collection_size,
            "faces": [{**faces_json(res.faces, p.face_index),
                       "matches": [_match_json(m) for m in p.matches]} for p in res.results],
        })
        return
    for p in res.results:
        box = ", ".join(f"{v:.0f}" for v in res.faces.boxes[p.face_index])
        t = Table("rank", "similarity", "external id", "face id",
                  title=f"probe face {p.face_index + 1} [{box}] - candidates for human review "
                        f"(threshold {res.threshold:g}, {res.collection_size} faces searched)")
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
    if as_json:
        emit_json({"similarity": _r(c.similarity, 3), "match": c.match, "threshold": c.threshold,
                   "target_faces": [{**faces_json(c.target, i), "similarity": _r(s, 3)}
                                    for i, s in enumerate(c.similarities)]})
        return
    verdict = "[green]match[/]" if c.match else "[red]no match[/]"
    out.print(f"similarity {c.similarity:.2f} (threshold {c.threshold:g}): {verdict}")


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
    if as_json:
        emit_json({"threshold": res.threshold,
                   "matches": [{"user_id": m.user_id, "similarity": _r(m.similarity, 3),
                                "face_id": m.face_id} for m in res.matches]})
        return
    t = Table("rank", "similarity", "user id", title="candidates for human review")
    for rank, m in enumerate(res.matches, 1):
        t.add_row(str(rank), f"{m.similarity:.2f}", m.user_id)
    out.print(t)


def main() -> None:
    """Entry point: run the app, mapping facesearch errors to one line and exit status 1.

    Usage errors (typer's, shown with the command's help hint) exit with status 2.
    """
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
