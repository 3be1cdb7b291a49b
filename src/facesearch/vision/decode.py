"""Decode images from bytes, paths or arrays to upright 8-bit RGB.

Formats: JPEG, PNG, WebP, BMP, TIFF, GIF (first frame) and anything else Pillow reads. EXIF
orientation is applied. Grayscale, RGBA/LA (composited on white), palette, 16-bit, CMYK and
YCbCr images become 8-bit RGB. Limits (as Rekognition's): at most ``max_bytes`` of encoded data
(15 MB), at most ``max_pixels`` pixels (checked from the header, before any pixel is decoded,
so decompression bombs are refused cheaply) and at least ``min_side`` pixels on each side (80).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from facesearch.errors import ImageTooLargeError, ImageTooSmallError, InvalidImageError
from facesearch.limits import megabytes
from facesearch.types import Image

MAX_BYTES = 15 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SIDE = 80


@dataclass(frozen=True)
class DecodeLimits:
    """Refusal limits: bytes of encoded data, total pixels, shortest side in pixels."""

    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE


DEFAULT_LIMITS = DecodeLimits()

ImageSource = bytes | bytearray | memoryview | str | os.PathLike[str] | npt.NDArray[np.uint8]


def read_bytes(path: str | os.PathLike[str], limits: DecodeLimits = DEFAULT_LIMITS) -> bytes:
    """The file's bytes, refusing files over ``limits.max_bytes`` before reading them."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise InvalidImageError(f"{p}: no such file") from None
    except OSError as exc:
        raise InvalidImageError(f"{p}: cannot read ({exc.strerror})") from None
    if p.is_dir():
        raise InvalidImageError(f"{p}: is a directory, not an image")
    if size > limits.max_bytes:
        raise ImageTooLargeError(
            f"{p}: {megabytes(size)} is over the {megabytes(limits.max_bytes)} image limit"
        )
    try:
        return p.read_bytes()
    except OSError as exc:
        raise InvalidImageError(f"{p}: cannot read ({exc.strerror})") from None


def load_image(source: ImageSource, limits: DecodeLimits = DEFAULT_LIMITS) -> Image:
    """Decode ``source`` (encoded bytes, a file path, or an RGB/gray/RGBA uint8 array).

    Raises :class:`InvalidImageError`, :class:`ImageTooLargeError` or
    :class:`ImageTooSmallError` with a message naming the problem.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, limits)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = "image"
        if len(data) > limits.max_bytes:
            raise ImageTooLargeError(
                f"{label}: {megabytes(len(data))} is over the "
                f"{megabytes(limits.max_bytes)} image limit"
            )
    else:
        data = read_bytes(source, limits)
        label = str(source)
    if not data:
        raise InvalidImageError(f"{label}: empty file, not an image")
    pixels, fmt = _decode(data, label, limits)
    return Image(pixels=pixels, sha256=hashlib.sha256(data).hexdigest(), format=fmt)


def _decode(data: bytes, label: str, limits: DecodeLimits) -> tuple[npt.NDArray[np.uint8], str]:
    with warnings.catch_warnings():
        # We enforce our own pixel cap from the header; silence Pillow's global one.
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        try:
            img = PILImage.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InvalidImageError(
                f"{label}: not a recognised image format (JPEG, PNG, WebP, BMP, TIFF or GIF)"
            ) from None
        except PILImage.DecompressionBombError:
            raise ImageTooLargeError(
                f"{label}: image dimensions are over the {limits.max_pixels / 1e6:.0f} "
                "megapixel limit") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImageError(f"{label}: cannot read image header ({exc})") from None
        fmt = img.format or "UNKNOWN"
        w, h = img.size
        if w * h > limits.max_pixels:
            raise ImageTooLargeError(
                f"{label}: {w}x{h} = {w * h / 1e6:.1f} megapixels is over the "
                f"{limits.max_pixels / 1e6:.0f} megapixel limit"
            )
        try:
            img.seek(0)  # first frame of GIF/TIFF/WebP animations
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # no copy when already upright
            pixels = _to_rgb8(img)
        except PILImage.DecompressionBombError:
            raise ImageTooLargeError(
                f"{label}: image dimensions are over the {limits.max_pixels / 1e6:.0f} "
                "megapixel limit") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidImageError(f"{label}: corrupt or truncated {fmt} data ({exc})") from None
    _check_side(pixels, label, limits)
    return pixels, fmt


def _to_rgb8(img: PILImage.Image) -> npt.NDArray[np.uint8]:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.int64)
        top = 65535 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
        gray = np.clip(arr * 255 // top, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "F":
        arr = np.asarray(img, np.float64)
        top = arr.max(initial=0.0)
        scale = 255.0 if top <= 1.0 else (255.0 / top if top > 255 else 1.0)
        gray = np.clip(arr * scale, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = PILImage.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _from_array(arr: npt.NDArray[np.uint8], limits: DecodeLimits) -> Image:
    if arr.dtype != np.uint8:
        raise InvalidImageError(f"array image must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidImageError(f"array image must be (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[0] * arr.shape[1] > limits.max_pixels:
        raise ImageTooLargeError(
            f"array image: {arr.shape[1]}x{arr.shape[0]} is over the "
            f"{limits.max_pixels / 1e6:.0f} megapixel limit"
        )
    pixels = np.ascontiguousarray(arr)
    _check_side(pixels, "array image", limits)
    return Image(pixels=pixels, sha256=hashlib.sha256(pixels.tobytes()).hexdigest(), format="RAW")


def _check_side(pixels: npt.NDArray[np.uint8], label: str, limits: DecodeLimits) -> None:
    h, w = pixels.shape[:2]
    if min(h, w) < limits.min_side:
        raise ImageTooSmallError(
            f"{label}: {w}x{h} is too small; each side must be at least {limits.min_side} pixels"
        )
