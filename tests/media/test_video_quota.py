"""One key cannot fill the video queue (issue 26, low: one key's 100 waiting jobs of 256 MB
each made every other key get 429): per-key limits on waiting jobs and on the bytes of
uploads they hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from facesearch.config import Settings
from facesearch.errors import ThrottledError
from facesearch.service import FaceSearch
from facesearch.types import Caller
from facesearch.vision.pipeline import Pipeline

from .video_helpers import clip


def held(home: Path, pipeline: Pipeline, **limits: int) -> FaceSearch:
    """A service whose video jobs all stay waiting: no worker is started (as behind a queue
    that is busy for as long as the test runs)."""
    fs = FaceSearch(Settings(home=home, **limits), pipeline=pipeline)
    fs.video._ensure_workers = lambda: None  # type: ignore[method-assign]
    return fs


def key(n: int) -> Caller:
    return Caller(actor=f"FSAKQUOTA{n:011d}", role="searcher")


def uploads(home: Path) -> int:
    folder = home / "video" / "uploads"
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def test_waiting_jobs_per_key(home: Path, pipeline: Pipeline) -> None:
    data = clip().read_bytes()
    fs = held(home, pipeline, video_waiting_per_key=3)
    try:
        for _ in range(3):
            fs.video.start_face_detection(data, source_name="a.mp4", caller=key(1))
        with pytest.raises(ThrottledError, match="limit per caller"):
            fs.video.start_face_detection(data, source_name="a.mp4", caller=key(1))
        assert uploads(home) == 3  # the refused upload was not kept
        fs.video.start_face_detection(data, source_name="b.mp4", caller=key(2))  # others: fine
        fs.video.start_face_detection(data, source_name="c.mp4")  # the operator: not limited
    finally:
        fs.shutdown()


def test_parked_upload_bytes_per_key(home: Path, pipeline: Pipeline) -> None:
    data = clip().read_bytes()
    fs = held(home, pipeline, video_parked_bytes_per_key=int(len(data) * 2.5))
    try:
        for _ in range(2):
            fs.video.start_face_detection(data, source_name="a.mp4", caller=key(1))
        with pytest.raises(ThrottledError, match="bytes of uploads"):
            fs.video.start_face_detection(data, source_name="a.mp4", caller=key(1))
        assert uploads(home) == 2
        fs.video.start_face_detection(data, source_name="b.mp4", caller=key(2))
    finally:
        fs.shutdown()
