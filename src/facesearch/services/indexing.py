"""Bulk indexing of files, folders and S3 prefixes, on every core or a Ray cluster, resumable.

Files are read and hashed in the calling process; content already in the collection is skipped
(so an interrupted run resumes where it stopped). Decoding, detection and embedding run in
worker processes (:class:`LocalPool`) or Ray tasks (:class:`facesearch.services.cluster.RayPool`),
which read S3 objects themselves and skip content already indexed; the calling process alone
writes to the store, one image per transaction.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from facesearch.config import Settings
from facesearch.errors import FaceSearchError, InvalidParameterError
from facesearch.services.cluster import (
    Analysis,
    Answer,
    PipelineSpec,
    S3Object,
    Source,
    analyze_sources,
    pipeline_for,
)
from facesearch.services.collection import FaceCollections, IndexResult
from facesearch.services.enrolment import AnalyzedImage, IndexRules
from facesearch.storage.records import CollectionRow
from facesearch.types import Caller, QualityFilter
from facesearch.vision.decode import read_bytes
from facesearch.vision.runtime import exit_with_parent

if TYPE_CHECKING:
    from facesearch.services.cluster import RayCluster

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


class IdFrom(str, enum.Enum):
    """Where a file's external id comes from."""

    NAME = "name"
    PARENT = "parent"
    NONE = "none"


class Outcome(str, enum.Enum):
    INDEXED = "indexed"
    SKIPPED = "skipped"
    NO_FACE = "no_face"
    FAILED = "failed"


@dataclass(frozen=True)
class FileResult:
    path: Source
    outcome: Outcome
    faces_indexed: int = 0
    faces_detected: int = 0
    reason: str = ""
    result: IndexResult | None = None


@dataclass
class Summary:
    indexed: int = 0
    skipped: int = 0
    no_face: int = 0
    failed: int = 0
    faces: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, r: FileResult) -> None:
        if r.outcome is Outcome.INDEXED:
            self.indexed += 1
            self.faces += r.faces_indexed
        elif r.outcome is Outcome.SKIPPED:
            self.skipped += 1
        elif r.outcome is Outcome.NO_FACE:
            self.no_face += 1
            self.failures.append((str(r.path), r.reason))
        else:
            self.failed += 1
            self.failures.append((str(r.path), r.reason))

    @property
    def files(self) -> int:
        return self.indexed + self.skipped + self.no_face + self.failed


def iter_image_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named directly (any suffix) and image files under folders (recursive, sorted)."""
    for p in paths:
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    f = Path(root) / name
                    if f.suffix.lower() in IMAGE_SUFFIXES:
                        yield f
        else:
            yield p


def external_id_for(path: Source, id_from: IdFrom) -> str | None:
    if id_from is IdFrom.NAME:
        return path.stem[:255] or None
    if id_from is IdFrom.PARENT:
        name = path.parent if isinstance(path, S3Object) else path.parent.name
        return name[:255] or None
    return None


# -- worker processes ---------------------------------------------------------------------

_worker_spec: PipelineSpec | None = None


def _init_worker(spec: PipelineSpec) -> None:
    global _worker_spec
    exit_with_parent()
    _worker_spec = spec
    pipeline_for(spec)


def _analyze(chunk: list[bytes | S3Object], known: frozenset[str]) -> list[Answer]:
    """Worker task: :func:`facesearch.services.cluster.analyze_sources` with its pipeline."""
    assert _worker_spec is not None
    return analyze_sources(pipeline_for(_worker_spec), _worker_spec.limits, chunk, known)


class AnalysisPool(Protocol):
    """Where chunks of images are analysed: worker processes here, or Ray tasks."""

    slots: int
    """Chunks analysed at once."""

    def submit(self, chunk: list[bytes | S3Object]) -> Future[list[Answer]]: ...

    def close(self) -> None: ...


class LocalPool:
    """``workers`` processes of this machine, each with its pipeline (one thread each)."""

    def __init__(self, settings: Settings, workers: int, known: frozenset[str]) -> None:
        self.slots = workers
        self.known = known
        self._pool = ProcessPoolExecutor(workers, initializer=_init_worker,
                                         initargs=(PipelineSpec.of(settings),))

    def submit(self, chunk: list[bytes | S3Object]) -> Future[list[Answer]]:
        known = self.known if any(isinstance(c, S3Object) for c in chunk) else frozenset()
        return self._pool.submit(_analyze, chunk, known)

    def close(self) -> None:
        self._pool.shutdown()


class BulkIndexer:
    """Index many files into one collection with ``workers`` processes (default: all cores).

    Files go to the workers in chunks of ``chunk`` images (each worker embeds a chunk's faces
    in one batch). Each image is committed in its own transaction as its chunk comes back, so
    an interrupted run loses only work in flight; the chunk's audit events are then written
    together. The vector index is brought up to date once, at the end. With a ``cluster``,
    chunks are Ray tasks on it instead of local processes (``workers`` is then unused).
    """

    def __init__(self, collections: FaceCollections, collection: str, *,
                 settings: Settings, workers: int | None = None,
                 quality_filter: QualityFilter = QualityFilter.AUTO,
                 max_faces: int | None = None, id_from: IdFrom = IdFrom.NAME,
                 external_id: str | None = None, force: bool = False, chunk: int = 8,
                 caller: Caller | None = None, cluster: RayCluster | None = None,
                 all_faces: bool = False) -> None:
        self.collections = collections
        self.collection = collection
        self.settings = settings
        self.workers = workers or max(1, len(os.sched_getaffinity(0)))
        if self.workers < 1 or chunk < 1:
            raise InvalidParameterError("workers and chunk must be at least 1")
        self.quality_filter = quality_filter
        self.max_faces = max_faces
        self.id_from = id_from
        self.external_id = external_id
        self.force = force
        self.chunk = chunk
        self.caller = caller or Caller.local()
        self.cluster = cluster
        self.all_faces = all_faces
        """Keep every passing face of a labelled photo (default: the largest only, see
        :meth:`FaceCollections.index_image`)."""
        self._row: CollectionRow | None = None

    def _pool(self, known: set[str]) -> AnalysisPool:
        if self.cluster is not None:
            return self.cluster.pool(self.settings, known)
        return LocalPool(self.settings, self.workers, frozenset(known))

    def run(self, files: Iterable[Source],
            on_result: Callable[[FileResult], None] | None = None) -> Summary:
        """Index ``files`` (local paths, S3 objects); ``on_result`` is called once per file as
        it finishes."""
        summary = Summary()
        known = set() if self.force else self.collections.known_hashes(self.collection)
        with self.collections.store.transaction() as conn:
            self._row = self.collections.store.collections.get(conn, self.collection)
        limits = self.collections.limits

        def emit(r: FileResult) -> None:
            summary.add(r)
            if on_result is not None:
                on_result(r)

        pending: dict[Future[list[Answer]], list[tuple[Source, str | None]]] = {}
        batch: list[tuple[Source, str | None, bytes | S3Object]] = []
        pool = self._pool(known)
        try:

            def submit() -> None:
                fut = pool.submit([data for _, _, data in batch])
                pending[fut] = [(path, sha) for path, sha, _ in batch]
                batch.clear()

            for path in files:
                if isinstance(path, S3Object):  # read, hashed and skipped by the worker
                    batch.append((path, None, path))
                else:
                    try:
                        data = read_bytes(path, limits)
                    except FaceSearchError as exc:
                        emit(FileResult(path, Outcome.FAILED, reason=exc.message))
                        continue
                    sha = hashlib.sha256(data).hexdigest()
                    if sha in known:
                        emit(FileResult(path, Outcome.SKIPPED, reason="already indexed"))
                        continue
                    known.add(sha)
                    batch.append((path, sha, data))
                if len(batch) >= self.chunk:
                    submit()
                while len(pending) >= 2 * pool.slots:
                    self._drain(pending, emit)
            if batch:
                submit()
            while pending:
                self._drain(pending, emit)
        finally:
            pool.close()
        self.collections.flush(self.collection)
        return summary

    def _drain(self, pending: dict[Future[list[Answer]], list[tuple[Source, str | None]]],
               emit: Callable[[FileResult], None]) -> None:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for fut in done:
            for (path, _), (sha, out) in zip(pending.pop(fut), fut.result(), strict=True):
                if sha is None:
                    emit(FileResult(path, Outcome.FAILED, reason=str(out)))
                elif out is None:
                    emit(FileResult(path, Outcome.SKIPPED, reason="already indexed"))
                else:
                    emit(self._store(path, sha, out))
            # The chunk's audit events, staged with each image's faces, join the chain.
            self.collections.trail.drain()

    def _store(self, path: Source, sha: str, out: Analysis) -> FileResult:
        if isinstance(out, str):
            return FileResult(path, Outcome.FAILED, reason=out)
        width, height, faces, crops = out
        ext = self.external_id or external_id_for(path, self.id_from)
        if self._row is None:
            raise RuntimeError("a bulk indexer stores files within run()")
        try:
            res = self.collections.store_batch(
                self._row,
                AnalyzedImage(sha256=sha, width=width, height=height, faces=faces, crops=crops,
                              source_name=str(path if isinstance(path, S3Object)
                                              else path.absolute())),
                IndexRules(external_id=ext, max_faces=self.max_faces,
                           quality_filter=self.quality_filter, force=self.force,
                           all_faces=self.all_faces),
                caller=self.caller)
        except FaceSearchError as exc:
            return FileResult(path, Outcome.FAILED, reason=exc.message)
        if res.duplicate:
            return FileResult(path, Outcome.SKIPPED, reason="already indexed", result=res)
        if not len(faces):
            return FileResult(path, Outcome.NO_FACE, reason="no face found", result=res)
        if not res.indexed:
            why = sorted({r for u in res.unindexed for r in u.reasons})
            return FileResult(path, Outcome.NO_FACE, 0, len(faces),
                              reason="no face passed the quality filter: " + ", ".join(why),
                              result=res)
        return FileResult(path, Outcome.INDEXED, len(res.indexed), len(faces), result=res)
