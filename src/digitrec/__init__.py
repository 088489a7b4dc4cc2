"""digitrec: handwritten digit recognition that works on the images people really have.

The Python API (see `digitrec.reader`):

    reader = digitrec.Reader()          # the bundled model, loaded once; thread-safe
    result = reader.read("photo.jpg")   # path, bytes or numpy image -> Recognition
    result.number, result.to_json()

Importing `digitrec` does no work: the API's names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DigitResult", "ImageError", "Reader", "Recognition", "__version__"]

if TYPE_CHECKING:
    from digitrec.reader import DigitResult, ImageError, Reader, Recognition


def __getattr__(name: str) -> Any:
    # PEP 562: `digitrec.Reader` imports NumPy, OpenCV and LiteRT only when first asked for, so that
    # `digitrec --help` and `import digitrec` stay instant.
    if name in __all__:
        from digitrec import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'digitrec' has no attribute {name!r}")
