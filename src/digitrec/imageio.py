"""Decode a user's image file into one grey array, refusing what cannot or should not be decoded.

Every image digitrec reads comes through here, as bytes (an upload) or a path (the CLI). The result is
always the same: `(H, W) float32` in [0, 1], 0 = black, 1 = white, the image's luminance as a viewer would
show it:

- anything Pillow reads (PNG, JPEG, GIF and multi-frame TIFF: first frame, BMP, TIFF, WebP, ...; HEIC/HEIF
  when the optional `pillow-heif` plugin is installed);
- EXIF orientation applied, so a phone photo is upright;
- palette, 1-bit, 16-bit, 32-bit and float, CMYK and grey+alpha images all map to grey;
- transparency composited onto a background chosen from the picture (see `composite_alpha`): a drawing
  made on a transparent canvas keeps its strokes visible whether they were drawn black or white.

Limits are checked *before* decoding: the pixel count comes from the file's header, so a decompression
bomb (a small file that would decode to hundreds of megapixels) is refused without allocating it. A path
must be a regular file under a size limit; a FIFO or device is refused without opening it for a blocking
read.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000  # a 48-megapixel phone photo is ~48M; most are 12M; 40M bounds memory at ~0.5 GB
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

_heif_registered = False


class ImageError(ValueError):
    """An image could not be used; the message says why, in words for the person who sent it."""


class NotAnImageError(ImageError):
    """The bytes are not an image Pillow can decode (or the file is truncated or corrupt)."""


class ImageTooLargeError(ImageError):
    """The file or the decoded image is over the configured limit."""


def _register_heif() -> None:
    """Teach Pillow HEIC/HEIF if the optional plugin is installed (once; on first use, not on import)."""
    global _heif_registered
    if _heif_registered:
        return
    _heif_registered = True
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        log.debug("pillow-heif not installed: HEIC/HEIF images will be refused")
        return
    register_heif_opener()


def looks_like_svg(data: bytes) -> bool:
    """True when the bytes start like an SVG document (an `<svg` tag near the top, after any XML prolog)."""
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<?xml", b"<svg", b"<!--", b"<!doctype svg")) and b"<svg" in head


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image file bytes -> (H, W) float32 grey in [0, 1] (1 = white); raises an `ImageError` subclass."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    _register_heif()
    if not data:
        raise NotAnImageError("empty file: not an image")
    try:
        # Image.open reads only the header; nothing is decoded until load().
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own bomb check (~89M px warns, ~179M px refuses) fires inside open(), before ours can.
        raise ImageTooLargeError(f"image too large to decode (over {max_pixels:,} pixels): {error}") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if looks_like_svg(data):
            # Browsers preview SVG happily, so say why this one is refused (a vector drawing has no pixels).
            raise NotAnImageError("SVG drawings aren't supported: export a PNG") from error
        raise NotAnImageError("not an image (or a format this installation cannot read)") from error
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"image too large: {width}x{height} = {width * height:,} pixels (limit {max_pixels:,})"
            )
        if width < 1 or height < 1:
            raise NotAnImageError(f"empty image ({width}x{height} pixels)")
        try:
            # Counting frames parses every frame's header: a corrupt later frame raises here (inside the try).
            if getattr(image, "n_frames", 1) > 1:
                log.info("%s image with %d frames: reading the first", image.format, image.n_frames)
            image.seek(0)
            if image.format == "JPEG" and image.mode in ("RGB", "YCbCr"):
                # libjpeg can hand over the luma channel alone: the same grey we would compute, twice as fast.
                image.draft("L", image.size)
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_grey(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageTooLargeError(f"image too large to decode: {error}") from error
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
                ZeroDivisionError, struct.error) as error:
            # Decoders report truncated and corrupt data with many exception types.
            raise NotAnImageError(f"truncated or corrupt {image.format or ''} image ({error})".replace("  ", " ")) \
                from error


def read_image_file(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file -> (H, W) float32 grey in [0, 1]; see `decode_image`.

    Refuses anything but a regular file (a FIFO would block a read forever) and files over `max_bytes`;
    a missing file raises FileNotFoundError.
    """
    path = Path(path)
    # O_NONBLOCK: if the path is (or was swapped for) a FIFO, open() returns at once instead of waiting for
    # a writer; fstat on the open descriptor then decides, so there is no check-then-open race.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{path}: is a folder, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{path}: not a regular file (a device, pipe or socket)")
        if info.st_size > max_bytes:
            raise ImageTooLargeError(f"{path}: file too large ({info.st_size:,} bytes; limit {max_bytes:,})")
        with os.fdopen(descriptor, "rb") as file:
            descriptor = -1  # the file object owns it now
            data = file.read(max_bytes + 1)
    finally:
        if descriptor >= 0:
            os.close(descriptor)
    if len(data) > max_bytes:  # the file grew while we read it
        raise ImageTooLargeError(f"{path}: file too large (limit {max_bytes:,} bytes)")
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageError as error:
        raise type(error)(f"{path}: {error}") from error


def to_grey(image) -> np.ndarray:  # image: PIL.Image.Image (imported lazily)
    """A loaded Pillow image of any mode -> (H, W) float32 luminance in [0, 1], alpha composited."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image).astype(np.float32)  # (H, W)
        # 16-bit greys arrive as I;16* or I; 65535 is their white. But 8-bit data in an I container (as
        # some writers and conversions leave it) tops out at 255; wider I images are rare: stretch them.
        peak = float(values.max(initial=0))
        top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
        return np.clip(values / top, 0.0, 1.0)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            return values
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        grey = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0  # (H, W) colour only
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0  # (H, W)
        return composite_alpha(grey, alpha)
    if mode == "RGB":
        image = image.convert("L")  # ITU-R 601 luminance
    elif mode != "L":
        image = image.convert("RGB").convert("L")  # CMYK, YCbCr, P, 1, ... via RGB to the same luminance
    return np.asarray(image, dtype=np.float32) / 255.0


def composite_alpha(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite (H, W) grey with (H, W) alpha, both in [0, 1], onto a background chosen from the content.

    A viewer shows transparency as white or a checkerboard, so white strokes on a transparent canvas
    would vanish on white. Instead: when the opaque part is a minority of the image it is the drawing,
    and the background is the opposite of its tone; when it is the majority (a photo with transparent
    corners) the background is its median tone, so the page simply continues.
    """
    if alpha.min(initial=1.0) >= 1.0:
        return grey
    weight = float(alpha.sum())
    if weight <= 0.0:  # fully transparent: nothing was drawn
        return np.ones_like(grey)
    if weight < 0.5 * alpha.size:
        drawing_tone = float((grey * alpha).sum() / weight)
        background = 1.0 if drawing_tone < 0.5 else 0.0
    else:
        background = float(np.median(grey[alpha > 0.5][::7]))  # (K,) a subsample is plenty for a median
    return (grey * alpha + background * (1.0 - alpha)).astype(np.float32)
