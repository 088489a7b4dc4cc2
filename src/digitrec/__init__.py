"""digitrec: handwritten digit recognition that works on the images people really have."""

__version__ = "0.1.0"
