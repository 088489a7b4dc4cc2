"""Read the digits in an image: decode -> find ink -> rows and digits -> cut touching ones -> classify -> decide.

The glue between `imageio`, `preprocess`, `segment`, `split` and a `runtime.Classifier`, shared by the CLI,
the web server and the Python API. All crops of one image -- every piece of every way of cutting touching
digits, and the alternative readings -- go to the classifier in one batch; then, per group of touching
digits, the best and second-best ways of cutting it are found (their margin is the segmentation's doubt),
crops the model says are not digits are rejected, and each row is read left to right.

What an answer says (`Recognition.reason`): None (a plain answer), "no_ink" (nothing found), "not_a_digit"
(ink found, all of it rejected), "several_digits" (digit mode, but several digits are there: answer
flagged), "several_lines" (rows > 1: `number` is null, read `lines`), "unsure" (answer flagged).
Thresholds come from the model (`runtime.decision_thresholds`), so a retrained model carries its own.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitrec.imageio import DEFAULT_MAX_PIXELS, decode_image
from digitrec.preprocess import DENSE_SHARE, MAX_BOLD_SHARE, InkMap, find_ink, other_polarity, render_digit
from digitrec.runtime import Classifier, Scores, Thresholds, classify, decision_thresholds
from digitrec.segment import Group, Segmentation, group_mask, has_label, merge_groups, segment_ink, split_group
from digitrec.split import (
    Piece,
    best_readings,
    cut_paths,
    ink_runs,
    lattice_pieces,
    two_strokes_share,
    upright_stroke_at_end,
)

log = logging.getLogger(__name__)

__all__ = ["MAX_DIGITS", "MODES", "DigitResult", "Line", "Recognition", "recognize", "split_group"]

MODES = ("auto", "digit", "number")
MAX_DIGITS = 32  # bound the work one image can cause; a reading cut here says `truncated`
MAX_CROPS = 600  # bound the crops one image sends to the classifier (pieces of touching digits)
# The default low-confidence threshold (a model's model.json may set its own: `decision_thresholds`).
# Measured with benchmarks/real_images.py on fresh renderings: 0.90 flags 1.4% of the bundled model's single
# digits and catches 57% of its errors; the rest are confident mistakes no threshold separates.
LOW_CONFIDENCE = Thresholds().low_confidence
FRAMED_SHARE = 0.5  # nothing found, and this much of the ink lay along the frame: try the other polarity
SPLIT_ASPECT = 0.55  # a group wider than this (width / height) may be touching digits: try cutting it ...
CONTEXT_GROUPS = 3  # ... and, in an image of at least this many groups, ...
CONTEXT_WIDER = 1.4  # ... only if it is this much wider than their median
MERGE_ASPECT = 1.1  # pieces whose union is narrower than this (width / height) may be one digit
# How a piece of a group is scored (log space, added over the pieces of a reading):
DIGIT_COST = 0.15  # each extra digit of a reading costs this (log units): cutting one digit in two is never free
WIDE_ASPECT = 1.45  # a piece wider than this (x its group's height) is likely two digits read as one ...
WIDE_COST = 2.0  # ... and pays this much per unit of aspect beyond it
# ... or beyond the widest its class is written: the 99th percentile of width / height of each digit's ink
# in MNIST's training set (a "4" wider than 1.25 x its row's height is likely a "4" and a touching neighbour;
# the 95th cut 1 in 200 single MNIST test digits in two: a slanted 1, a wide 9).
CLASS_WIDEST = np.array([1.43, 0.95, 1.67, 1.25, 1.25, 1.67, 1.11, 1.25, 1.25, 1.05])
NARROW_ASPECT = 0.4  # a piece narrower than this that is not read as a 1 is likely a fragment ...
ONE_HEIGHT = 0.8  # ... and so is a 1 shorter than this (x its group's height) ...
FRAGMENT_COST = 4.0  # ... paying this much per unit short of it
# A thing this narrow (width / height) could be one digit: if the model says it is not a digit, its pieces
# do not outvote it unless each is a confident digit (not_digit under this fraction of the model's threshold):
WHOLE_ASPECT = 1.1
PIECE_NOT_DIGIT = 0.5
SURE_ASPECT = 1.0  # a group no wider than this (x its height) read uncut as a confident digit is not cut ...
ALONE_NOT_DIGIT = 0.1  # ... when its not-a-digit score is under this fraction of the model's threshold
VERY_SURE = 0.99  # a piece read this surely (and not-a-digit under ALONE_NOT_DIGIT of the threshold) is a digit
CUT_CONFIDENCE = 0.95  # pieces read this surely may be digits though one of them keeps a sliver of its neighbour
TOUCH_CONFIDENCE = 0.85  # a piece cut off where it meets the rest at one stroke need only be this sure (outvoting)
RECUT_ASPECT = 0.3  # a group the model rejects whole is cut from this (x its height): "11" written touching
FLAT_ZERO = 1.1  # a lone non-digit cut into 0s each this much wider than tall is a sign's loops (infinity)
MIN_ONES = 3  # a lone non-digit cut into this many pieces or more, all but one read as 1s, is strokes
NOISE_DIGITS = 4  # a reading of this many digits or more, most of them guesses (median confidence under ...
NOISE_CONFIDENCE = 0.5  # ... this), is specks read as digits, not a number
ABSORB_SHAPE = 0.3  # a piece whose shape penalties (log units) exceed this is no confident digit for `absorbed`
ABSORB_COST = 0.5  # a piece that absorbed a confident neighbour (`absorbed`) pays this (log units)
DOUBLE_ONE = 0.6  # a crop read as a 1 whose rows cross two strokes in this share of them is two 1s ...
DOUBLE_ONE_COST = 0.5  # ... and pays this (log units): the model reads a "11" as a sure 1
TOUCH_INK = 0.35  # a cut in ink over at most this share of its rows meets the strokes it crosses at a point
# The segmentation's certainty is a logistic of the margin between the best and second-best readings:
SEGMENTATION_TEMPERATURE = 0.1  # a margin of 0.1 (log units) -> 73%, 0.3 -> 95%, 0.5 -> 99%


@dataclass(frozen=True)
class DigitResult:
    """One digit read."""

    digit: int
    confidence: float
    box: tuple[int, int, int, int]  # x, y, w, h in the original image's pixels
    probabilities: tuple[float, ...]  # 10
    image: np.ndarray  # (28, 28) float32 in [0, 1]: what the model saw
    low_confidence: bool
    not_digit: float = 0.0  # the model's probability that this crop is not a digit

    def to_json(self) -> dict[str, Any]:
        return {"digit": self.digit, "confidence": self.confidence, "box": list(self.box),
                "probabilities": list(self.probabilities), "low_confidence": self.low_confidence,
                "not_digit": self.not_digit}


@dataclass(frozen=True)
class Line:
    """One row of digits, read left to right."""

    text: str
    digits: tuple[int, ...]  # indices into `Recognition.digits`
    box: tuple[int, int, int, int]  # x, y, w, h in the original image's pixels: the union of its digits

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "digits": list(self.digits), "box": list(self.box)}


@dataclass(frozen=True)
class Recognition:
    """What an image holds: one digit, a number, rows of digits, or nothing ("no digit": `digits == ()`)."""

    digit: int | None  # the digit when exactly one was read
    number: str | None  # the single row's digits, left to right; None when none, or several rows
    confidence: float | None  # the digits' confidences multiplied, times the segmentation's certainty
    digits: tuple[DigitResult, ...]  # all digits read, row by row, each row left to right
    mode: str  # the mode actually used: "digit" or "number"
    width: int  # of the decoded image
    height: int
    steps: dict[str, Any]  # JSON-able record of what preprocessing found and did
    reason: str | None = None  # None, "no_ink", "not_a_digit", "several_digits", "several_lines", "unsure"
    lines: tuple[Line, ...] = ()  # the rows, top to bottom
    truncated: bool = False  # the reading was cut at MAX_DIGITS
    low_confidence: bool = True  # the answer should not be trusted as it is (always so when nothing was read)

    def to_json(self) -> dict[str, Any]:
        return {"digit": self.digit, "number": self.number, "confidence": self.confidence,
                "digits": [digit.to_json() for digit in self.digits], "mode": self.mode,
                "width": self.width, "height": self.height, "reason": self.reason,
                "lines": [line.to_json() for line in self.lines], "truncated": self.truncated,
                "low_confidence": self.low_confidence, "steps": self.steps}


def as_grey(image: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3|4) RGB(A), uint8 or float in [0, 1] -> (H, W) float32 grey in [0, 1]."""
    array = np.asarray(image)
    floating = array.dtype.kind == "f"
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype.kind in "iu":
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    elif array.dtype.kind == "f" and array.dtype.itemsize > 4:
        array = np.clip(array, -1.0, 2.0)  # values beyond float32's range would overflow (a warning) in the cast
    array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if floating:  # float32 near its limits (1e38) would overflow in the channel and alpha sums below
        array = np.clip(array, -1.0, 2.0)
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



@dataclass(frozen=True)
class Choice:
    """One digit of the reading: its crop's row in the batch, and the piece it is."""

    at: int
    piece: Group


def uncut_piece(pieces: list[Piece], nodes: int) -> int:
    """The index of the piece that is the whole group (from the lattice's first node to its last)."""
    return next(i for i, piece in enumerate(pieces) if piece.start == 0 and piece.stop == nodes - 1)


def plan_group(segmentation: Segmentation, group: Group, cut: bool, max_cuts: int,
               strokes: list[int] | None = None, min_aspect: float = SPLIT_ASPECT,
               inked: list[float] | None = None) -> tuple[list[Piece], int]:
    """A group -> (its lattice of pieces, number of lattice nodes). Uncut groups (cut False, or no wider
    than `min_aspect` x its height) are one piece.

    strokes: if given, filled with the number of strokes (runs of ink) each node's cut crosses (0 for the
    group's edges); inked: with the share of each node's cut that runs in ink (a point where strokes touch,
    or along a stroke)."""
    x, y, w, h = group.box
    if not cut or w <= min_aspect * h or max_cuts <= 0:
        if strokes is not None:
            strokes[:] = [0, 0]
        if inked is not None:
            inked[:] = [0.0, 0.0]
        return [Piece(0, 1, group)], 2
    mask = group_mask(segmentation, group)[y : y + h, x : x + w]  # (h, w)
    cuts = cut_paths(mask, max_cuts=max_cuts)
    crossed = [mask[np.arange(h), np.clip(path, 0, w - 1)] for path in cuts]  # (h,) ink along each cut
    if strokes is not None:
        strokes[:] = [0, *(ink_runs(np.stack(crossed)).tolist() if crossed else []), 0]
    if inked is not None:
        inked[:] = [0.0, *(float(c.mean()) for c in crossed), 0.0]
    return lattice_pieces(mask, group, cuts), len(cuts) + 2


def piece_scores(pieces: list[Group], heights: list[int], probabilities: np.ndarray,
                 not_digit: np.ndarray) -> np.ndarray:
    """(n,) how good each crop is as one digit, in log units: the classifier's confidence, its belief that
    the crop is a digit at all, and the shape: a crop much wider than its row is tall holds two digits; a
    narrow one that is not a 1, or a 1 shorter than its row, is a fragment (a cut through a 0 or a 6)."""
    confidence = probabilities.max(axis=1)
    ones = probabilities.argmax(axis=1) == 1
    reference = np.maximum(1, np.array(heights, np.float64))
    aspect = np.array([piece.box[2] for piece in pieces]) / reference
    tall = np.array([piece.box[3] for piece in pieces]) / reference
    widest = np.minimum(WIDE_ASPECT, CLASS_WIDEST[probabilities.argmax(axis=1)])  # (n,)
    shape = (WIDE_COST * np.maximum(0.0, aspect - widest)
             + FRAGMENT_COST * np.where(ones, np.maximum(0.0, ONE_HEIGHT - tall),
                                        np.maximum(0.0, NARROW_ASPECT - aspect)))
    return np.log(np.maximum(confidence, 1e-9)) + np.log(np.maximum(1.0 - not_digit, 1e-9)) - shape


def absorbed(pieces: list[Piece], probabilities: np.ndarray, not_digit: np.ndarray, score: np.ndarray,
             thresholds: Thresholds, strokes: list[int], inked: list[float] | None = None) -> np.ndarray:
    """(len(pieces),) True where a piece holds a neighbour it does not need: it reads as digit d, a part
    of it (from one of its ends to a cut) reads as the same d confidently, the rest is a confident digit
    of its own, a 1, and the cut between them crosses a single stroke (`strokes`: per lattice node), where
    two digits touch: "10" read as 0, a 1 touching a 3 read as 3. The model reads the bigger crop as the
    digit it recognises and ignores a thin stroke beside it; the pieces explain all of its ink. (A cut
    through one digit, taking off its tail or its edge, crosses two strokes or more: a 2's arc and its
    base. Only a 1: with a model that has no not-a-digit output, a digit's edge read as a sure 0, 6 or 9
    beside it cost 4 points of two-row images and 0.6 of single USPS digits.)
    Two 1s touching read as one 1 ("11": the model reads it as a sure 1) absorb each other the same way when
    the cut meets them at a point (`inked`: in ink over at most TOUCH_INK of its rows), not along a bold
    1's length.
    """
    sure = ((probabilities.max(axis=1) >= thresholds.low_confidence)
            & (not_digit < PIECE_NOT_DIGIT * thresholds.not_digit)
            & (score >= math.log(thresholds.low_confidence) - ABSORB_SHAPE))  # (n,) confident, digit-shaped
    digit = probabilities.argmax(axis=1)
    at = {(piece.start, piece.stop): index for index, piece in enumerate(pieces)}
    out = np.zeros(len(pieces), bool)
    for index, piece in enumerate(pieces):
        for middle in range(piece.start + 1, piece.stop):
            left, right = at.get((piece.start, middle)), at.get((middle, piece.stop))
            if left is None or right is None or not (sure[left] and sure[right]) or strokes[middle] > 1:
                continue
            if digit[index] in (digit[left], digit[right]) and digit[left] != digit[right] \
                    and 1 in (digit[left], digit[right]):
                out[index] = True
                break
            if digit[index] == digit[left] == digit[right] == 1 and inked is not None and inked[middle] <= TOUCH_INK:
                out[index] = True
                break
    return out


def doubled_ones(segmentation: Segmentation, crops: list[Group], probabilities: np.ndarray) -> np.ndarray:
    """(len(crops),) True where a crop read as a 1 crosses two strokes in most of its rows (DOUBLE_ONE):
    two 1s touching, or a 1 with its neighbour's edge, not one 1. Only crops read as 1s that are wider than
    a thin stroke are looked at."""
    out = np.zeros(len(crops), bool)
    for index in np.flatnonzero(probabilities.argmax(axis=1) == 1).tolist():
        x, y, w, h = crops[index].box
        if w >= 0.2 * h:
            out[index] = two_strokes_share(group_mask(segmentation, crops[index])[y : y + h, x : x + w]) >= DOUBLE_ONE
    return out


def ones_from_a_digit(scores: Any, start: int, pieces: list[Piece], nodes: int, taken: list[int],
                      thresholds: Thresholds) -> bool:
    """Whether a group cut only for a stroke standing apart (`stroke_apart`) is a digit's sides read as 1s:
    every piece taken is a 1, and the whole (rows from `start` of the batch) reads as another digit that
    the model has almost no doubt is one (not-a-digit under ALONE_NOT_DIGIT of the threshold: a narrow 0
    open at its top cut into ")(", "11"). Two 1s touching read whole as a 1, or as something the model
    doubts is a digit ("11" as a 4 at not-a-digit 0.28)."""
    whole = start + uncut_piece(pieces, nodes)
    ones = all(int(scores.probabilities[start + index].argmax()) == 1 for index in taken)
    return bool(ones and int(scores.probabilities[whole].argmax()) != 1
                and scores.not_digit[whole] < ALONE_NOT_DIGIT * thresholds.not_digit)


def confident_alone(grey: np.ndarray, ink: InkMap, segmentation: Segmentation, classifier: Classifier,
                    thresholds: Thresholds, group: Group) -> tuple[list[tuple[np.ndarray, dict[str, Any]]], Any] | None:
    """A lone group only a bit wider than tall (SPLIT_ASPECT to SURE_ASPECT x its height), read uncut as a
    confident digit -> (its render, its scores); else None (it goes through the cut search).

    Most single digits are such a group; the cut search and its many crops were most of recognize's cost
    for one digit, and a cut reading would have to beat a confident whole by DIGIT_COST anyway.
    """
    _, _, width, height = group.box
    if not SPLIT_ASPECT * height < width <= SURE_ASPECT * height or stroke_apart(segmentation, group):
        return None
    rendered = [render_piece(grey, ink, segmentation, group)]
    scores = classify(classifier, np.stack([rendered[0][0]]))
    if float(scores.probabilities[0].max()) >= thresholds.low_confidence \
            and scores.not_digit[0] < ALONE_NOT_DIGIT * thresholds.not_digit:
        return rendered, scores
    return None


def stroke_apart(segmentation: Segmentation, group: Group) -> bool:
    """Whether a group too narrow to be cut for its width has a straight stroke standing apart at one end
    (`split.upright_stroke_at_end`: a 1 against a neighbour, "14", "81", "11"): worth cutting after all.
    A confident whole does not stop it: the model reads a "14" as a sure 4 and a "11" as a sure 1."""
    x, y, w, h = group.box
    if w <= RECUT_ASPECT * h:
        return False
    # (an uncut group owns all of its box: its window of the labels, not a whole-image mask, on the fast path)
    window = has_label(segmentation.labels[y : y + h, x : x + w], group.labels) if group.bounds is None \
        else group_mask(segmentation, group)[y : y + h, x : x + w]  # (h, w)
    return upright_stroke_at_end(window)


def sure_digit(scores: Any, at: int, thresholds: Thresholds, confidence: float | None = None) -> bool:
    """Whether crop `at` of the batch is a confident digit: over the low-confidence threshold (or
    `confidence`, when given), and a not-a-digit score under PIECE_NOT_DIGIT of the model's threshold."""
    need = thresholds.low_confidence if confidence is None else confidence
    return bool(float(scores.probabilities[at].max()) >= need
                and scores.not_digit[at] < PIECE_NOT_DIGIT * thresholds.not_digit)


def outvoting(whole: Group, scores: Any, at: int, chosen: list[int], thresholds: Thresholds,
              crossed: list[int] | None = None) -> bool:
    """Whether the pieces `chosen` of one thing must not outvote the thing itself.

    The whole (a group, or all the ink) is the size and shape one digit could have, the model scores it
    not a digit, and the pieces are not all confident digits: a star's arms, a heart's halves or a
    letter's strokes each read as some digit, but no digit holds the whole. Digits written close
    together (a "11", a touching "20") pass: each of their pieces is a confident digit. Where every cut
    between the pieces crosses a single stroke (`crossed`, per cut: where two digits touch, not the
    middle of a star or a letter), a piece need only be a likely digit (TOUCH_CONFIDENCE): a shaky "51"
    whose 5 the model gives 0.94 was rejected whole.
    """
    _, _, width, height = whole.box
    if len(chosen) < 2 or width > WHOLE_ASPECT * height or scores.not_digit[at] < thresholds.not_digit:
        return False
    confidence = TOUCH_CONFIDENCE if crossed and max(crossed) <= 1 else None
    return not all(sure_digit(scores, index, thresholds, confidence) for index in chosen)


def cut_digit_kept(scores: Any, at: int, row_size: int, thresholds: Thresholds) -> bool:
    """Whether a digit of a number (row `at` of the batch: cut out of touching ones, or a group as tall as
    its row's), which the model says is not a digit, is kept all the same: it shares its row with other
    digits (`row_size` > 1), and the model is sure which digit it is (over the low-confidence threshold).
    A cut piece may keep a sliver of its neighbour, which the model, taught that two digits together are
    not one, doubts; dropping it would answer a number one digit short. (The answer is flagged: `assemble`.)"""
    return row_size > 1 and float(scores.probabilities[at].max()) >= thresholds.low_confidence


def dropped_a_digit(kept: list[Group], dropped: list[Group]) -> bool:
    """Whether a row whose pieces `kept` are read lost a piece, rejected as not a digit, at least ONE_HEIGHT
    as tall as the tallest of them (a digit the model doubted, not a speck or a tick beside the number)."""
    if not kept or not dropped:
        return False
    tallest = max(group.box[3] for group in kept)
    return any(group.box[3] >= ONE_HEIGHT * tallest for group in dropped)


def strokes_read_as_ones(scores: Any, at: int, chosen: list[int], thresholds: Thresholds) -> bool:
    """Whether a lone group's cut reading is a scribble's or a letter's strokes, each read as a 1: the
    whole (row `at` of the batch) is not a digit, and the cut gives MIN_ONES pieces or more, all but one
    of them 1s (a zigzag's strokes "1111", a W's "111", an m's "111"). A number written with its digits
    touching is seldom all 1s; "11" and "17" (two pieces) are left to the other rules.
    """
    if len(chosen) < MIN_ONES or scores.not_digit[at] < thresholds.not_digit:
        return False
    ones = scores.probabilities[chosen].argmax(axis=1) == 1  # (len(chosen),)
    if ones.all():
        return True
    if int(ones.sum()) < len(chosen) - 1:
        return False
    # "511", "711", "121": the one that is not a 1 is a very sure digit and every 1 a sure one. (The model,
    # taught that touching digits read whole are not one digit, rejects their whole as it rejects a W's.)
    other = chosen[int(np.argmin(ones))]
    return not (float(scores.probabilities[other].max()) >= VERY_SURE
                and scores.not_digit[other] < ALONE_NOT_DIGIT * thresholds.not_digit
                and all(sure_digit(scores, index, thresholds) for index in chosen))


def partly_rejected(scores: Any, at: int, chosen: list[int], thresholds: Thresholds) -> bool:
    """Whether a lone group's cut reading would keep part of a thing the model rejects: the whole (row `at`
    of the batch) is not a digit, and neither is one of its pieces `chosen` ("#" cut into a 7 and a rest,
    a heart into a 7 and a loop, an infinity sign into a 0 and a twist). The pieces are joined by ink, so
    the digit-like one is a part of the non-digit, not a digit beside a smudge: nothing is read. Digits
    written touching pass: each piece of them is a digit (the model rejects their join read whole), or, in
    a number of MIN_ONES digits or more, all but one, and that one is a sure reading (CUT_CONFIDENCE).
    """
    if len(chosen) < 2 or scores.not_digit[at] < thresholds.not_digit:
        return False
    rejected = scores.not_digit[chosen] >= thresholds.not_digit  # (len(chosen),)
    if int(rejected.sum()) != 1 or len(chosen) < MIN_ONES:
        return bool(rejected.any())
    # One digit of a number written touching ("3653") may keep a sliver of its neighbour, which the model
    # doubts: where the reading has MIN_ONES digits or more, each read at CUT_CONFIDENCE, and the others are
    # digits to the model, it is a number. (Two pieces are a heart's 7 and its loop as often as a pair.)
    return not (float(scores.probabilities[chosen].max(axis=1).min()) >= CUT_CONFIDENCE
                and float(scores.not_digit[chosen][~rejected].max()) < PIECE_NOT_DIGIT * thresholds.not_digit)


def crossing_cuts(scores: Any, at: int, chosen: list[int], crossed: list[int], thresholds: Thresholds) -> bool:
    """Whether a lone group's cut reading splits a thing the model rejects where no two digits touch: the
    whole (row `at` of the batch) is not a digit, every cut between the pieces `chosen` crosses two strokes
    or more (`crossed`: "#" cut between its uprights crosses both bars, an infinity sign cut at its twist
    crosses both loops), and not every piece is a very sure digit (not-a-digit under ALONE_NOT_DIGIT of the
    threshold). Digits written touching meet at one stroke, and where they cross more, each is very sure.
    """
    if len(chosen) < 2 or scores.not_digit[at] < thresholds.not_digit or min(crossed, default=0) < 2:
        return False
    return bool(np.any(scores.not_digit[chosen] >= ALONE_NOT_DIGIT * thresholds.not_digit))


def loops_read_as_zeros(scores: Any, at: int, chosen: list[int], pieces: list[Group], thresholds: Thresholds) -> bool:
    """Whether a lone group's cut reading is a sign's loops, each read as a 0: the whole (row `at` of the
    batch) is not a digit, and every piece is a 0 at least FLAT_ZERO times as wide as it is tall (an
    infinity sign's flat loops read as "00"; a written 0 is taller than wide, and 0s touching stay "00").
    """
    if len(chosen) < 2 or scores.not_digit[at] < thresholds.not_digit:
        return False
    zeros = scores.probabilities[chosen].argmax(axis=1) == 0
    flat = [piece.box[2] >= FLAT_ZERO * piece.box[3] for piece in pieces]
    return bool(zeros.all() and all(flat))


def mostly_not_digits(kept: list[int], rejected: int, scores: Any, thresholds: Thresholds) -> bool:
    """Whether a reading is too doubtful to be a number: the crops `kept` (rows of the batch) passed the
    not-a-digit threshold, `rejected` others of the same reading did not.

    The pieces of a word, a symbol or a scribble each read as some digit, but few of them convincingly:
    as many rejected as kept (a word's letters) unless every kept one is a confident digit (a digit beside
    a smudge), or several kept that are not, on average, confident digits (mean not_digit at or over
    PIECE_NOT_DIGIT of the threshold), or many kept of which most are guesses (NOISE_DIGITS or more, their
    median confidence under NOISE_CONFIDENCE: the specks of grainy or dotted paper, each read as some digit
    at 20-40%). The digits of a real number each pass on their own.
    """
    if len(kept) >= NOISE_DIGITS and float(np.median(scores.probabilities[kept].max(axis=1))) < NOISE_CONFIDENCE:
        return True
    not_digit = scores.not_digit[kept]
    confident = all(float(scores.probabilities[index].max()) >= thresholds.low_confidence for index in kept) \
        and float(not_digit.max()) < PIECE_NOT_DIGIT * thresholds.not_digit
    if rejected >= len(kept) and not confident:
        return True
    return len(kept) >= 2 and float(np.mean(not_digit)) >= PIECE_NOT_DIGIT * thresholds.not_digit


def no_answer(reason: str, mode: str, grey: np.ndarray, steps: dict[str, Any], truncated: bool = False) -> Recognition:
    used = "number" if mode == "number" else "digit"
    height, width = grey.shape
    return Recognition(None, None, None, (), used, width, height, {**steps, "result": reason.replace("_", " ")},
                       reason=reason, lines=(), truncated=truncated, low_confidence=True)


def recognize(image: bytes | np.ndarray, classifier: Classifier, mode: str = "auto", *,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Recognition:
    """Read an image (file bytes, or an array as `as_grey` takes) -> `Recognition`.

    mode: "digit" reads all the ink as one digit (the original's use), flagged "several_digits" when it
    sees more; "number" reads rows of digits; "auto" reads a number when it finds several digits, else a
    digit. Bytes that are not a usable image raise `imageio.ImageError` subclasses.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    grey = decode_image(image, max_pixels=max_pixels) if isinstance(image, bytes | bytearray) else as_grey(image)
    thresholds = decision_thresholds(classifier)
    # 1. ink, 2. rows of digit groups
    ink = find_ink(grey)
    segmentation = segment_ink(ink)
    if not segmentation.groups and segmentation.framed_share >= FRAMED_SHARE:
        # All there was lay along the frame: in a bold digit's tight crop read in the wrong polarity, that is
        # the paper left between the digit and the frame (a 1's margins). The other polarity, when its ink
        # is dense (the digit), is read instead.
        other = other_polarity(ink)
        if other is not None and float(other.mask.mean()) > DENSE_SHARE:
            flipped = segment_ink(other, max_ink=MAX_BOLD_SHARE)
            if flipped.groups:
                other.steps["polarity_flipped"] = True
                ink, segmentation = other, flipped
    steps: dict[str, Any] = {**ink.steps, "groups": len(segmentation.groups), "rows": len(segmentation.rows),
                             "lines_removed": segmentation.lines_removed,
                             "specks_removed": segmentation.specks_removed}
    if not segmentation.groups:
        # A few stray pixels are "no ink"; a tap, a fill, noise or edges that were all discarded are "not a digit".
        return no_answer("not_a_digit" if int(ink.mask.sum()) >= 25 else "no_ink", mode, grey, steps)
    rows, truncated = cap_rows(segmentation.rows)
    # 3. every piece of every way of reading each group, rendered and classified in one batch
    plans: list[tuple[list[Piece], int]] = []
    budget = MAX_CROPS
    # Among several groups, most are single digits: a group no wider than they are is one too.
    every = list(itertools.chain.from_iterable(rows))
    typical = float(np.median([g.box[2] / g.box[3] for g in every])) if len(every) >= CONTEXT_GROUPS else 0.0
    # A lone group a bit wider than tall (most single digits) read uncut as a confident digit is not cut:
    # its reading is that one crop, already classified (one classifier call). An unsure one is cut as before,
    # its crops in one more batch (two calls for that image).
    alone = confident_alone(grey, ink, segmentation, classifier, thresholds, every[0]) \
        if mode != "digit" and len(every) == 1 else None
    recut: set[int] = set()  # ids of the piece lists of groups cut only because the model rejected them whole
    if alone is not None:
        rendered, scores = alone
        crops, heights, plans, whole, merge_option = [every[0]], [every[0].box[3]], [([Piece(0, 1, every[0])], 2)], \
            None, False
    strokes: list[list[int]] = [[0, 0]] * len(plans)  # per group, the strokes each lattice node's cut crosses
    apart: set[int] = set()  # ids of the piece lists of groups cut only for a stroke standing apart at one end
    inked: dict[int, list[float]] = {}  # per piece list: the share of each lattice node's cut in ink
    for row in rows if alone is None else ():
        for group in row:
            _, _, w, h = group.box
            wide = w / h > CONTEXT_WIDER * typical and w > SPLIT_ASPECT * h
            # (a lone group up to SURE_ASPECT is cut for its width only when `confident_alone` doubts it)
            shortcut = len(every) == 1 and w <= SURE_ASPECT * h
            stroke = budget > 0 and (not wide or shortcut) and stroke_apart(segmentation, group)
            strokes.append([])
            shares: list[float] = []
            plan = plan_group(segmentation, group, budget > 0 and (wide or stroke),
                              min(40, round(4 * w / max(1, h)) + 2), strokes[-1],
                              RECUT_ASPECT if stroke else SPLIT_ASPECT, shares)
            inked[id(plan[0])] = shares
            if stroke:
                apart.add(id(plan[0]))
            budget -= len(plan[0])
            plans.append(plan)
    if alone is None:
        crops = [piece.group for pieces, _ in plans for piece in pieces]
        heights = [group.box[3] for group, (pieces, _) in zip(itertools.chain.from_iterable(rows), plans, strict=True)
                   for _ in pieces]
        single = rows[0] if len(rows) == 1 else ()
        merge_option = mode != "number" and looks_like_one_digit(single)
        # The whole ink as one crop: digit mode reads it, a broken digit may be it, and in every mode it is the
        # model's view of the image as one thing (a star, a letter), which its pieces must not outvote (step 5).
        whole = merge_groups(segmentation.groups) if mode == "digit" or merge_option or len(crops) > 1 else None
        if whole is not None:
            crops.append(whole)
            heights.append(whole.box[3])
        rendered = [render_piece(grey, ink, segmentation, crop) for crop in crops]
        scores = classify(classifier, np.stack([image for image, _ in rendered]))
        if mode != "digit":
            crops, heights, rendered, scores, recut = recut_rejected(grey, ink, segmentation, classifier, thresholds,
                                                              every, plans, strokes, crops, heights, rendered,
                                                              scores)
    score = piece_scores(crops, heights, scores.probabilities, scores.not_digit)
    if alone is None:
        score -= DOUBLE_ONE_COST * doubled_ones(segmentation, crops, scores.probabilities)
    offset = 0
    for (pieces, _), crossed in zip(plans, strokes, strict=True):
        if len(pieces) > 2:
            part = slice(offset, offset + len(pieces))
            score[part] -= ABSORB_COST * absorbed(pieces, scores.probabilities[part], scores.not_digit[part],
                                                  score[part], thresholds, crossed, inked.get(id(pieces)))
        offset += len(pieces)
    # 4. per group, the best way of cutting it; its margin over the second best is the segmentation's doubt
    read_rows: list[list[Choice]] = []
    margins: list[float] = []
    start = 0
    plan_iter = iter(plans)
    outvoted = 0  # groups whose pieces read as digits but whose whole is a confident non-digit (step 5)
    cut_apart: set[int] = set()  # batch rows of digits cut out of a group read as several (step 5)
    lone_crossed: list[int] | None = None  # a lone group's cut reading: the strokes each of its cuts crosses
    for row in rows:
        chosen: list[Choice] = []
        for group in row:
            pieces, nodes = next(plan_iter)
            taken, best, second = best_readings(pieces, score[start : start + len(pieces)], nodes, DIGIT_COST)
            if not taken:  # cannot happen (the whole group is always a piece); read it whole
                taken, best, second = [len(pieces) - 1], 0.0, -math.inf
            if id(pieces) in recut and len(taken) > 1 and not all(
                    sure_digit(scores, start + index, thresholds) for index in taken):
                # cut only because the model rejected it whole: its pieces must each be a sure digit
                taken, second = [uncut_piece(pieces, nodes)], -math.inf
            if id(pieces) in apart and len(taken) > 1 and ones_from_a_digit(scores, start, pieces, nodes, taken,
                                                                            thresholds):
                taken, second = [uncut_piece(pieces, nodes)], -math.inf
            # A lone group's pieces must not outvote it; in a row of several, the row's whole is checked below
            # (dropping one group of a number would answer a wrong number, not a rejection).
            if len(taken) > 1 and mode != "digit" and len(every) == 1:
                whole_at, parts_at = start + uncut_piece(pieces, nodes), [start + index for index in taken]
                lone_crossed = [strokes[0][pieces[index].stop] for index in taken[:-1]]
                if outvoting(group, scores, whole_at, parts_at, thresholds, lone_crossed) \
                        or strokes_read_as_ones(scores, whole_at, parts_at, thresholds) \
                        or partly_rejected(scores, whole_at, parts_at, thresholds) \
                        or crossing_cuts(scores, whole_at, parts_at, lone_crossed, thresholds) \
                        or loops_read_as_zeros(scores, whole_at, parts_at, [pieces[index].group for index in taken],
                                               thresholds):
                    outvoted += 1
                    start += len(pieces)
                    continue
            chosen += [Choice(start + index, pieces[index].group) for index in taken]
            if len(taken) > 1:
                cut_apart.update(start + index for index in taken)
            # A group cut only for a stroke standing apart and read whole after all carries no doubt of its
            # own: it would not have been cut for its width (a clean digit's answer is not made unsure).
            if second > -math.inf and not (id(pieces) in apart and len(taken) == 1):
                margins.append(best - second)
            start += len(pieces)
        read_rows.append(chosen)
    several = sum(len(row) for row in read_rows) > 1
    if merge_option and whole is not None:  # (merge_option implies a whole)
        # A few pieces that together are digit-shaped may be one digit with broken strokes: let the
        # classifier choose between "several digits" and "one digit" as it does for cuts.
        separate = float(sum(score[choice.at] for choice in read_rows[0])) - DIGIT_COST * (len(read_rows[0]) - 1)
        merged = float(score[-1])
        margins.append(abs(merged - separate))
        if merged > separate:
            read_rows, several = [[Choice(len(crops) - 1, whole)]], False
    # Digit mode on several pieces the model takes for digits: the whole is a flagged guess ("several_digits",
    # Number mode suggested), not a rejection, even when the whole crop does not look like one digit.
    digits_seen = several and sum(scores.not_digit[choice.at] < thresholds.not_digit for row in read_rows
                                  for choice in row) > 1
    if mode == "digit":
        assert whole is not None
        read_rows, margins = [[Choice(len(crops) - 1, whole)]], []
    elif whole is not None and len(read_rows) == 1 and outvoting(
            whole, scores, len(crops) - 1, [choice.at for choice in read_rows[0]], thresholds, lone_crossed):
        outvoted, read_rows = outvoted + 1, [[]]
    certainty = 1.0 / (1.0 + math.exp(-min(margins, default=math.inf) / SEGMENTATION_TEMPERATURE)) \
        if margins else 1.0
    # 5. reject what the model says is not a digit
    keep = mode == "digit" and digits_seen

    def verdicts(row: list[Choice]) -> list[bool]:
        """Per choice of a row: read (True), or rejected as not a digit."""
        tallest = max((choice.piece.box[3] for choice in row), default=0)  # (a row outvoted whole is empty)
        return [keep or scores.not_digit[choice.at] < thresholds.not_digit or (
                    (choice.at in cut_apart or choice.piece.box[3] >= ONE_HEIGHT * tallest)
                    and cut_digit_kept(scores, choice.at, len(row), thresholds)) for choice in row]

    judged = [list(zip(row, verdicts(row), strict=True)) for row in read_rows]
    rejected = sum(not read for row in judged for _, read in row)
    # A row that loses a piece as tall as the digits kept beside it may have lost a digit: "375" read "35"
    # must not be shown as sure.
    gap_left = any(dropped_a_digit([choice.piece for choice, read in row if read],
                                   [choice.piece for choice, read in row if not read]) for row in judged)
    read_rows = [[choice for choice, read in row if read] for row in judged]
    read_rows = [row for row in read_rows if row]
    if mode != "digit" and read_rows and mostly_not_digits([choice.at for row in read_rows for choice in row],
                                                           rejected, scores, thresholds):
        outvoted, read_rows = outvoted + 1, []
    steps.update(crops=len(crops), rejected=rejected, outvoted=outvoted, segmentation_certainty=round(certainty, 4))
    if not read_rows:
        return no_answer("not_a_digit", mode, grey, steps, truncated)
    kept: list[list[Choice]] = []
    count = 0
    for chosen_row in read_rows:  # the digit limit, row by row
        if count + len(chosen_row) > MAX_DIGITS:
            chosen_row, truncated = chosen_row[: MAX_DIGITS - count], True
        if chosen_row:
            kept.append(chosen_row)
            count += len(chosen_row)
    return assemble(kept, scores.probabilities, scores.not_digit, rendered, ink, grey, mode, thresholds,
                    certainty, several and mode == "digit", truncated, steps, gap_left)


def recut_rejected(grey: np.ndarray, ink: InkMap, segmentation: Segmentation, classifier: Classifier,
                   thresholds: Thresholds, groups: list[Group], plans: list[tuple[list[Piece], int]],
                   strokes: list[list[int]], crops: list[Group], heights: list[int],
                   rendered: list[tuple[np.ndarray, dict[str, Any]]], scores: Any) -> tuple[Any, ...]:
    """Groups left uncut as too narrow for two digits, which the model rejects read whole, are cut after
    all (from RECUT_ASPECT x their height): digits written close enough to touch, "11", are narrower than
    most single digits. `plans` and `strokes` are updated in place; the new pieces are classified in a
    second batch (only images with such a group pay for it). -> (crops, heights, rendered, scores, the ids
    of the recut groups' piece lists), the whole-ink crop (if any) still last."""
    firsts = np.cumsum([0] + [len(pieces) for pieces, _ in plans])
    redo = [index for index, group in enumerate(groups)
            if len(plans[index][0]) == 1 and scores.not_digit[firsts[index]] >= thresholds.not_digit
            and group.box[2] > RECUT_ASPECT * group.box[3]]
    if not redo:
        return crops, heights, rendered, scores, set()
    for index in redo:
        _, _, w, h = groups[index].box
        strokes[index] = []
        plans[index] = plan_group(segmentation, groups[index], True, round(4 * w / max(1, h)) + 2, strokes[index],
                                  RECUT_ASPECT)
    known = {id(crop): at for at, crop in enumerate(crops)}
    extra = [crop for crop in crops[firsts[-1]:]]  # the whole-ink crop, if any
    new_crops = [piece.group for pieces, _ in plans for piece in pieces] + extra
    new_heights = [group.box[3] for group, (pieces, _) in zip(groups, plans, strict=True) for _ in pieces] \
        + heights[firsts[-1]:]
    fresh = [crop for crop in new_crops if id(crop) not in known]
    fresh_rendered = [render_piece(grey, ink, segmentation, crop) for crop in fresh]
    fresh_scores = classify(classifier, np.stack([image for image, _ in fresh_rendered]))
    at_fresh = {id(crop): at for at, crop in enumerate(fresh)}
    probabilities, not_digit, new_rendered = [], [], []
    for crop in new_crops:
        if id(crop) in known:
            at = known[id(crop)]
            probabilities.append(scores.probabilities[at])
            not_digit.append(scores.not_digit[at])
            new_rendered.append(rendered[at])
        else:
            at = at_fresh[id(crop)]
            probabilities.append(fresh_scores.probabilities[at])
            not_digit.append(fresh_scores.not_digit[at])
            new_rendered.append(fresh_rendered[at])
    return (new_crops, new_heights, new_rendered, Scores(np.stack(probabilities), np.array(not_digit, np.float32)),
            {id(plans[index][0]) for index in redo})


def cap_rows(rows: tuple[tuple[Group, ...], ...]) -> tuple[list[tuple[Group, ...]], bool]:
    """At most MAX_DIGITS groups, row by row (each group is at least one digit); True when cut."""
    capped: list[tuple[Group, ...]] = []
    count = 0
    for row in rows:
        room = MAX_DIGITS - count
        if room <= 0:
            return capped, True
        capped.append(row[:room])
        count += len(capped[-1])
        if len(row) > room:
            return capped, True
    return capped, False


def assemble(rows: list[list[Choice]], probabilities: np.ndarray, not_digit: np.ndarray,
             rendered: list[tuple[np.ndarray, dict[str, Any]]], ink: InkMap, grey: np.ndarray, mode: str,
             thresholds: Thresholds, certainty: float, several_digits: bool, truncated: bool,
             steps: dict[str, Any], gap_left: bool = False) -> Recognition:
    """The chosen crops, row by row -> the `Recognition` with its lines, flags and reason. gap_left: a
    digit-sized piece of a row was rejected (`dropped_a_digit`): the answer is unsure."""
    height, width = grey.shape
    digits: list[DigitResult] = []
    lines: list[Line] = []
    render_steps = []
    for row in rows:
        indices = []
        for choice in row:
            probs = probabilities[choice.at]
            confidence = float(np.max(probs))
            indices.append(len(digits))
            digits.append(DigitResult(
                int(np.argmax(probs)), confidence, original_box(choice.piece, ink.scale, grey.shape),
                tuple(float(p) for p in probs), rendered[choice.at][0], confidence < thresholds.low_confidence,
                float(not_digit[choice.at])))
            render_steps.append(rendered[choice.at][1])
        boxes = [digits[index].box for index in indices]
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
        lines.append(Line("".join(str(digits[index].digit) for index in indices), tuple(indices),
                          (x0, y0, x1 - x0, y1 - y0)))
    steps["render"] = render_steps  # per digit read
    confidence = float(np.prod([digit.confidence for digit in digits])) * certainty
    unsure = (any(digit.low_confidence or digit.not_digit >= thresholds.not_digit for digit in digits)
              or certainty < thresholds.low_confidence or several_digits or gap_left)
    reason = ("several_digits" if several_digits else "several_lines" if len(lines) > 1
              else "unsure" if unsure else None)
    used = mode if mode != "auto" else ("digit" if len(digits) == 1 else "number")
    number = lines[0].text if len(lines) == 1 else None
    return Recognition(digits[0].digit if len(digits) == 1 else None, number, confidence, tuple(digits), used,
                       width, height, steps, reason=reason, lines=tuple(lines), truncated=truncated,
                       low_confidence=unsure)


def render_piece(grey: np.ndarray, ink: InkMap, segmentation: Segmentation,
                 piece: Group) -> tuple[np.ndarray, dict[str, Any]]:
    """One group -> ((28, 28) float32 model input, render steps)."""
    return render_digit(grey, ink, original_box(piece, ink.scale, grey.shape), group_mask(segmentation, piece))
