"""The plain-PNG path of `imageio.decode_image` (OpenCV) gives exactly Pillow's grey, takes only the PNGs it
can read the same way, and refuses what Pillow's path refuses, with the same errors."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from digitrec.idx import read_idx
from digitrec.imageio import (
    ImageTooLargeError,
    NotAnImageError,
    decode_admission,
    decode_image,
    decode_plain_png,
    decode_with_pillow,
)


def png(image: np.ndarray) -> bytes:
    """(H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA uint8 -> PNG bytes (OpenCV's encoder, as the benchmark's)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def pillow_png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def with_chunk(data: bytes, kind: bytes, payload: bytes, *, crc: int | None = None) -> bytes:
    """`data` with a chunk inserted right after IHDR."""
    chunk = struct.pack(">I", len(payload)) + kind + payload
    chunk += struct.pack(">I", zlib.crc32(kind + payload) if crc is None else crc)
    return data[:33] + chunk + data[33:]


def same_as_pillow(data: bytes) -> np.ndarray:
    """Decode both ways; the plain path must have taken it, and agree with Pillow to the bit."""
    fast = decode_plain_png(data, max_pixels=40_000_000)
    assert fast is not None, "expected the plain-PNG path to take this file"
    slow = decode_with_pillow(data)
    assert fast.dtype == slow.dtype == np.float32 and fast.shape == slow.shape
    assert np.array_equal(fast, slow)
    assert np.array_equal(decode_image(data), slow)
    return fast


@pytest.fixture(scope="module")
def mnist_images(mnist_dir: Path) -> np.ndarray:
    return read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:300]  # (300, 28, 28) uint8


@pytest.fixture(scope="module")
def usps_images(shared_dir: Path) -> np.ndarray:
    """200 USPS digits (16x16, grey in [-1, 1] in the file), as uint8 dark ink on white."""
    import gzip

    with gzip.open(shared_dir / "usps" / "zip.train.gz", "rt") as file:
        rows = [next(file).split() for _ in range(200)]
    values = np.array([[float(value) for value in row[1:]] for row in rows]).reshape(-1, 16, 16)
    return np.clip(np.rint((1.0 - values) / 2.0 * 255.0), 0, 255).astype(np.uint8)


def test_grey_digits_match_pillow(mnist_images: np.ndarray, usps_images: np.ndarray) -> None:
    for image in [*mnist_images, *usps_images]:
        same_as_pillow(png(image))


def test_colour_and_transparent_digits_match_pillow(mnist_images: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    for image in mnist_images[:100]:
        ink = rng.integers(0, 256, 3)
        paper = rng.integers(0, 256, 3)
        weight = image[..., None].astype(np.float64) / 255.0
        rgb = np.rint(weight * ink + (1 - weight) * paper).astype(np.uint8)  # (28, 28, 3) tinted pen and paper
        same_as_pillow(png(rgb))
        # Drawn on a transparent canvas (the page's strokes), fully opaque, and half transparent at random.
        for alpha in (image, np.full_like(image, 255), rng.integers(0, 256, image.shape, dtype=np.uint8)):
            same_as_pillow(png(np.dstack([rgb, alpha])))
    # Non-digits: noise, a gradient, a big sparse page.
    same_as_pillow(png(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)))
    same_as_pillow(png(np.tile(np.arange(256, dtype=np.uint8), (40, 1))))
    page = np.full((600, 800), 235, np.uint8)
    cv2.putText(page, "2024", (100, 300), cv2.FONT_HERSHEY_SIMPLEX, 5, 30, 12)
    same_as_pillow(png(page))


def test_pillow_written_pngs_with_harmless_chunks_match(mnist_images: np.ndarray) -> None:
    image = Image.fromarray(mnist_images[0])
    same_as_pillow(pillow_png(image, dpi=(300, 300)))  # pHYs
    same_as_pillow(with_chunk(png(mnist_images[1]), b"gAMA", struct.pack(">I", 45455)))
    same_as_pillow(with_chunk(png(mnist_images[2]), b"sRGB", b"\x00"))


@pytest.mark.parametrize("case", ["palette", "16-bit", "grey+alpha", "transparency key", "exif", "text",
                                  "bad crc", "too big", "jpeg", "not an image"])
def test_other_files_go_to_pillow(case: str, mnist_images: np.ndarray) -> None:
    digit = mnist_images[0]
    data = {
        "palette": lambda: pillow_png(Image.fromarray(digit).convert("P")),
        "16-bit": lambda: png(digit.astype(np.uint16) * 257),
        "grey+alpha": lambda: pillow_png(Image.fromarray(np.dstack([digit, digit])[..., :2], "LA")),
        "transparency key": lambda: with_chunk(png(digit), b"tRNS", b"\x00\x00"),  # black is transparent
        "exif": lambda: pillow_png(Image.fromarray(digit), exif=rotated()),
        "text": lambda: pillow_png(Image.fromarray(digit), pnginfo=text_info()),
        "bad crc": lambda: with_chunk(png(digit), b"gAMA", struct.pack(">I", 45455), crc=0),
        "too big": lambda: png(np.zeros((1001, 1000), np.uint8)),
        "jpeg": lambda: cv2.imencode(".jpg", digit)[1].tobytes(),
        "not an image": lambda: b"hello" * 20,
    }[case]()
    assert decode_plain_png(data, max_pixels=40_000_000) is None
    if case in ("bad crc", "not an image"):  # a bad CRC: Pillow refuses it (libpng alone would only have warned)
        with pytest.raises(NotAnImageError):
            decode_image(data)
    else:
        assert np.array_equal(decode_image(data), decode_with_pillow(data))


def rotated() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to show it upright (Pillow's path does)
    return exif


def text_info() -> object:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "a digit")
    return info


def test_limits_and_errors_are_pillows(mnist_images: np.ndarray) -> None:
    data = png(mnist_images[0])
    with pytest.raises(ImageTooLargeError, match="limit 100"):
        decode_image(data, max_pixels=100)
    # Cut short inside IDAT (the chunks before it are whole): OpenCV fails, Pillow's path says why.
    cut = data[: len(data) - 30]
    with pytest.raises(NotAnImageError) as fast_error:
        decode_image(cut)
    with pytest.raises(NotAnImageError) as pillow_error:
        decode_with_pillow(cut)
    assert str(fast_error.value) == str(pillow_error.value)


def test_the_servers_pixel_budget_is_asked_first(mnist_images: np.ndarray) -> None:
    asked: list[tuple[str, int, int]] = []
    token = decode_admission.set(lambda kind, width, height: asked.append((kind, width, height)))
    try:
        decode_image(png(mnist_images[0][:, :20]))
    finally:
        decode_admission.reset(token)
    assert asked == [("PNG", 20, 28)]
