"""Core data types shared by every layer.

Coordinates are pixels of the decoded (EXIF-upright) image, origin top-left, x to the right, y
down. Boxes are ``(x1, y1, x2, y2)`` and may extend past the image border for faces cut by it.
Landmarks are five points per face in :data:`LANDMARK_NAMES` order; "left" and "right" are as
seen in the image (``eye_left`` has the smaller x in an upright frontal face).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Selection = int | slice | list[int] | npt.NDArray[np.bool_] | IntArray
"""Which rows of a columnar record to take: one (int), a slice, a list of rows, or a mask."""
RGBImage = npt.NDArray[np.uint8]
"""An ``(H, W, 3)`` C-contiguous uint8 RGB array."""

LANDMARK_NAMES: tuple[str, ...] = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
EMBEDDING_DIM = 128


class QualityFilter(str, enum.Enum):
    """Which detected faces are good enough to index (as Rekognition's ``QualityFilter``)."""

    NONE = "NONE"
    AUTO = "AUTO"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


@dataclass(frozen=True, eq=False)
class Image:
    """A decoded image: upright 8-bit RGB pixels plus where they came from."""

    pixels: RGBImage
    sha256: str
    """Hex SHA-256 of the encoded bytes (identifies the same content across files)."""
    format: str
    """Container format as Pillow names it (``JPEG``, ``PNG``, ...), or ``RAW`` for arrays."""

    def __post_init__(self) -> None:
        p = self.pixels
        if p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] != 3:
            raise ValueError(f"pixels must be (H, W, 3) uint8, got {p.shape} {p.dtype}")

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def _column(name: str, value: np.ndarray, dtype: type, shape_tail: tuple[int, ...], n: int) -> None:
    if value.dtype != dtype:
        raise ValueError(f"Faces.{name} must be {np.dtype(dtype).name}, got {value.dtype}")
    if value.shape != (n, *shape_tail):
        raise ValueError(f"Faces.{name} must have shape {(n, *shape_tail)}, got {value.shape}")


QUALITY_FIELDS: tuple[str, ...] = ("size", "sharpness", "brightness", "yaw", "pitch", "roll",
                                   "faceness", "recognisability")
"""The per-face quality measures, as :class:`Quality` columns and quality dicts name them."""
_LATE_FIELDS = ("faceness", "recognisability")
"""Measures that may be unknown (NaN): the detector gives no O-Net probability (dlib's
pipeline), or the face is not embedded yet."""


@dataclass(frozen=True, eq=False)
class Quality:
    """Per-face quality measures, one array entry per face.

    - ``size``: inter-ocular distance in pixels (distance between the eye landmarks).
    - ``sharpness``: 0-100, from the variance of the Laplacian of the aligned face chip.
    - ``brightness``: 0-100, mean luma of the aligned face chip.
    - ``yaw``, ``pitch``, ``roll``: head pose in degrees estimated from the landmarks
      (yaw > 0: the face turns to the image's right; pitch > 0: chin up; roll > 0: clockwise).
    - ``faceness``: 0-1, MTCNN O-Net's probability that the detector's box holds a face (a
      second opinion on the detection; NaN where the detector has no O-Net).
    - ``recognisability``: 0-100, how much identity the embedder found in the face: the norm
      of its raw descriptor between the medians of unrecognisable (0) and real (100) lfw-dev
      faces (:mod:`facesearch.vision.recognisability`; higher: more recognisable; NaN until
      the face is embedded, or for an embedder without anchors, such as dlib's ResNet).
    """

    size: FloatArray
    sharpness: FloatArray
    brightness: FloatArray
    yaw: FloatArray
    pitch: FloatArray
    roll: FloatArray
    faceness: FloatArray | None = None
    recognisability: FloatArray | None = None

    def __post_init__(self) -> None:
        n = len(self.size)
        for name in _LATE_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(n, np.nan, np.float32))
        for name in QUALITY_FIELDS:
            _column(name, getattr(self, name), np.float32, (), n)

    def __len__(self) -> int:
        return len(self.size)

    def __getitem__(self, index: Selection) -> Quality:
        idx = [index] if isinstance(index, (int, np.integer)) else index
        return Quality(**{n: getattr(self, n)[idx] for n in QUALITY_FIELDS})

    def with_recognisability(self, values: FloatArray) -> Quality:
        return replace(self, recognisability=np.asarray(values, np.float32))

    def dict(self, i: int) -> dict[str, float]:
        """Face ``i``'s measures by name (unknown ones, NaN, left out)."""
        out = {n: float(getattr(self, n)[i]) for n in QUALITY_FIELDS}
        return {k: v for k, v in out.items() if np.isfinite(v)}

    @classmethod
    def concatenate(cls, parts: list[Quality]) -> Quality:
        return cls(**{n: np.concatenate([getattr(p, n) for p in parts]).astype(np.float32)
                      for n in QUALITY_FIELDS})


@dataclass(frozen=True)
class FaceView:
    """One face as plain numbers, whatever it came from (a detection, a stored face, a face in
    a video): what every interface shows of a face (:mod:`facesearch.shapes`).

    ``box`` (x1, y1, x2, y2) and five ``landmarks`` in pixels; ``score`` the detector's
    confidence (0-1); ``quality`` (when measured): ``size`` (inter-ocular px), ``sharpness``
    and ``brightness`` (0-100), ``yaw``, ``pitch``, ``roll`` (degrees), and when known
    ``faceness`` (0-1) and ``recognisability`` (0-100).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]
    quality: dict[str, float] | None = None


@dataclass(frozen=True, eq=False)
class Faces:
    """Columnar, validated set of faces found in one image.

    ``boxes`` (N, 4) float32 pixels, ``scores`` (N,) float32 detector confidence in [0, 1],
    ``landmarks`` (N, 5, 2) float32 pixels. ``quality`` and ``embeddings`` ((N, D) float32,
    L2-normalised) are filled by later stages and are ``None`` until then.
    """

    boxes: FloatArray
    scores: FloatArray
    landmarks: FloatArray
    quality: Quality | None = None
    embeddings: FloatArray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    """Optional further per-face columns (first dimension N), kept through indexing."""

    def __post_init__(self) -> None:
        n = len(self.boxes)
        _column("boxes", self.boxes, np.float32, (4,), n)
        _column("scores", self.scores, np.float32, (), n)
        _column("landmarks", self.landmarks, np.float32, (5, 2), n)
        if self.quality is not None and len(self.quality) != n:
            raise ValueError(f"Faces.quality has {len(self.quality)} rows for {n} faces")
        if self.embeddings is not None:
            e = self.embeddings
            if e.dtype != np.float32 or e.ndim != 2 or e.shape[0] != n:
                raise ValueError(f"Faces.embeddings must be (N, D) float32, got {e.shape} {e.dtype}")
        for key, col in self.extra.items():
            if len(col) != n:
                raise ValueError(f"Faces.extra[{key!r}] has {len(col)} rows for {n} faces")

    @classmethod
    def empty(cls) -> Faces:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
        )

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Selection) -> Faces:
        idx = [index] if isinstance(index, (int, np.integer)) else index
        return Faces(
            boxes=self.boxes[idx],
            scores=self.scores[idx],
            landmarks=self.landmarks[idx],
            quality=None if self.quality is None else self.quality[idx],
            embeddings=None if self.embeddings is None else self.embeddings[idx],
            extra={k: v[idx] for k, v in self.extra.items()},
        )

    @property
    def areas(self) -> FloatArray:
        w = np.clip(self.boxes[:, 2] - self.boxes[:, 0], 0, None)
        h = np.clip(self.boxes[:, 3] - self.boxes[:, 1], 0, None)
        return (w * h).astype(np.float32)

    def view(self, i: int) -> FaceView:
        """Face ``i`` as plain numbers."""
        q = self.quality
        return FaceView(
            tuple(float(v) for v in self.boxes[i]),  # type: ignore[arg-type]
            float(self.scores[i]),
            tuple((float(x), float(y)) for x, y in self.landmarks[i]),
            None if q is None else q.dict(i))

    def largest_first(self) -> Faces:
        """The same faces ordered by box area, largest first (stable for equal areas)."""
        return self[np.argsort(-self.areas, kind="stable")]

    def with_quality(self, quality: Quality) -> Faces:
        return replace(self, quality=quality)

    def with_embeddings(self, embeddings: FloatArray) -> Faces:
        return replace(self, embeddings=embeddings)

    @classmethod
    def concatenate(cls, parts: list[Faces]) -> Faces:
        if not parts:
            return cls.empty()
        quality = None
        if all(p.quality is not None for p in parts):
            quality = Quality.concatenate([p.quality for p in parts if p.quality is not None])
        embeddings = None
        if all(p.embeddings is not None for p in parts):
            embeddings = np.concatenate([p.embeddings for p in parts if p.embeddings is not None])
        keys = set.intersection(*(set(p.extra) for p in parts))
        return cls(
            boxes=np.concatenate([p.boxes for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            landmarks=np.concatenate([p.landmarks for p in parts]),
            quality=quality,
            embeddings=embeddings,
            extra={k: np.concatenate([p.extra[k] for p in parts]) for k in keys},
        )


@runtime_checkable
class Detector(Protocol):
    """Finds faces: boxes, scores and the five landmarks, largest face first.

    ``need``: only the ``need`` largest faces matter to the caller (a probe's largest face);
    a detector may then skip work that can only find smaller faces (it may still return
    more). None: every face.
    """

    name: str

    def detect(self, image: RGBImage, need: int | None = None) -> Faces: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns aligned face chips into L2-normalised embeddings.

    ``chip_size`` (pixels, square) and ``chip_padding`` (fraction of the face template on
    each side) say how :func:`facesearch.vision.align.align_faces` must cut the chips it takes.
    """

    name: str
    dim: int
    chip_size: int
    chip_padding: float

    def embed(self, chips: npt.NDArray[np.uint8]) -> FloatArray:
        """``(N, S, S, 3)`` uint8 RGB chips to ``(N, dim)`` float32 unit vectors."""
        ...


@dataclass(frozen=True)
class Caller:
    """Who asks and why; recorded in the audit trail with every operation on biometric data.

    ``actor`` is an access key id for API calls or ``local:<os user>`` for the CLI and library;
    ``purpose`` and ``case_ref`` state why (required for 1:N search where a collection's policy
    says so); ``client`` is the remote address, if any.
    """

    actor: str
    role: str | None = None
    purpose: str | None = None
    case_ref: str | None = None
    client: str | None = None

    @classmethod
    def local(cls, purpose: str | None = None, case_ref: str | None = None) -> Caller:
        """The person running this process (CLI or library use)."""
        import getpass

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return cls(actor=f"local:{user}", role="admin", purpose=purpose, case_ref=case_ref)
