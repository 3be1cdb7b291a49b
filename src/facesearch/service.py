"""The service: one object that owns a data directory and every service on it.

``FaceSearch.open()`` is the composition root used by the library, the CLI and the HTTP API;
they all call the same service objects. Everything it starts stops with :meth:`shutdown`.
"""

from __future__ import annotations

import time
from pathlib import Path

from .collections import Clock, FaceCollections
from .config import Settings
from .pipeline import Pipeline, load_pipeline
from .store import Store
from .users import UserDirectory


class FaceSearch:
    """Collections, users (and, as they land, audit, policy, video and streams) on one home."""

    def __init__(self, settings: Settings, *, pipeline: Pipeline | None = None,
                 clock: Clock = time.time) -> None:
        self.settings = settings
        self.home: Path = settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.home / "facesearch.db")
        self._pipeline = pipeline
        self.collections = FaceCollections(self.home, self.store, self._load_pipeline,
                                           clock=clock, limits=settings.limits)
        self.users = UserDirectory(self.collections)

    def _load_pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = load_pipeline(self.settings.pipeline, threads=self.settings.threads,
                                           device=self.settings.device)  # type: ignore[arg-type]
        return self._pipeline

    @property
    def pipeline(self) -> Pipeline:
        return self.collections.pipeline

    @classmethod
    def open(cls, home: Path | str | None = None, **overrides: object) -> FaceSearch:
        """Open (creating if needed) a data directory; settings come from the environment."""
        if home is not None:
            overrides["home"] = Path(home)
        return cls(Settings(**overrides))  # type: ignore[arg-type]

    def shutdown(self) -> None:
        self.collections.shutdown()
        self.store.close()

    def __enter__(self) -> FaceSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
