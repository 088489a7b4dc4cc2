"""Read the digit or number in an image: decode -> find ink -> segment -> render 28x28 -> classify.

The glue between `imageio`, `preprocess`, `segment` and a `runtime.Classifier`, shared by the CLI and the
web server. All digit crops of one image (and the alternative readings of touching digits) go to the
classifier in one batch.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitrec.imageio import DEFAULT_MAX_PIXELS, decode_image
from digitrec.preprocess import InkMap, find_ink, render_digit
from digitrec.runtime import Classifier
from digitrec.segment import Group, Segmentation, group_mask, merge_groups, segment_ink, split_group

log = logging.getLogger(__name__)

MODES = ("auto", "digit", "number")
MAX_DIGITS = 32  # bound the work one image can cause
# Below this top probability a digit is flagged as unsure. Measured, not guessed: benchmarks/real_images.py
# (our pipeline, single-digit USPS renderings pooled). Seed model, seed 0, 9,000 digits: 0.90 flags 5.8% and
# catches 77% of the errors (0.80: 3.8% / 61%; 0.95: 7.9% / 83%). Bundled model, fresh renderings (seed 1,
# 3,000 digits): 0.90 flags 1.4% and catches 57% (0.80: 1.0% / 54%; 0.95: 1.7% / 60%): it is surer when
# right, and its remaining errors are mostly confident ones, which no threshold separates.
LOW_CONFIDENCE = 0.90
# A group wider than this (width / height) may be touching digits: try cutting it.
SPLIT_ASPECT = 1.0
DIGIT_ASPECT = 0.6  # a typical handwritten digit's width / height, to guess how many touch
MERGE_ASPECT = 1.1  # pieces whose union is narrower than this (width / height) may be one digit
SPLIT_MARGIN = 0.05  # each cut must raise the (geometric mean) confidence by this much


@dataclass(frozen=True)
class DigitResult:
    """One digit read."""

    digit: int
    confidence: float
    box: tuple[int, int, int, int]  # x, y, w, h in the original image's pixels
    probabilities: tuple[float, ...]  # 10
    image: np.ndarray  # (28, 28) float32 in [0, 1]: what the model saw
    low_confidence: bool

    def to_json(self) -> dict[str, Any]:
        return {"digit": self.digit, "confidence": self.confidence, "box": list(self.box),
                "probabilities": list(self.probabilities), "low_confidence": self.low_confidence}


@dataclass(frozen=True)
class Recognition:
    """What an image holds: one digit, a number, or nothing ("no digit": `digits == ()`)."""

    digit: int | None  # the digit when exactly one was read
    number: str | None  # all digits read, left to right
    confidence: float | None  # the product of the digits' confidences
    digits: tuple[DigitResult, ...]
    mode: str  # the mode actually used: "digit" or "number"
    width: int  # of the decoded image
    height: int
    steps: dict[str, Any]  # JSON-able record of what preprocessing found and did

    def to_json(self) -> dict[str, Any]:
        return {"digit": self.digit, "number": self.number, "confidence": self.confidence,
                "digits": [digit.to_json() for digit in self.digits], "mode": self.mode,
                "width": self.width, "height": self.height, "steps": self.steps}


def as_grey(image: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3|4) RGB(A), uint8 or float in [0, 1] -> (H, W) float32 grey in [0, 1]."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype.kind in "iu":
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    elif array.dtype.kind == "f" and array.dtype.itemsize > 4:
        array = np.clip(array, -1.0, 2.0)  # values beyond float32's range would overflow (a warning) in the cast
    array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        grey = array[..., 0] * 0.299 + array[..., 1] * 0.587 + array[..., 2] * 0.114  # ITU-R 601
        if array.shape[2] == 4:
            from digitrec.imageio import composite_alpha

            grey = composite_alpha(grey, np.clip(array[..., 3], 0.0, 1.0))
        array = grey
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"expected a non-empty (H, W), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")
    return np.clip(array, 0.0, 1.0).astype(np.float32)


def original_box(group: Group, scale: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A group's analysis-pixel box -> (x, y, w, h) in original pixels, inside the image."""
    x, y, w, h = group.box
    x0, y0 = math.floor(x / scale), math.floor(y / scale)
    x1, y1 = min(shape[1], math.ceil((x + w) / scale)), min(shape[0], math.ceil((y + h) / scale))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def candidate_readings(segmentation: Segmentation, mode: str) -> list[list[tuple[Group, ...]]]:
    """For each group, its alternative readings: uncut first, then cut into 2, 3... touching digits."""
    groups = segmentation.groups
    if mode == "digit":
        return [[(merge_groups(groups),)]]
    readings = []
    for group in groups[:MAX_DIGITS]:
        options: list[tuple[Group, ...]] = [(group,)]
        _, _, w, h = group.box
        if w > SPLIT_ASPECT * h:
            most = min(5, max(2, round(w / (DIGIT_ASPECT * h))))
            for parts in range(2, most + 1):
                pieces = split_group(segmentation, group, parts)
                if len(pieces) == parts:
                    options.append(pieces)
        readings.append(options)
    return readings


def looks_like_one_digit(groups: tuple[Group, ...]) -> bool:
    """2-3 groups that may be one digit with broken strokes (a 5's detached bar, a 4 with a gap).

    Together no wider than a digit, with small gaps, and not all full-height: the digits of a number each
    span the row's height, so "11" or "17" written close together are not offered as one digit.
    """
    if not 2 <= len(groups) <= 3:
        return False
    merged = merge_groups(groups)
    _, _, width, height = merged.box
    gaps = [b.box[0] - (a.box[0] + a.box[2]) for a, b in itertools.pairwise(groups)]
    shortest = min(group.box[3] for group in groups)
    return width <= MERGE_ASPECT * height and max(gaps) <= 0.25 * height and shortest < 0.75 * height


def recognize(image: bytes | np.ndarray, classifier: Classifier, mode: str = "auto", *,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Recognition:
    """Read an image (file bytes, or an array as `as_grey` takes) -> `Recognition`.

    mode: "digit" reads all the ink as one digit (the original's use); "number" reads a row of digits;
    "auto" reads a number when it finds several digits side by side, else a digit.
    Bytes that are not a usable image raise `imageio.ImageError` subclasses.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    grey = decode_image(image, max_pixels=max_pixels) if isinstance(image, bytes | bytearray) else as_grey(image)
    height, width = grey.shape
    # 1. ink, 2. digit groups
    ink = find_ink(grey)
    segmentation = segment_ink(ink)
    steps: dict[str, Any] = {**ink.steps, "groups": len(segmentation.groups),
                             "lines_removed": segmentation.lines_removed,
                             "specks_removed": segmentation.specks_removed}
    if not segmentation.groups:
        used = "number" if mode == "number" else "digit"
        return Recognition(None, None, None, (), used, width, height, {**steps, "result": "no digit"})
    # 3. every alternative reading's crops, rendered and classified in one batch
    readings = candidate_readings(segmentation, mode)
    if mode == "auto" and looks_like_one_digit(segmentation.groups):
        # A few pieces that together are digit-shaped may be one digit with broken strokes: let the
        # classifier choose between "several digits" and "one digit" as it does for cuts.
        readings = [[segmentation.groups, (merge_groups(segmentation.groups),)]]
    pieces = [piece for options in readings for option in options for piece in option]
    rendered = [render_piece(grey, ink, segmentation, piece) for piece in pieces]
    probabilities = classifier.predict_proba(np.stack([image for image, _ in rendered]))  # (N, 10)
    # 4. per group, the reading the classifier is surest of
    chosen = []
    for at, piece in choose_readings(readings, probabilities):
        image, render_steps = rendered[at]
        chosen.append((render_steps, probabilities[at], image, original_box(piece, ink.scale, grey.shape)))
    chosen = chosen[:MAX_DIGITS]
    digits = tuple(
        DigitResult(int(np.argmax(probs)), float(np.max(probs)), box,
                    tuple(float(p) for p in probs), image, bool(np.max(probs) < LOW_CONFIDENCE))
        for _, probs, image, box in chosen
    )
    used = mode if mode != "auto" else ("digit" if len(digits) == 1 else "number")
    confidence = float(np.prod([digit.confidence for digit in digits]))
    number = "".join(str(digit.digit) for digit in digits)
    steps["render"] = [render_steps for render_steps, _, _, _ in chosen]  # per digit read
    return Recognition(digits[0].digit if len(digits) == 1 else None, number, confidence, digits, used,
                       width, height, steps)


def choose_readings(readings: list[list[tuple[Group, ...]]],
                    probabilities: np.ndarray) -> list[tuple[int, Group]]:
    """For each group's alternatives, keep the one with the best geometric-mean confidence, less a margin
    per extra digit; returns (row in `probabilities`, piece) for every digit kept, left to right."""
    kept: list[tuple[int, Group]] = []
    index = 0
    for options in readings:
        best, best_score, best_start = 0, -np.inf, index
        for number, option in enumerate(options):
            confidences = probabilities[index : index + len(option)].max(axis=1)
            score = float(np.exp(np.log(np.maximum(confidences, 1e-9)).mean()))
            score -= SPLIT_MARGIN * (len(option) - 1)  # each extra digit must earn its keep
            if score > best_score:
                best, best_score, best_start = number, score, index
            index += len(option)
        kept += [(best_start + offset, piece) for offset, piece in enumerate(options[best])]
    return kept


def render_piece(grey: np.ndarray, ink: InkMap, segmentation: Segmentation,
                 piece: Group) -> tuple[np.ndarray, dict[str, Any]]:
    """One group -> ((28, 28) float32 model input, render steps)."""
    return render_digit(grey, ink, original_box(piece, ink.scale, grey.shape), group_mask(segmentation, piece))
