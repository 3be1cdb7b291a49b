"""Decoding: formats, EXIF orientation, pixel modes, and every refusal with its typed error."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from facesearch.errors import ImageTooLargeError, ImageTooSmallError, InvalidImageError
from facesearch.vision.decode import DecodeLimits, load_image

from ..conftest import face


@pytest.fixture(scope="module")
def obama() -> PILImage.Image:
    return PILImage.open(face("obama.jpg")).convert("RGB")


def encode(img: PILImage.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_decode_to_rgb8(obama: PILImage.Image, fmt: str) -> None:
    img = load_image(encode(obama, fmt))
    assert img.pixels.shape == (obama.height, obama.width, 3)
    assert img.pixels.dtype == np.uint8
    assert img.format == fmt
    # The content survives (GIF is palettised, JPEG/WebP lossy): close to the source.
    diff = np.abs(img.pixels.astype(int) - np.asarray(obama, int)).mean()
    assert diff < 12


def test_gif_first_frame(obama: PILImage.Image) -> None:
    small = obama.resize((200, 250))
    black = PILImage.new("RGB", small.size)
    data = encode(small, "GIF", save_all=True, append_images=[black], duration=100)
    img = load_image(data)
    assert img.pixels.mean() > 40  # the first (photo) frame, not the black one


def test_exif_orientation_is_applied(obama: PILImage.Image) -> None:
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    rotated = obama.transpose(PILImage.Transpose.ROTATE_90)  # what a camera would store
    img = load_image(encode(rotated, "JPEG", exif=exif.tobytes()))
    assert (img.width, img.height) == (obama.width, obama.height)
    diff = np.abs(img.pixels.astype(int) - np.asarray(obama, int)).mean()
    assert diff < 8


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_pixel_modes_become_rgb8(obama: PILImage.Image, mode: str) -> None:
    if mode == "I;16":
        gray = np.asarray(obama.convert("L"), np.uint16) * 257
        src = PILImage.fromarray(gray)
        assert src.mode.startswith("I;16")
        data = encode(src, "PNG")
    elif mode == "CMYK":
        data = encode(obama.convert("CMYK"), "JPEG")
    elif mode == "LA":
        data = encode(obama.convert("LA"), "PNG")
    else:
        data = encode(obama.convert(mode), "PNG")
    img = load_image(data)
    assert img.pixels.shape == (obama.height, obama.width, 3)
    assert img.pixels.dtype == np.uint8
    if mode in ("L", "LA", "I;16", "CMYK", "RGBA", "P"):
        # Compare at a tenth of the size, so palette dithering averages out.
        size = (obama.width // 10, obama.height // 10)
        ref = np.asarray(obama.convert("L").resize(size, PILImage.Resampling.BOX), float)
        got = np.asarray(PILImage.fromarray(img.pixels).convert("L")
                         .resize(size, PILImage.Resampling.BOX), float)
        assert np.abs(got - ref).mean() < 8, mode


def test_transparent_pixels_become_white() -> None:
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[:, :50] = (255, 0, 0, 255)
    img = load_image(encode(PILImage.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(img.pixels[50, 10]) == (255, 0, 0)
    assert tuple(img.pixels[50, 90]) == (255, 255, 255)


def test_path_and_bytes_give_the_same_image() -> None:
    p = face("obama.jpg")
    a, b = load_image(p), load_image(p.read_bytes())
    assert a.sha256 == b.sha256
    assert np.array_equal(a.pixels, b.pixels)


def test_array_input() -> None:
    arr = np.full((120, 100, 3), 7, np.uint8)
    img = load_image(arr)
    assert img.format == "RAW" and img.pixels.shape == (120, 100, 3)
    assert load_image(arr[:, :, 0]).pixels.shape == (120, 100, 3)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


REFUSALS = [
    ("garbage", b"this is not an image at all" * 10, InvalidImageError, "not a recognised"),
    ("empty", b"", InvalidImageError, "empty"),
    ("bomb", _png_header_only(60000, 60000), ImageTooLargeError, "megapixel"),
    ("tiny", None, ImageTooSmallError, "at least 80"),
    ("truncated", None, InvalidImageError, "corrupt or truncated"),
    ("too many bytes", b"\xff" * (15 * 1024 * 1024 + 1), ImageTooLargeError, "MB"),
]


@pytest.mark.parametrize(("name", "data", "error", "words"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_refusals_are_typed(obama: PILImage.Image, name: str, data: bytes | None,
                            error: type[Exception], words: str) -> None:
    if name == "tiny":
        data = encode(obama.resize((60, 75)), "PNG")
    elif name == "truncated":
        data = encode(obama, "JPEG")[:4000]
    assert data is not None
    with pytest.raises(error, match=words) as info:
        load_image(data)
    assert type(info.value) is error


def test_file_refusals(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(tmp_path)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\0" * 2048)
    with pytest.raises(ImageTooLargeError):
        load_image(big, DecodeLimits(max_bytes=1024))


def test_pixel_cap_is_configurable(obama: PILImage.Image) -> None:
    data = encode(obama, "PNG")
    with pytest.raises(ImageTooLargeError, match="megapixel"):
        load_image(data, DecodeLimits(max_pixels=100_000))
