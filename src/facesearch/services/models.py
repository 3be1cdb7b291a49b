"""The face models of one service: its pipeline, the model version it declares, and the
calibration of a model version; every service that needs one of them gets this object.

The pipeline is loaded on first use, once (a lock: two threads asking at once load it once).
The model version is known without loading the models (from the settings, the version
:func:`~facesearch.vision.pipeline.pipeline_from` would give), so that storing vectors made
elsewhere or checking a collection's model does not load them; a pipeline given at
construction (a server's per-thread pipeline, a test's) is the loaded pipeline and names the
version itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from facesearch.governance.bands import BandCalibrations, find_band_calibrations
from facesearch.governance.calibration import Calibration, find_calibration
from facesearch.vision.pipeline import (
    Pipeline,
    PipelineSettings,
    model_version_of,
    pipeline_from,
)


class Models:
    """The pipeline (lazy, loaded once), the declared model version and calibrations (each
    read once) of one service."""

    def __init__(self, settings: PipelineSettings, *, pipeline: Pipeline | None = None,
                 calibrations: Callable[[str], Calibration | None] = find_calibration) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._find_calibration = calibrations
        self._calibrations: dict[str, Calibration | None] = {}
        self._lock = threading.Lock()
        """Held while the pipeline loads."""
        self._calibration_lock = threading.Lock()

    @property
    def pipeline(self) -> Pipeline:
        """The face pipeline (loaded on first use)."""
        loaded = self._pipeline
        if loaded is not None:
            return loaded
        with self._lock:
            if self._pipeline is None:
                self._pipeline = pipeline_from(self._settings)
            return self._pipeline

    @property
    def loaded(self) -> bool:
        """Whether the pipeline is loaded (or was given)."""
        return self._pipeline is not None

    @property
    def version(self) -> str:
        """The running model's version: the loaded pipeline's, else the one the settings
        declare (equal to what loading them would give; nothing is loaded)."""
        loaded = self._pipeline
        return loaded.model_version if loaded is not None else model_version_of(self._settings)

    def loaded_version(self) -> str | None:
        """The model version audit events record: None until the pipeline is loaded (events
        of operations that use no model do not load it)."""
        loaded = self._pipeline
        return None if loaded is None else loaded.model_version

    def calibration(self, model_version: str | None = None) -> Calibration | None:
        """The shipped calibration of ``model_version`` (default: the running model's),
        read once, or None."""
        version = self.version if model_version is None else model_version
        with self._calibration_lock:
            if version not in self._calibrations:
                self._calibrations[version] = self._find_calibration(version)
            return self._calibrations[version]

    def bands(self, model_version: str) -> BandCalibrations | None:
        """The shipped per-quality-band calibrations of ``model_version`` (read once), or
        None."""
        return find_band_calibrations(model_version)
