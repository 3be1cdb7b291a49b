"""The face pipeline: detect -> align -> quality -> embed, behind one object.

A :class:`Pipeline` joins one detector and one embedder. Its ``model_version``
(``"<detector>/<embedder>"``) names the vector space its embeddings live in: collections record
it, and vectors from different versions are never mixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .align import align_faces
from .errors import InvalidParameterError
from .quality import measure
from .runtime import Device
from .types import Detector, Embedder, Faces, Image

PipelineName = Literal["dlib"]
PIPELINES: tuple[str, ...] = ("dlib",)


@dataclass
class Pipeline:
    detector: Detector
    embedder: Embedder

    @property
    def model_version(self) -> str:
        return f"{self.detector.name}/{self.embedder.name}"

    def chips(self, image: Image, faces: Faces) -> np.ndarray:
        """Aligned chips ((N, S, S, 3) uint8) for the embedder."""
        return align_faces(image.pixels, faces.landmarks, self.embedder.chip_size,
                           self.embedder.chip_padding)

    def detect(self, image: Image, max_faces: int | None = None) -> Faces:
        """Faces with quality measures, largest first, at most ``max_faces``."""
        faces = self.detector.detect(image.pixels)
        if max_faces is not None:
            faces = faces[:max_faces]
        chips = self.chips(image, faces)
        return faces.with_quality(measure(faces, chips, image.width, image.height))

    def analyze(self, image: Image, max_faces: int | None = None) -> Faces:
        """Faces with quality measures and embeddings, largest first, at most ``max_faces``."""
        faces = self.detector.detect(image.pixels)
        if max_faces is not None:
            faces = faces[:max_faces]
        chips = self.chips(image, faces)
        quality = measure(faces, chips, image.width, image.height)
        return faces.with_quality(quality).with_embeddings(self.embedder.embed(chips))


def load_pipeline(name: str = "dlib", *, threads: int | None = None,
                  device: Device = "auto") -> Pipeline:
    """Build a named pipeline (loads its models: about a second)."""
    if name == "dlib":
        from .detect import DlibHogDetector
        from .embed import DlibResNetEmbedder

        return Pipeline(detector=DlibHogDetector(), embedder=DlibResNetEmbedder())
    raise InvalidParameterError(f"unknown pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
