"""The service: one object that owns a data directory and every service on it.

``FaceSearch.open()`` is the composition root used by the library, the CLI and the HTTP API;
they all call the same service objects. Everything it starts stops with :meth:`shutdown`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .audit import AuditEvent, AuditLog
from .collections import Clock, FaceCollections
from .config import Settings
from .keys import AccessKeys, load_master_key
from .pipeline import Pipeline
from .policy import SearchLimiter, Spike
from .store import Store
from .users import UserDirectory

if TYPE_CHECKING:
    from .calibration import Calibration
    from .stream import StreamProcessors
    from .video import VideoJobs


log = logging.getLogger("facesearch")


class FaceSearch:
    """Collections, users (and, as they land, audit, policy, video and streams) on one home."""

    def __init__(self, settings: Settings, *, pipeline: Pipeline | None = None,
                 clock: Clock = time.time) -> None:
        self.settings = settings
        self.home: Path = settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        sealer = settings.sealer()
        self.store = Store(self.home / "facesearch.db", sealer)
        self.audit = AuditLog(self.home / "audit.db", self.home / "keys" / "audit-ed25519.pem",
                              clock=clock)
        self._pipeline = pipeline
        self._clock = clock
        self._video: VideoJobs | None = None
        self._streams: StreamProcessors | None = None
        limiter = SearchLimiter(per_minute=settings.searches_per_minute,
                                on_spike=self._volume_spike)
        self._calibration: tuple[Calibration | None] | None = None
        self.collections = FaceCollections(
            self.home, self.store, self._load_pipeline, clock=clock, limits=settings.limits,
            audit=self.audit, sealer=sealer, limiter=limiter, calibration=self.calibration)
        self.users = UserDirectory(self.collections)
        self.collections.erase_hooks += [self._purge_snapshots, self._purge_video_matches]
        master = settings.keys_master_key
        self.keys = AccessKeys(self.store, lambda: load_master_key(
            self.home, master.get_secret_value() if master else None), clock=clock,
            audit=self.audit)

    def _volume_spike(self, spike: Spike) -> None:
        """A caller's search volume spiked far above its baseline: log it and audit it."""
        log.warning("search volume spike: %s made %d searches in %.0f s (baseline %.1f)",
                    spike.actor, spike.count, spike.window_seconds, spike.baseline)
        self.audit.record(AuditEvent(
            operation="alert.volume_spike", actor="system:monitor", role="system",
            details={"subject": spike.actor, "count": spike.count,
                     "baseline": round(spike.baseline, 2), "window_s": spike.window_seconds}))

    def _purge_snapshots(self, collection: str, face_ids: list[str]) -> int:
        from .stream import purge_snapshots

        return purge_snapshots(self.home, face_ids)

    def _purge_video_matches(self, collection: str, face_ids: list[str]) -> int:
        from .video import purge_face_matches

        return purge_face_matches(self.store, face_ids)

    def calibration(self) -> Calibration | None:
        """The shipped calibration of the pipeline's embedder (read once), or None."""
        if self._calibration is None:
            from .calibration import find_calibration

            self._calibration = (find_calibration(self.pipeline.model_version),)
        return self._calibration[0]

    def _load_pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = self.settings.load_pipeline()
        return self._pipeline

    @property
    def pipeline(self) -> Pipeline:
        return self.collections.pipeline

    @property
    def video(self) -> VideoJobs:
        """Stored-video face search and detection jobs (made on first use; call
        ``video.start()`` in a long-running server to run jobs a restart interrupted)."""
        if self._video is None:
            from .video import VideoJobs

            self._video = VideoJobs(self.home, self.store, self.collections,
                                    workers=self.settings.video_workers,
                                    max_video_bytes=self.settings.max_video_bytes,
                                    clock=self._clock)
        return self._video

    @property
    def streams(self) -> StreamProcessors:
        """Live stream processors (made on first use; call ``streams.resume()`` in a
        long-running server to restart the processors that were running)."""
        if self._streams is None:
            from .stream import StreamProcessors

            self._streams = StreamProcessors(self.home, self.store, self.collections,
                                             clock=self._clock)
        return self._streams

    @classmethod
    def open(cls, home: Path | str | None = None, **overrides: object) -> FaceSearch:
        """Open (creating if needed) a data directory; settings come from the environment."""
        if home is not None:
            overrides["home"] = Path(home)
        return cls(Settings(**overrides))  # type: ignore[arg-type]

    def shutdown(self) -> None:
        if self._streams is not None:
            self._streams.shutdown()
        if self._video is not None:
            self._video.shutdown()
        self.collections.shutdown()
        self.store.close()
        self.audit.shutdown()

    def __enter__(self) -> FaceSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
