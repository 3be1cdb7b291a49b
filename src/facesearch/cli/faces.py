"""``facesearch index``, ``detect``, ``embed`` and ``faces ...``: putting faces in and looking
at them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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

from facesearch.cli.common import HomeOpt, JsonOpt, emit, emit_json, err, out, service
from facesearch.errors import FaceSearchError
from facesearch.limits import MAX_RESULTS
from facesearch.shapes.base import rnd
from facesearch.shapes.faces import (
    DeleteFacesOut,
    DetectedFaceOut,
    DetectOut,
    LocalFaceOut,
    LocalFacesPage,
)
from facesearch.types import QualityFilter

if TYPE_CHECKING:
    from facesearch.services.cluster import Source
    from facesearch.services.indexing import BulkIndexer, Summary

faces_app = typer.Typer(no_args_is_help=True, help="List and delete the faces of a collection.")


class _RateColumn(ProgressColumn):
    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()

    def render(self, task: Task) -> Text:
        faces = task.fields.get("faces", 0)
        dt = max(time.monotonic() - self.started, 1e-6)
        return Text(f"{faces} faces, {faces / dt:.1f} faces/s", style="progress.data.speed")


def index(
    collection: str,
    paths: Annotated[list[str], typer.Argument(
        help="Image files and folders (recursive), and s3://bucket/prefix URLs.")],
    home: HomeOpt = None,
    external_id: Annotated[str | None, typer.Option(help="External id (one file only).")] = None,
    id_from: Annotated[str, typer.Option(help="External id from the file 'name', the 'parent' "
                                              "folder, or 'none'.")] = "name",
    max_faces: Annotated[int | None, typer.Option(min=1, max=MAX_RESULTS,
                                                  help="Index at most N faces per image.")] = None,
    quality_filter: Annotated[QualityFilter, typer.Option(help="Quality bar.")] = QualityFilter.AUTO,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: all "
                                                           "cores).")] = None,
    force: Annotated[bool, typer.Option(help="Index content already in the collection "
                                             "again.")] = False,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Analyse on this Ray cluster (head host:port; default: "
                      "FACESEARCH_RAY_ADDRESS, else this machine's cores).")] = None,
    ray_gpus: Annotated[float | None, typer.Option(
        min=0, help="GPUs per Ray task (default FACESEARCH_RAY_GPUS; 0: CPUs).")] = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(
        help="S3-compatible store of s3:// URLs (default: AWS); credentials from the "
             "environment of this process and of the Ray workers.")] = None,
    all_faces: Annotated[bool, typer.Option(
        "--all-faces", help="With a label (--external-id, --id-from name/parent), index every "
                            "face that passes the quality filter (group photos); by default "
                            "only the largest, the others are reported as "
                            "NOT_LABELLED_FACE.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index the faces of image files, folders and S3 prefixes (resumable: content already
    indexed is skipped). A label names one person: a labelled photo enrols its largest face
    that passes the quality filter, unless --all-faces."""
    from facesearch.services.indexing import (
        IMAGE_SUFFIXES,
        BulkIndexer,
        IdFrom,
        iter_image_files,
    )

    try:
        id_source = IdFrom(id_from)
    except ValueError:
        raise typer.BadParameter("--id-from must be name, parent or none") from None
    from facesearch.services.cluster import RayCluster, list_s3

    try:
        files: list[Source] = list(iter_image_files(Path(p) for p in paths
                                                    if not p.startswith("s3://")))
        for url in (p for p in paths if p.startswith("s3://")):
            files += list_s3(url, IMAGE_SUFFIXES, endpoint_url=s3_endpoint_url)
    except FaceSearchError as exc:
        raise typer.BadParameter(exc.message) from None
    if external_id is not None and len(files) != 1:
        raise typer.BadParameter("--external-id needs exactly one image file")
    with service(home) as fs:
        fs.collections.describe(collection)  # fail fast on an unknown collection
        address = ray or fs.settings.ray_address
        cluster = None if address is None else RayCluster(
            address, gpus=fs.settings.ray_gpus if ray_gpus is None else ray_gpus)
        try:
            summary = _index(files, BulkIndexer(
                fs.collections, collection, settings=fs.settings, workers=workers,
                quality_filter=quality_filter, max_faces=max_faces, id_from=id_source,
                external_id=external_id, force=force, cluster=cluster,
                all_faces=all_faces), as_json)
        finally:
            if cluster is not None:
                cluster.shutdown()
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


def _index(files: list[Source], indexer: BulkIndexer, as_json: bool) -> Summary:
    """Run ``indexer`` over ``files`` with a progress bar (or a JSON line per file)."""
    from facesearch.services.indexing import FileResult, Outcome

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
                           if r.result is not None else [],
                           "unindexed": [{"face_index": u.face_index, "reasons": u.reasons}
                                         for u in r.result.unindexed]
                           if r.result is not None else []})
            elif r.outcome in (Outcome.FAILED, Outcome.NO_FACE):
                progress.console.print(f"[yellow]{r.outcome.value}[/] {r.path}: {r.reason}")

        return indexer.run(files, on_result)


def detect(
    image: Path,
    home: HomeOpt = None,
    annotate: Annotated[Path | None, typer.Option(help="Write a copy with boxes and "
                                                       "landmarks drawn.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Detect faces: boxes, scores, landmarks and quality."""
    with service(home) as fs:
        img, faces = fs.collections.detect_faces(image)
    if annotate is not None:
        from facesearch.vision.draw import annotate_faces

        annotate_faces(img.pixels, faces, annotate)
    if as_json:
        emit(DetectOut(width=img.width, height=img.height, faces=DetectedFaceOut.all(faces)))
        return
    t = Table("#", "box (x1, y1, x2, y2)", "score", "size", "sharpness", "brightness",
              "yaw", "pitch", "roll", "faceness", "recognisability",
              title=f"{image} ({img.width}x{img.height})")
    q = faces.quality
    assert q is not None
    for i in range(len(faces)):
        t.add_row(str(i + 1), ", ".join(f"{v:.0f}" for v in faces.boxes[i]),
                  f"{faces.scores[i]:.2f}", f"{q.size[i]:.0f}", f"{q.sharpness[i]:.0f}",
                  f"{q.brightness[i]:.0f}", f"{q.yaw[i]:.0f}", f"{q.pitch[i]:.0f}",
                  f"{q.roll[i]:.0f}", f"{q.faceness[i]:.2f}", f"{q.recognisability[i]:.0f}")
    out.print(t)
    if not len(faces):
        out.print("no face found")


def embed(
    paths: Annotated[list[Path], typer.Argument(help="Image files.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the embedding of every face of each image (JSON lines with --json)."""
    from facesearch.vision.decode import load_image

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
                           "faces": [{"box": [rnd(v, 1) for v in faces.boxes[i]],
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


@faces_app.command("list")
def faces_list(
    collection: str,
    home: HomeOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_RESULTS)] = 100,
    next_token: Annotated[int, typer.Option(help="Cursor from the previous page.")] = 0,
    user: Annotated[str | None, typer.Option(help="Only faces of this user.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List faces of a collection, a page at a time."""
    with service(home) as fs:
        faces, nxt = fs.collections.list_faces(collection, limit=limit, after=next_token,
                                               user_id=user)
    if as_json:
        emit(LocalFacesPage(faces=[LocalFaceOut.model_validate(f) for f in faces],
                            next_token=None if nxt is None else str(nxt)))
        return
    t = Table("face id", "external id", "user", "box", "recognisability", "source")
    for f in faces:
        r = f.quality.get("recognisability")
        t.add_row(f.face_id, f.external_id or "", f.user_id or "",
                  ", ".join(f"{v:.0f}" for v in f.box), "" if r is None else f"{r:.0f}",
                  f.image.source or "")
    out.print(t)
    if nxt is not None:
        out.print(f"more: --next-token {nxt}")


@faces_app.command("delete")
def faces_delete(collection: str, face_ids: list[str], home: HomeOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Delete faces by id (faces of a user are left alone: disassociate them first, or use
    'facesearch erase')."""
    with service(home) as fs:
        d = fs.erasure.delete_faces(collection, face_ids)
    if as_json:
        emit(DeleteFacesOut.model_validate(d))
    else:
        out.print(f"deleted {len(d.deleted)} face(s)")
        for m in d.not_found:
            err.print(f"[yellow]not found[/] {m}")
        for m in d.associated:
            err.print(f"[yellow]belongs to a user (disassociate it first)[/] {m}")
    if not d.deleted and (d.not_found or d.associated):
        raise typer.Exit(1)
