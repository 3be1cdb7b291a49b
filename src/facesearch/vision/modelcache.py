"""Converted-model cache: each model is built once, deterministically, and checksummed.

Models are converted in the project from weights shipped inside installed packages (nothing is
downloaded). The cache lives in ``FACESEARCH_CACHE`` (default ``~/.cache/facesearch``). Each
entry is ``NAME.onnx`` with ``NAME.onnx.sha256`` beside it; an entry whose bytes do not match
its checksum is rebuilt. Builds are guarded by a file lock so concurrent processes build once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from facesearch.errors import ModelError


def cache_dir() -> Path:
    """The model cache directory (created on demand)."""
    root = os.environ.get("FACESEARCH_CACHE") or str(Path.home() / ".cache" / "facesearch")
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _valid(path: Path) -> bool:
    sums = path.with_name(path.name + ".sha256")
    if not path.is_file() or not sums.is_file():
        return False
    return sums.read_text().strip() == _sha256(path)


def ensure_model(name: str, build: Callable[[], bytes]) -> Path:
    """Path of cached model ``name`` (a file name such as ``resnet-v1.onnx``), building it once.

    ``name`` should include a version so a changed converter writes a new entry.
    """
    path = cache_dir() / name
    if _valid(path):
        return path
    lock = path.with_name(path.name + ".lock")
    with lock.open("w") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            if _valid(path):
                return path
            data = build()
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            sums = path.with_name(path.name + ".sha256")
            sums.write_text(hashlib.sha256(data).hexdigest() + "\n")
            return path
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def packaged_model_file(name: str) -> str:
    """Path of a model file shipped in the ``face-recognition-models`` package (dlib's
    landmark predictors, HOG/MMOD detectors and ResNet); ModelError when it is missing."""
    try:
        import face_recognition_models
    except ImportError as exc:
        raise ModelError("face-recognition-models is not installed") from exc
    path = Path(face_recognition_models.__file__).parent / "models" / name
    if not path.is_file():
        raise ModelError(f"model file {path} is missing; reinstall face-recognition-models")
    return str(path)
