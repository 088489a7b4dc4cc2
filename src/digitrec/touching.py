"""Digits written touching, drawn from real digits, for teaching the model what a cut of them looks like.

Two kinds of crop come from one row of touching digits (`touching_row`):

- the whole row read as one crop (`whole_row`): two or three digits are not one digit, though the model
  read such a crop as one sure digit ("14" as 4, "711" as 7), so a reading that cut it had to beat a
  confident whole; a negative (`negatives.EXTRA_FAMILIES`);
- one digit cut out of the row with a sliver of its neighbour (`cut_digit`), as the cut search
  (`split`) cuts it: still that digit. Taught only the first, the model doubted such pieces too.

Both are drawn by `trust_scratch extra` (its EXTRA_CROPS). Pure numpy/OpenCV; no Keras.
"""

from __future__ import annotations

import cv2
import numpy as np

from digitrec.synth import draw_until, on_paper, pipeline_crops, random_paper, tight

HEIGHT = 84  # pixels: digits are drawn at about this height, then photographed by `synth.on_paper`
WITH_A_ONE = 0.5  # the share of whole rows holding a 1: a 1 beside a digit hides in its width
GAPS = (-0.12, 0.02)  # each digit starts this far (x HEIGHT) after the last ends: negative is overlapping
MAX_OVERLAP = 0.35  # ... but never by more than this share of the narrower one: each stays whole to the eye
MAX_SLIVER = 0.3  # a cut digit keeps at most this share of its neighbour's width (its overlap included)


def touching_row(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray, count: int,
                 one: bool = False) -> tuple[np.ndarray, list[tuple[int, int]], list[int]]:
    """`count` real digits written touching in a row -> (ink (h, w) in [0, 1], each digit's columns
    [x0, x1), their labels). one: one of them (at random) is a 1."""
    picks = rng.integers(len(digits), size=count)
    if one:
        picks[rng.integers(count)] = rng.choice(np.flatnonzero(labels == 1))
    inks = []
    for index in picks:
        ink = tight(np.clip(digits[index], 0, 1))
        tall = round(HEIGHT * rng.uniform(0.85, 1.0))
        wide = max(2, round(ink.shape[1] * tall / max(ink.shape[0], 1)))
        inks.append(np.clip(cv2.resize(ink, (wide, tall), interpolation=cv2.INTER_CUBIC), 0, 1))
    canvas = np.zeros((round(HEIGHT * 1.15), sum(ink.shape[1] for ink in inks) + 8), np.float32)
    spans: list[tuple[int, int]] = []
    x = 0
    for number, ink in enumerate(inks):
        h, w = ink.shape
        if number:
            overlap = -rng.uniform(*GAPS) * HEIGHT
            x -= round(min(overlap, MAX_OVERLAP * min(w, inks[number - 1].shape[1])))
        y = canvas.shape[0] - h - int(rng.integers(0, round(0.1 * HEIGHT) + 1))
        canvas[y : y + h, x : x + w] = np.maximum(canvas[y : y + h, x : x + w], ink)
        spans.append((x, x + w))
        x += w
    return canvas, spans, [int(labels[index]) for index in picks]


def whole_row(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Two (mostly) or three digits written touching: the ink of a negative."""
    canvas, _, _ = touching_row(rng, digits, labels, 2 if rng.random() < 0.75 else 3, rng.random() < WITH_A_ONE)
    return tight(canvas)


def cut_digit(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int] | None:
    """One digit of a touching pair, cut out with a straight cut a little into its neighbour -> (ink, its
    label); None when the neighbour overlaps it too much to leave a sliver. The neighbour is never a 1:
    a 1's sliver is the whole 1 (a pair, not a digit)."""
    canvas, spans, truths = touching_row(rng, digits, labels, 2)
    if 1 in truths:
        return None
    keep = int(rng.integers(2))  # 0: the left digit and a sliver of the right one; 1: the other way round
    (x0, x1), (n0, n1) = spans[keep], spans[1 - keep]
    sliver = round(rng.uniform(0.02, 0.1) * HEIGHT)
    if keep == 0:
        cut = x1 + sliver
        taken = cut - n0
        ink = canvas[:, :cut]
    else:
        cut = max(0, x0 - sliver)
        taken = n1 - cut
        ink = canvas[:, cut:]
    if taken <= 0 or taken > MAX_SLIVER * (n1 - n0):
        return None
    return tight(ink), truths[keep]


def cut_digit_crops(count: int, rng: np.random.Generator, digits: np.ndarray,
                    labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`count` pipeline crops of `cut_digit` -> ((count, 28, 28) float32, labels (count,))."""
    def draw() -> tuple[np.ndarray, int] | None:
        drawn = cut_digit(rng, digits, labels)
        if drawn is None:
            return None
        found = pipeline_crops(on_paper(drawn[0], random_paper(rng), rng), whole=True)
        return (found[0], drawn[1]) if found else None

    made = draw_until(count, draw, "no cut digit could be drawn: check the digits and labels")
    return np.stack([crop for crop, _ in made]).astype(np.float32), np.array([label for _, label in made])
