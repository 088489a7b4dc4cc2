"""Printed frames around digits: the boxes of a form's fields (a postcode's comb, an exam sheet's answer
box) and a box someone drew round a number.

A frame is one connected piece of ink with four straight sides: a run in the top and in the bottom band of
its box, each spanning most of its width, and a run in the left and in the right band, each spanning most of
its height (a comb's separators are more such upright runs). The digits inside often touch it, and then
frame and digits are one component that reads as nothing the model knows. `remove_frames` takes the
straight runs of such pieces out of the ink mask, so that what was written inside stands alone.

No handwritten digit has four straight sides closing a box: a 7's bar, a 4's crossbar or a 1's stem gives
one or two, and they are neither that straight nor that long.
"""

from __future__ import annotations

import cv2
import numpy as np

from digitrec.preprocess import stroke_width

MIN_SIDE = 20  # analysis pixels: a frame smaller than this holds nothing legible
SIDE_SPAN = 0.8  # each side is one straight run over 80% of the frame's width (or height) ...
SIDE_BAND = 0.15  # ... lying within 15% of that edge of the frame's box ...
SLENDERNESS = 6  # ... and at least 6 times longer than it is thick
TILT = 0.03  # a side may drift this much (x its length) off the straight: a scan or a photo slightly turned
MAX_FILL = 0.5  # a frame is hollow: its ink (sides and what is written in it) fills under half its box
MAX_CANDIDATES = 50  # bound the work: only the largest components can be frames
MAX_CROSSING = 3.0  # a stroke crosses a side in at most this many of its stroke widths
SLIVER_SHARE = 0.8  # a piece left with this much of its ink hugging a removed side is the side's fringe


def straight_runs(piece: np.ndarray, along: int) -> np.ndarray:
    """(h, w) uint8 piece -> its pixels on straight runs along axis `along` (1: horizontal, 0: upright) that
    span SIDE_SPAN of the piece's extent that way, allowing TILT of drift."""
    extent = piece.shape[along]
    length = max(3, round(SIDE_SPAN * extent))
    slack = 2 * max(1, round(TILT * extent)) + 1
    if along == 1:
        run, spread = (length, 1), (1, slack)
    else:
        run, spread = (1, length), (slack, 1)
    # Spread across the run first so a slightly tilted side still holds one unbroken run, then keep only
    # the pixels of the piece itself on it.
    widened = cv2.dilate(piece, cv2.getStructuringElement(cv2.MORPH_RECT, spread))
    opened = cv2.morphologyEx(widened, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, run))
    return opened.astype(bool) & piece.astype(bool)


def separators(upright: np.ndarray, horizontal: np.ndarray) -> np.ndarray:
    """Upright runs inside a frame that reach from its top side to its bottom side: a comb's separators.

    A written 1 stands inside its box and reaches one side at most; a separator meets both.
    """
    kept = np.zeros_like(upright)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(upright.astype(np.uint8), connectivity=8)
    for label in range(1, count):
        x, y, w, h = (int(v) for v in stats[label][:4])
        sides = np.flatnonzero(horizontal[:, x : x + w].any(axis=1))
        if sides.size and y <= sides.min() + 2 and y + h - 1 >= sides.max() - 2:
            kept |= labels == label
    return kept


def first_runs(band: np.ndarray) -> np.ndarray:
    """(n, k) bool, read down each column -> the length of each non-empty column's first run of True."""
    first = band.argmax(axis=0)
    rows = np.arange(band.shape[0])[:, None]
    gaps = (rows >= first) & ~band
    end = np.where(gaps.any(axis=0), gaps.argmax(axis=0), band.shape[0])
    return (end - first)[band.any(axis=0)]


def frame_pixels(piece: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(h, w) uint8 piece (one component in its box) -> the frame's (horizontal, upright) pixels, or None
    when it is no frame."""
    height, width = piece.shape
    if height < MIN_SIDE or width < MIN_SIDE:
        return None
    if piece.mean() > MAX_FILL:
        return None
    band_rows, band_columns = max(2, round(SIDE_BAND * height)), max(2, round(SIDE_BAND * width))
    # Sides only in their bands: inside the box, a tall digit's stem can be as straight as a side.
    horizontal = straight_runs(piece, 1)
    horizontal[band_rows:-band_rows] = False
    upright = straight_runs(piece, 0)
    inner = upright.copy()
    inner[:, :band_columns] = False
    inner[:, -band_columns:] = False
    upright[:, band_columns:-band_columns] = False
    # Each side present, and slender: a printed line is far longer than thick, a bold digit's straightest
    # stretch is not. Its thickness: the first run of its pixels met coming in from the outside, column by
    # column (row by row for the upright sides); the median, so that a digit touching the side does not count.
    sides = ((horizontal[:band_rows], width), (horizontal[-band_rows:][::-1], width),
             (upright[:, :band_columns].T, height), (upright[:, -band_columns:][:, ::-1].T, height))
    for band, extent in sides:
        if not band.any() or np.median(first_runs(band)) > SIDE_SPAN * extent / SLENDERNESS:
            return None
    return horizontal, upright | separators(inner, horizontal)


def without_frame(piece: np.ndarray, horizontal: np.ndarray, upright: np.ndarray) -> np.ndarray:
    """The piece's pixels less its frame's, with the strokes that crossed a side mended across it."""
    ink = piece.astype(bool)
    # Take the frame's anti-aliased fringe too, or it stays behind as hairlines along the sides.
    grow = np.ones((3, 3), np.uint8)
    across = cv2.dilate(horizontal.astype(np.uint8), grow).astype(bool) & ink
    along = cv2.dilate(upright.astype(np.uint8), grow).astype(bool) & ink
    rest = ink & ~across & ~along
    # A stroke crossing a side is closed again over it: vertically over the horizontal sides, sideways over
    # the upright ones, and only on the side's own pixels.
    tall = max(3, int(across.sum(axis=0).max()) + 2)
    wide = max(3, int(along.sum(axis=1).max()) + 2)
    over = cv2.morphologyEx(rest.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((tall, 1), np.uint8)).astype(bool) & across
    beside = cv2.morphologyEx(rest.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((1, wide), np.uint8)).astype(bool) & along
    # Only where a stroke crosses: a stroke running along a side (a 5's back against the box) would
    # otherwise get the whole stretch of side beside it back.
    crossing = MAX_CROSSING * max(stroke_width(rest), 1.0)
    kept = rest | short_pieces(over, crossing, along=1) | short_pieces(beside, crossing, along=0)
    # Slivers of a side's blurred edge left standing beside it read as 1s: drop the pieces lying almost
    # wholly in the side's neighbourhood (a digit that touched the side has most of its ink elsewhere).
    near = cv2.dilate((horizontal | upright).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(kept.astype(np.uint8), connectivity=8)
    inside = np.bincount(labels[near], minlength=count)
    slivers = np.flatnonzero(inside[1:] >= SLIVER_SHARE * stats[1:, cv2.CC_STAT_AREA]) + 1
    return kept & ~np.isin(labels, slivers)


def short_pieces(mask: np.ndarray, limit: float, along: int) -> np.ndarray:
    """The connected pieces of `mask` no longer than `limit` along axis `along` (1: x, 0: y)."""
    _count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    size = stats[:, cv2.CC_STAT_WIDTH if along == 1 else cv2.CC_STAT_HEIGHT]
    keep = np.flatnonzero(size[1:] <= limit) + 1
    return np.isin(labels, keep)


def remove_frames(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(h, w) bool ink mask -> (the mask without frames' sides, number of frames removed)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask, 0
    order = np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1][:MAX_CANDIDATES] + 1
    cleaned = mask.copy()
    removed = 0
    for label in order:
        x, y, w, h = (int(v) for v in stats[label][:4])
        own = labels[y : y + h, x : x + w] == label
        frame = frame_pixels(own.astype(np.uint8))
        if frame is None:
            continue
        kept = without_frame(own, *frame)
        cleaned[y : y + h, x : x + w] &= ~own | kept
        removed += 1
    return cleaned, removed
