"""Small files that are expensive to decode, made on the fly (never committed): the server must refuse them
cheaply. Shared by the server tests and benchmarks/overload.py.
"""

from __future__ import annotations

import io
import struct

from PIL import Image


def jpeg_segments(data: bytes) -> list[bytes]:
    """A JPEG's byte stream split into its marker segments; each SOS keeps its entropy-coded data."""
    segments, at = [data[:2]], 2  # SOI
    while at < len(data):
        marker = data[at + 1]
        if marker == 0xD9:  # EOI
            segments.append(data[at:at + 2])
            break
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        end = at + 2 + length
        if marker == 0xDA:  # the scan's data runs to the next marker that is not stuffing or a restart
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7:
                    break
                end += 2
        segments.append(data[at:end])
        at = end
    return segments


def progressive_jpeg_bomb(scans: int, side: int = 2048) -> bytes:
    """A legal-looking progressive JPEG of a flat grey square whose last scan is repeated to `scans` scans.

    Each repeat costs the decoder a pass over every block of the image, but only a few bytes of file.
    """
    buffer = io.BytesIO()
    Image.new("L", (side, side), 200).save(buffer, "JPEG", quality=90, progressive=True)
    segments = jpeg_segments(buffer.getvalue())
    scan_at = [index for index, segment in enumerate(segments) if segment[1] == 0xDA]
    last = segments[scan_at[-1]]
    extra = scans - len(scan_at)
    return b"".join(segments[:-1]) + last * max(0, extra) + segments[-1]


def many_page_tiff(pages: int) -> bytes:
    """A TIFF of `pages` 1x1 grey pages, ~100 bytes each, written directly (Pillow's writer is far slower).

    Counting its frames walks every page's header, which costs Pillow time quadratic in `pages`.
    """
    entries = [(256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1),  # 1x1, 8 bit, raw, black=0
               (273, 4, 8), (278, 3, 1), (279, 4, 1)]  # the one strip: at offset 8, 1 row, 1 byte
    ifd_size = 2 + 12 * len(entries) + 4
    first = 16  # header (8) + the pixel (1), padded
    out = bytearray(b"II*\x00" + struct.pack("<I", first) + b"\xff" + b"\x00" * 7)
    for page in range(pages):
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                        else struct.pack("<I", value))
        out += struct.pack("<I", first + (page + 1) * ifd_size if page + 1 < pages else 0)
    return bytes(out)


def tiny_jpeg_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes of JPEG whose header declares width x height: an 8x8 image's scan, then EOI."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buffer, "JPEG")
    data = buffer.getvalue()
    at = data.index(b"\xff\xc0")  # SOF0: marker(2) length(2) precision(1) height(2) width(2)
    return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]
