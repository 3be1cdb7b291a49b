"""A video job's input: a server path (under the allowed roots, when set) or an upload written
to the data directory, at most ``max_video_bytes``; and what one caller's waiting jobs may hold
(:meth:`JobInputs.check_parked`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from facesearch.errors import (
    InvalidParameterError,
    InvalidVideoError,
    ThrottledError,
    VideoTooLargeError,
)
from facesearch.media.job_table import JobTable
from facesearch.media.video_job import MAX_VIDEO_BYTES, VideoInput


class JobInputs:
    """Where the inputs of the jobs of ``table`` come from. Server paths must lie under one of
    ``path_roots`` when it is given (the HTTP API gives it; the CLI does not); uploads go to
    ``uploads`` (0600 files, deleted when their job ends). ``per_key``: (jobs, bytes of
    uploads) one caller's waiting jobs may hold."""

    def __init__(self, table: JobTable, uploads: Path, *,
                 max_video_bytes: int = MAX_VIDEO_BYTES,
                 per_key: tuple[int, int] = (10, 1024**3),
                 path_roots: Sequence[Path] | None = None) -> None:
        self.table = table
        self.uploads = uploads
        self.max_video_bytes = max_video_bytes
        self.per_key = per_key
        self.path_roots = None if path_roots is None else [Path(p).resolve() for p in path_roots]

    def check_parked(self, actor: str, adding: int) -> None:
        """:class:`ThrottledError` when ``actor``'s waiting jobs are :attr:`per_key`'s
        number already, or would hold more upload bytes than it allows with ``adding``
        (access keys only: the operator's own CLI and library use are not limited)."""
        if actor.startswith("local:"):
            return
        rows = self.table.parked(actor)
        jobs, max_bytes = self.per_key
        if len(rows) >= jobs:
            raise ThrottledError(f"{len(rows)} of your video jobs are waiting (the limit per "
                                 "caller); try again when one has started", retry_after=30)
        held = sum(path.stat().st_size for path, owned in rows if owned and path.is_file())
        if held + adding > max_bytes:
            raise ThrottledError(f"your waiting video jobs hold {held} bytes of uploads; with "
                                 f"this one over the {max_bytes}-byte limit per caller; try "
                                 "again when one has started", retry_after=30)

    def materialise(self, job_id: str, video: VideoInput,
                    source_name: str | None) -> tuple[Path, bool, str]:
        """``(path to read, whether the service owns that file, label)`` for an input."""
        if isinstance(video, (str, os.PathLike)):
            return self._server_path(Path(video), source_name)
        self.uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        suffix = Path(source_name).suffix[:10] if source_name else ""
        dest = self.uploads / f"{job_id}{suffix}"
        written = 0
        try:
            with os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                           "wb") as f:
                if isinstance(video, (bytes, bytearray, memoryview)):
                    written = len(video)
                    if written > self.max_video_bytes:
                        raise VideoTooLargeError(self._too_large(written))
                    f.write(video)
                else:
                    while chunk := video.read(1 << 20):
                        written += len(chunk)
                        if written > self.max_video_bytes:
                            raise VideoTooLargeError(self._too_large(written))
                        f.write(chunk)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        if not written:
            dest.unlink(missing_ok=True)
            raise InvalidVideoError("the video is empty")
        return dest, True, source_name or "upload"

    def _server_path(self, p: Path, source_name: str | None) -> tuple[Path, bool, str]:
        if self.path_roots is not None:
            real = p.resolve()
            if not any(real.is_relative_to(root) for root in self.path_roots):
                raise InvalidParameterError(f"{p}: not under an allowed video directory")
        if not p.is_file():
            raise InvalidVideoError(f"{p}: no such file")
        size = p.stat().st_size
        if size > self.max_video_bytes:
            raise VideoTooLargeError(f"{p}: {size / 1e9:.1f} GB is over the "
                                     f"{self.max_video_bytes / 1e9:.1f} GB video limit")
        return p.resolve(), False, source_name or str(p)

    def _too_large(self, n: int) -> str:
        return (f"video: more than {self.max_video_bytes / 1e9:.1f} GB (the video limit); "
                f"read {n / 1e9:.1f} GB")

    def finish(self, job_id: str) -> None:
        """Delete an uploaded input once its job has ended."""
        path = self.table.ended_input(job_id)
        if path is not None:
            path.unlink(missing_ok=True)
