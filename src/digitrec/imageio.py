"""Decode a user's image file into one grey array, refusing what cannot or should not be decoded.

Every image digitrec reads comes through here, as bytes (an upload) or a path (the CLI). The result is
always the same: `(H, W) float32` in [0, 1], 0 = black, 1 = white, the image's luminance as a viewer would
show it:

- PNG, JPEG, GIF, BMP, TIFF, WebP (of animations and multi-page files, the first frame), and HEIC/HEIF
  when the optional `pillow-heif` plugin is installed; no other format is even tried (Pillow knows formats,
  EPS among them, whose decoders run external programs or cost far more than their size suggests);
- EXIF orientation applied, so a phone photo is upright;
- palette, 1-bit, 16-bit, 32-bit and float, CMYK and grey+alpha images all map to grey;
- transparency composited onto a background chosen from the picture (see `composite_alpha`): a drawing
  made on a transparent canvas keeps its strokes visible whether they were drawn black or white.

Limits are checked *before* decoding: the pixel count comes from the file's header, so a decompression
bomb (a small file that would decode to hundreds of megapixels) is refused without allocating it. So is a
file whose decoding would cost far more than its pixels (see `check_decode_cost`): a JPEG with hundreds of
scans, or one far smaller than its declared size could hold. Later pages of TIFF/GIF files are never walked.
A caller that shares memory between requests (the server) learns each image's size just before it is
decoded, through `decode_admission`. A
must be a regular file under a size limit; a FIFO or device is refused without opening it for a blocking
read.
"""

from __future__ import annotations

import contextvars
import io
import logging
import os
import stat
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000  # a 48-megapixel phone photo is ~48M; most are 12M; 40M bounds memory at ~0.5 GB
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
# What Pillow may try, by its format ids (JPEG includes MPO, the multi-picture JPEG many phones write;
# HEIF only when pillow-heif is installed).
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "HEIF")
FORMAT_NAMES = "PNG, JPEG, GIF, BMP, TIFF, WebP or HEIC"
# A progressive JPEG is decoded one scan at a time and every scan is a pass over the whole image: encoders
# write ~10 scans (Pillow/libjpeg 6-10, mozjpeg up to ~20), a crafted file thousands (5 s of CPU in 375 kB).
MAX_JPEG_SCANS = 100
MAX_JPEG_SCAN_PIXELS = 1_200_000_000  # scans x pixels: ~30 scans of a 40 MP image, ~0.7 s of decoding here
# Huffman-coded JPEG needs at least 1 bit per 8x8 block (its DC code); 2048 pixels a byte is 4x below that
# floor, so only a truncated (or arithmetic-coded and nearly blank) file is refused.
MIN_JPEG_BYTES_PER_PIXEL = 1 / 2048
ZLIB_MAX_RATIO = 1032  # deflate never expands data more than this: a PNG smaller than raw / 1032 is cut short
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG chunks that change nothing in the pixels Pillow reads (it ignores gamma, chromaticities, sRGB intent,
# resolution and time): a PNG of only these, 8-bit grey/RGB/RGBA, is decoded by OpenCV (`decode_plain_png`).
PLAIN_PNG_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"sRGB", b"gAMA", b"cHRM", b"pHYs", b"tIME"})
FAST_PNG_MAX_PIXELS = 1_000_000  # bigger PNGs go through Pillow's path, which bounds their memory in strips
STRIP_PIXELS = 4_000_000  # composite transparency in strips this big, so a 40 MP RGBA image needs no float copies

# Called with (format, width, height) just before pixels are decoded; may raise to refuse (the server's
# shared pixel budget). A context variable so concurrent decodes in other threads each see their own.
decode_admission: contextvars.ContextVar[Callable[[str | None, int, int], None] | None] = contextvars.ContextVar(
    "decode_admission", default=None)

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
    grey = decode_plain_png(data, max_pixels=max_pixels)
    if grey is not None:
        return grey
    return decode_with_pillow(data, max_pixels=max_pixels)


def plain_png_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, PNG colour type) of a small 8-bit grey, RGB or RGBA PNG that OpenCV decodes to exactly
    Pillow's pixels, else None.

    Plain means: only the chunks of PLAIN_PNG_CHUNKS (no palette, transparency key, EXIF or XMP orientation,
    text, animation), each with a correct CRC (Pillow refuses a file whose ancillary chunk fails its CRC;
    libpng only warns), and at most FAST_PNG_MAX_PIXELS. A browser canvas's or OpenCV's PNG is plain.
    """
    if len(data) < 45 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if depth != 8 or colour not in (0, 2, 6) or not 0 < width * height <= FAST_PNG_MAX_PIXELS:
        return None
    at = 8
    while at + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        end = at + 12 + length
        if kind not in PLAIN_PNG_CHUNKS or end > len(data):
            return None
        # IDAT's CRC is checked by libpng itself (an error, so Pillow's path decides); the small chunks here.
        if kind != b"IDAT" and zlib.crc32(data[at + 4 : end - 4]) != struct.unpack(">I", data[end - 4 : end])[0]:
            return None
        if kind == b"IEND":
            return width, height, colour
        at = end
    return None


def decode_plain_png(data: bytes, *, max_pixels: int) -> np.ndarray | None:
    """`decode_with_pillow`'s grey for a plain PNG (`plain_png_header`), decoded by OpenCV; None for any
    other file (or one OpenCV fails on), which Pillow then reads and judges.

    Pillow parses a PNG's chunks and builds its image in Python: ~45 us of CPU, with the GIL, for a 28x28
    digit, against ~8 us here. The same checks run first (size limits, cost, the server's pixel budget),
    and the grey is Pillow's exactly: its integer ITU-R 601 luminance, its alpha compositing.
    """
    header = plain_png_header(data)
    if header is None:
        return None
    width, height, colour = header
    if width * height > max_pixels:
        return None  # Pillow's path refuses it, with its message
    check_decode_cost(data, "PNG", width, height)
    admit = decode_admission.get()
    if admit is not None:
        admit("PNG", width, height)
    import cv2

    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # (H, W) grey, BGR or BGRA
    channels = {0: 1, 2: 3, 6: 4}[colour]
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape[:2] != (height, width) \
            or (pixels.shape[2] if pixels.ndim == 3 else 1) != channels:
        return None  # corrupt data (libpng's error): Pillow says what is wrong with it
    if colour == 0:
        return np.divide(pixels, np.float32(255.0), out=np.empty(pixels.shape, np.float32))
    blue, green, red = (pixels[..., index].astype(np.uint32) for index in range(3))
    # Pillow's RGB(A) -> L: (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16 (OpenCV's own rounds otherwise)
    grey = ((red * 19595 + green * 38470 + blue * 7471 + 0x8000) >> 16).astype(np.uint8)
    if colour == 2:
        return np.divide(grey, np.float32(255.0), out=np.empty(grey.shape, np.float32))
    return composite_alpha_uint8(grey, np.ascontiguousarray(pixels[..., 3]))


def decode_with_pillow(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`decode_image` for every file, by Pillow (what the plain-PNG path must match exactly)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    _register_heif()
    if not data:
        raise NotAnImageError("empty file: not an image")
    try:
        # Image.open reads only the header; nothing is decoded until load().
        image = Image.open(io.BytesIO(data), formats=allowed_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own bomb check (~89M px warns, ~179M px refuses) fires inside open(), before ours can.
        raise ImageTooLargeError(f"image too large to decode (over {max_pixels:,} pixels): {error}") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as error:
        if looks_like_svg(data):
            # Browsers preview SVG happily, so say why this one is refused (a vector drawing has no pixels).
            raise NotAnImageError("SVG drawings aren't supported: export a PNG") from error
        raise NotAnImageError(f"not an image, or not one digitrec reads ({FORMAT_NAMES})") from error
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"image too large: {width}x{height} = {width * height:,} pixels (limit {max_pixels:,})"
            )
        if width < 1 or height < 1:
            raise NotAnImageError(f"empty image ({width}x{height} pixels)")
        check_decode_cost(data, image.format, width, height)
        admit = decode_admission.get()
        if admit is not None:
            admit(image.format, width, height)
        try:
            # The first frame only; n_frames is never asked for: it walks every page (quadratic for TIFF).
            image.seek(0)
            if image.format in ("JPEG", "MPO") and image.mode in ("RGB", "YCbCr"):
                # libjpeg can hand over the luma channel alone: the same grey we would compute, twice as fast.
                image.draft("L", image.size)
            image.load()
            # in_place: without an orientation tag, exif_transpose would return a full copy of the image.
            ImageOps.exif_transpose(image, in_place=True)
            return release_to_grey(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageTooLargeError(f"image too large to decode: {error}") from error
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
                ZeroDivisionError, struct.error) as error:
            # Decoders report truncated and corrupt data with many exception types.
            raise NotAnImageError(f"truncated or corrupt {image.format or ''} image ({error})".replace("  ", " ")) \
                from error


def allowed_formats() -> list[str]:
    """The formats of ALLOWED_FORMATS this installation can open (Pillow's ids)."""
    from PIL import Image

    Image.init()  # loads Pillow's plugins (once), so that OPEN lists every format it has
    return [name for name in ALLOWED_FORMATS if name in Image.OPEN]


def check_decode_cost(data: bytes, image_format: str | None, width: int, height: int) -> None:
    """Refuse, from the bytes alone, a file whose decoding would cost far more than its pixel count says."""
    pixels = width * height
    if image_format in ("JPEG", "MPO"):
        # SOS can only appear as a real marker: inside entropy-coded data every 0xFF is followed by 0x00
        # or a restart marker. (An EXIF thumbnail's few scans count too; the limits leave room for them.)
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS or scans * pixels > MAX_JPEG_SCAN_PIXELS:
            raise NotAnImageError(f"JPEG with {scans} scans for {width}x{height} pixels: too costly to decode"
                                  f" (a normal progressive JPEG has about 10); save it as a baseline JPEG")
        if len(data) < pixels * MIN_JPEG_BYTES_PER_PIXEL:
            raise NotAnImageError(f"truncated JPEG: it declares {width}x{height} pixels but holds only"
                                  f" {len(data):,} bytes")
    elif image_format == "PNG" and data[12:16] == b"IHDR":
        bit_depth, colour_type = data[24], data[25]
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour_type, 1)
        raw_bytes = height * (1 + (width * channels * bit_depth + 7) // 8)  # filter byte + packed row
        if len(data) * ZLIB_MAX_RATIO < raw_bytes:
            raise NotAnImageError(f"truncated PNG: it declares {width}x{height} pixels but holds only"
                                  f" {len(data):,} bytes")


def read_image_file(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file -> (H, W) float32 grey in [0, 1]; see `read_image_bytes`, `decode_image`."""
    data = read_image_bytes(path, max_bytes=max_bytes)
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageError as error:
        raise type(error)(f"{path}: {error}") from error


def read_image_bytes(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """An image file's bytes, undecoded (what a correction stores, what `recognize` takes).

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
    return data


def release_to_grey(image) -> np.ndarray:  # image: PIL.Image.Image, loaded; closed on return
    """`to_grey` for a big image: same pixels, but each Pillow buffer is freed as soon as it is used.

    A 40 MP RGBA PNG took 1.2 GB through `to_grey` (RGBA, its copy, float grey, float alpha, products);
    here it is the RGBA buffer, then two 8-bit planes, then the float result, built in strips.
    """
    mode = image.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit and float: rare, and their own scaling rules
        grey = to_grey(image)
        image.close()
        return grey
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")  # a copy unless it is RGBA already
        image.close()
        alpha = np.asarray(rgba.getchannel("A"))  # (H, W) uint8
        grey8 = rgba.convert("L")  # Pillow's RGBA -> L ignores alpha: the colour's luminance
        rgba.close()
        grey = np.asarray(grey8)  # (H, W) uint8
        grey8.close()
        return composite_alpha_uint8(grey, alpha)
    # ITU-R 601 luminance; CMYK, YCbCr, P, 1, ... via RGB to the same luminance, as `to_grey` does
    grey8 = image if mode == "L" else image.convert("L") if mode == "RGB" else image.convert("RGB").convert("L")
    grey = np.asarray(grey8)  # (H, W) uint8
    image.close()
    grey8.close()
    return np.divide(grey, np.float32(255.0), out=np.empty(grey.shape, np.float32))  # = float32(grey) / 255


def composite_alpha_uint8(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`composite_alpha(grey / 255, alpha / 255)` for (H, W) uint8 planes, in strips (no full-size temporaries)."""
    height, width = grey.shape
    rows = max(1, STRIP_PIXELS // max(1, width))
    strips = [slice(top, top + rows) for top in range(0, height, rows)]
    scale = np.float32(255.0)
    out = np.empty(grey.shape, np.float32)
    if alpha.min(initial=255) >= 255:
        return np.divide(grey, scale, out=out)
    weight = tone = 0.0
    for strip in strips:
        strip_alpha = alpha[strip] / scale
        weight += float(strip_alpha.sum(dtype=np.float64))
        tone += float(((grey[strip] / scale) * strip_alpha).sum(dtype=np.float64))
    if weight <= 0.0:  # fully transparent: nothing was drawn
        out.fill(1.0)
        return out
    if weight < 0.5 * alpha.size:
        background = 1.0 if tone / weight < 0.5 else 0.0
    else:
        # The median of every 7th opaque pixel in row-major order, as composite_alpha takes it.
        samples, seen = [], 0
        for strip in strips:
            opaque = grey[strip][alpha[strip] > 127]  # alpha / 255 > 0.5
            samples.append(opaque[(-seen) % 7::7])
            seen += opaque.size
        background = float(np.median(np.concatenate(samples) / scale))
    for strip in strips:
        strip_alpha = alpha[strip] / scale
        out[strip] = (grey[strip] / scale) * strip_alpha + background * (1.0 - strip_alpha)
    return out


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
