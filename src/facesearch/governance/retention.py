"""The retention worker: erases expired faces periodically in a long-running server."""

from __future__ import annotations

import logging
import threading

from facesearch.errors import FaceSearchError
from facesearch.governance.erasure import Erasure

log = logging.getLogger("facesearch.governance.retention")


class RetentionWorker:
    """Runs :meth:`Erasure.expire` every ``interval_s`` seconds in its own thread."""

    def __init__(self, erasure: Erasure, interval_s: float = 3600.0) -> None:
        self.erasure = erasure
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="facesearch-retention",
                                            daemon=True)
            self._thread.start()

    def run_once(self) -> int:
        """Expire now; returns how many faces were erased."""
        receipts = self.erasure.expire()
        erased = sum(len(r.face_ids) for r in receipts)
        if erased:
            log.info("retention erased %d face(s) in %d collection(s)", erased, len(receipts))
        return erased

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except FaceSearchError as exc:  # recorded; the next round tries again
                log.error("retention run failed: %s", exc.message)

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
