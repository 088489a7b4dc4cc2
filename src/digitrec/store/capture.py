"""Turn an image and its right reading into a correction: read it with the model, keep what the model saw.

The inputs stored are the 28x28 crops the model was given, one per digit, so that fine-tuning learns from
exactly what the model got wrong. A one-digit label on an image read as several pieces (or none) is
rendered whole, as digit mode renders it, so the label always has its input.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from digitrec.imageio import DEFAULT_MAX_PIXELS, decode_image
from digitrec.preprocess import find_ink
from digitrec.recognize import Recognition, recognize, render_piece
from digitrec.runtime import Classifier
from digitrec.segment import merge_groups, segment_ink
from digitrec.store.corrections import NONE_LABEL, NewCorrection, parse_label

MAX_IMAGE_BYTES = 2_000_000  # originals above this are stored as a smaller PNG (the inputs are kept exactly)
REDUCED_MAX_SIDE = 1024


def capture(data: bytes, label: str, classifier: Classifier, *, source: str, mode: str = "auto",
            model_version: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
            max_image_bytes: int = MAX_IMAGE_BYTES) -> NewCorrection:
    """Read `data` with `classifier` and build the correction saying it holds `label`.

    Raises ValueError for a bad label and `imageio.ImageError` for bytes that are not a usable image.
    """
    label = parse_label(label)
    recognition = recognize(data, classifier, mode, max_pixels=max_pixels)
    crops = [digit.image for digit in recognition.digits]  # each (28, 28) float32 in [0, 1]
    if (label != NONE_LABEL and len(label) == 1 and len(crops) != 1) or (label == NONE_LABEL and not crops):
        crops = whole_ink_input(data, max_pixels)
    inputs = np.clip(np.rint(np.array(crops, np.float32).reshape(-1, 28, 28) * 255), 0, 255).astype(np.uint8)
    image, reduced = cap_image(data, max_image_bytes, max_pixels)
    return NewCorrection(
        label=label, source=source, image=image, image_size=len(data),
        image_sha256=hashlib.sha256(data).hexdigest(), image_reduced=reduced, inputs=inputs,
        answer=answer_of(recognition), model_version=model_version, mode=mode,
    )


def answer_of(recognition: Recognition) -> dict:
    """What the model answered, as stored with the correction (the result JSON without the debug steps)."""
    answer = recognition.to_json()
    answer.pop("steps", None)
    return answer


def whole_ink_input(data: bytes, max_pixels: int) -> list[np.ndarray]:
    """All the ink in the image rendered as one 28x28 digit (as digit mode does), or [] when there is none."""
    grey = decode_image(data, max_pixels=max_pixels)
    ink = find_ink(grey)
    segmentation = segment_ink(ink)
    if not segmentation.groups:
        return []
    image, _ = render_piece(grey, ink, segmentation, merge_groups(segmentation.groups))
    return [image]


def cap_image(data: bytes, max_bytes: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, bool]:
    """(bytes to store, reduced?): the original when small enough, else a grey PNG of at most 1024 px a side."""
    if len(data) <= max_bytes:
        return data, False
    grey = decode_image(data, max_pixels=max_pixels)  # (H, W) float32 in [0, 1]
    side = REDUCED_MAX_SIDE
    while True:
        scale = min(1.0, side / max(grey.shape))
        small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else grey
        ok, png = cv2.imencode(".png", np.clip(np.rint(small * 255), 0, 255).astype(np.uint8))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        if png.nbytes <= max_bytes or side <= 64:
            return png.tobytes(), True
        side //= 2
