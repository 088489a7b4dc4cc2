"""Decoding users' image files: every format and mode, limits before decoding, bad input."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitrec.imageio import (
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    composite_alpha,
    decode_image,
    read_image_file,
)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def dark_square(mode: str = "L") -> Image.Image:
    """A 40x30 white image with a black square at (10..20, 5..15)."""
    image = Image.new("L", (40, 30), 255)
    image.paste(0, (10, 5, 20, 15))
    if mode == "I;16":  # a true 16-bit grey: white is 65535
        return Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    return image.convert(mode)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("RGB", "PNG"), ("RGB", "JPEG"), ("RGB", "BMP"), ("RGB", "GIF"), ("RGB", "WEBP"),
     ("RGB", "TIFF"), ("P", "PNG"), ("1", "PNG"), ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"),
     ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("LA", "PNG"), ("RGBA", "PNG"), ("RGBA", "WEBP")],
    ids=lambda value: str(value),
)
def test_every_format_and_mode_decodes_to_grey(mode: str, fmt: str) -> None:
    grey = decode_image(encoded(dark_square(mode), fmt))
    assert grey.shape == (30, 40) and grey.dtype == np.float32
    assert grey[10, 15] < 0.2 and grey[25, 35] > 0.8  # ink dark, paper light


def test_heic_decodes_when_the_plugin_is_installed() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    try:
        data = encoded(dark_square("RGB"), "HEIF")
    except (OSError, KeyError, ValueError):
        pytest.skip("this pillow-heif build cannot encode HEIF")
    grey = decode_image(data)
    assert grey.shape == (30, 40) and grey[10, 15] < 0.3


def test_exif_orientation_is_applied() -> None:
    image = dark_square("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    grey = decode_image(encoded(image, "JPEG", exif=exif))
    assert grey.shape == (40, 30)


@pytest.mark.parametrize("stroke", [0, 255], ids=["black-strokes", "white-strokes"])
def test_transparent_canvas_keeps_its_strokes_visible(stroke: int) -> None:
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = stroke
    rgba[5:15, 10:20, 3] = 255  # the stroke; the rest fully transparent
    grey = decode_image(encoded(Image.fromarray(rgba), "PNG"))
    assert abs(float(grey[10, 15]) - float(grey[25, 35])) > 0.9


def test_photo_with_transparent_corners_continues_the_page() -> None:
    grey = np.full((10, 10), 0.9, np.float32)
    alpha = np.ones((10, 10), np.float32)
    alpha[0, 0] = 0.0
    assert composite_alpha(grey, alpha)[0, 0] == pytest.approx(0.9)


def test_animated_gif_reads_the_first_frame() -> None:
    frames = [Image.new("L", (20, 20), 255), Image.new("L", (20, 20), 0)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data).mean() > 0.9


@pytest.mark.parametrize("side", [10_000, 20_000, 60_000], ids=["100MP", "400MP", "3600MP"])
def test_decompression_bomb_is_refused_before_decoding(side: int, png_bomb) -> None:
    data = png_bomb(side, side)
    assert len(data) < 100_000
    with pytest.raises(ImageTooLargeError, match="too large"):
        decode_image(data)


def test_pixel_limit_is_configurable() -> None:
    data = encoded(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=9_999)
    assert decode_image(data, max_pixels=10_000).shape == (100, 100)


def truncated(fmt: str) -> bytes:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
    data = encoded(noise, fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, not an image", b"\x89PNG\r\n\x1a\n", truncated("PNG"), truncated("JPEG"),
     b"GIF89a" + b"\x00" * 20],
    ids=["empty", "text", "png-signature-only", "truncated-png", "truncated-jpeg", "gif-header-only"],
)
def test_bad_bytes_raise_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImageError):
        decode_image(data)


@pytest.mark.parametrize("size", [(1, 1), (1, 50), (50, 1)], ids=["1x1", "1x50", "50x1"])
def test_tiny_images_decode(size: tuple[int, int]) -> None:
    assert decode_image(encoded(Image.new("L", size, 128), "PNG")).shape == size[::-1]


def test_zero_size_image_is_refused(png_bomb) -> None:
    with pytest.raises(ImageError):
        decode_image(png_bomb(0, 0))


def test_read_image_file_limits_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "digit.png"
    path.write_bytes(encoded(dark_square(), "PNG"))
    assert read_image_file(path).shape == (30, 40)
    with pytest.raises(ImageTooLargeError, match="file too large"):
        read_image_file(path, max_bytes=10)
    with pytest.raises(ImageError, match="folder"):
        read_image_file(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_image_file(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(NotAnImageError, match=r"text\.png"):
        read_image_file(tmp_path / "text.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        read_image_file(fifo)


def test_device_is_refused() -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    with pytest.raises(ImageError, match="not a regular file"):
        read_image_file("/dev/zero")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_decode_or_raise_image_error(data: bytes) -> None:
    try:
        grey = decode_image(data, max_pixels=1_000_000)
    except ImageError:
        return
    assert grey.ndim == 2 and grey.dtype == np.float32


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_corrupted_png_bytes_decode_or_raise_image_error(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = bytearray(encoded(dark_square(), "PNG"))
    for position in rng.integers(0, len(data), size=4):
        data[position] = int(rng.integers(0, 256))
    try:
        grey = decode_image(bytes(data))
    except ImageError:
        return
    assert grey.shape == (30, 40) and np.isfinite(grey).all()
