"""The retention worker erases expired faces on its own schedule."""

from __future__ import annotations

import time
from pathlib import Path

from facesearch.config import Settings
from facesearch.governance.policy import CollectionPolicy
from facesearch.governance.retention import RetentionWorker
from facesearch.service import FaceSearch

from ..conftest import face


def test_worker_erases_expired_faces_in_the_background(home: Path, pipeline) -> None:  # noqa: ANN001
    now = [5_000_000.0]
    with FaceSearch(Settings(home=home), pipeline=pipeline, clock=lambda: now[0]) as fs:
        fs.collections.create("r", policy=CollectionPolicy(retention_days=1))
        fs.collections.index_image("r", face("obama.jpg"))
        worker = RetentionWorker(fs.erasure, interval_s=0.05)
        worker.start()
        try:
            time.sleep(0.3)
            assert fs.collections.describe("r").face_count == 1
            now[0] += 2 * 86400
            deadline = time.monotonic() + 10
            while fs.collections.describe("r").face_count and time.monotonic() < deadline:
                time.sleep(0.05)
            assert fs.collections.describe("r").face_count == 0
        finally:
            worker.shutdown()
        expired, _ = fs.audit.query(operation="faces.expire")
        assert expired and expired[0].event.actor == "system:retention"
