"""Things that are not digits, drawn as a user would draw them, for teaching the model to say so.

Families (`FAMILIES`), each an image-level ink generator (`synth` puts the ink on paper and reads it back
through the pipeline, so a tap arrives as the big disc the pipeline makes of it):

- letters from TrueType/OpenType fonts, wobbled and slanted like handwriting, and from OpenCV's Hershey
  stroke fonts drawn with a pen; letters that really look like digits (O, Q, D, l, I, i, j, J, S, s, Z,
  z, B, b, g, q, G, y) are left out: reading them as digits is allowed;
- marks and symbols drawn with pen strokes: + x = check-mark star smiley arrows hash asterisk ~ ^ < >
  heart infinity triangle square diamond, dots, taps and dashes;
- scribbles and hatching; fills, blobs and ink spills;
- digit fragments (half a digit, the join of two neighbours: what a bad cut of touching digits makes);
- touching digits read whole (`touching_digits`: "14" read as one 4, "59" as a 5), used only by
  `trust_scratch extra`; such a crop is a negative only when the pipeline finds one group in it (`WHOLE_ONLY`);
- paper with nothing written: ruled lines, grid, a paper edge, a shadow, noise.

Shapes that *are* digits are avoided: no circles or ellipses (0), no lone near-vertical strokes (1).
Families and fonts are split into a training set and a held-out set (`HELD_OUT_FAMILIES`, `font_files`)
so the benchmark measures rejection of things the model never saw. Pure numpy/OpenCV/Pillow; no Keras.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from digitrec import touching
from digitrec.synth import (
    Pen,
    affine_points,
    draw_strokes,
    draw_until,
    elastic,
    on_paper,
    pipeline_crops,
    random_paper,
    tight,
)

NEGATIVE_LETTERS = "ACEFHKLMNPRTUVWXYacdefhkmnprtuvwx"
FONT_SYMBOLS = "#%&@+*=<>~^×÷±≠→←↑↓✓✗★☆☺☹♥♦♣♠∞"
FONT_DIRS = ("/usr/share/fonts",)
# Font families never used in training: the benchmark's letters come from these.
HELD_OUT_FONTS = ("ComicNeue", "URWGothic", "URWBookman", "P052", "NimbusMonoPS", "NimbusSansNarrow")
HERSHEY_TRAIN = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
                 cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)
HERSHEY_HELD_OUT = (cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_SCRIPT_COMPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL)


@lru_cache(maxsize=2)
def font_files(held_out: bool = False) -> tuple[str, ...]:
    """Latin text fonts on this machine: the training ones, or the held-out families."""
    files = []
    for folder in FONT_DIRS:
        for path in sorted(Path(folder).rglob("*")):
            if path.suffix.lower() not in (".ttf", ".otf"):
                continue
            name = path.name
            # Noto ships a font per script; only its Latin Sans/Serif have the letters we draw.
            if name.startswith("Noto") and not name.startswith(("NotoSans-", "NotoSerif-", "NotoSansMono-")):
                continue
            if name.startswith(("StandardSymbols", "D050000L", "DejaVuMathTeXGyre")):
                continue
            if name.startswith(HELD_OUT_FONTS) == held_out:
                files.append(str(path))
    return tuple(files)


@dataclass(frozen=True)
class Source:
    """What a generator may draw from."""

    fonts: tuple[str, ...]  # font files for letters and symbols
    hershey: tuple[int, ...]  # OpenCV stroke fonts
    digits: np.ndarray | None = None  # (N, 28, 28) float32 ink of real digits, for fragments
    labels: np.ndarray | None = None  # (N,) their digits, for touching digits (which are 1s)


def font_glyph(text: str, font_file: str, rng: np.random.Generator) -> np.ndarray:
    """One glyph from a font file -> ink, wobbled, slanted and re-stroked like handwriting."""
    from PIL import Image, ImageDraw, ImageFont

    size = 96
    font = ImageFont.truetype(font_file, size)
    canvas = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 4), text, fill=255, font=font)
    ink = tight(np.asarray(canvas, np.float32) / 255.0)
    return handwritten(ink, rng)


def hershey_glyph(text: str, font: int, rng: np.random.Generator) -> np.ndarray:
    """Text in an OpenCV Hershey stroke font, drawn with a random pen: the closest thing to handwriting
    a font can give."""
    scale = 3.0
    thickness = int(rng.integers(2, 12))
    if rng.random() < 0.3:
        font |= cv2.FONT_ITALIC
    (width, height), baseline = cv2.getTextSize(text, font, scale, thickness)
    canvas = np.zeros((height + baseline + 4 * thickness + 20, width + 4 * thickness + 20), np.uint8)
    cv2.putText(canvas, text, (2 * thickness + 10, height + 2 * thickness + 10), font, scale, 255, thickness,
                cv2.LINE_AA)
    return handwritten(tight(canvas.astype(np.float32) / 255.0), rng)


def handwritten(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make printed ink look written: tilt and slant, an unsteady hand, a thinner or bolder pen."""
    height, width = ink.shape
    pad = max(height, width) // 3
    ink = np.pad(ink, pad)
    angle, shear = rng.uniform(-12, 12), rng.uniform(-0.3, 0.3)
    centre = (ink.shape[1] / 2, ink.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, rng.uniform(0.9, 1.1))
    matrix[0, 1] += shear
    matrix[0, 2] -= shear * centre[1]
    ink = cv2.warpAffine(ink, matrix, (ink.shape[1], ink.shape[0]), flags=cv2.INTER_LINEAR)
    ink = elastic(ink, rng, amount=rng.uniform(0.0, 0.04))
    change = int(rng.integers(-2, 4))
    if change:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(change) + 1,) * 2)
        thinner = cv2.erode(ink, kernel)
        ink = cv2.dilate(ink, kernel) if change > 0 else (thinner if thinner.max() > 0.5 else ink)
    return tight(ink)


# ------------------------------------------------------------------------------------------ families


def letter(rng: np.random.Generator, source: Source) -> np.ndarray:
    """A letter (or, sometimes, a short word) in a font, handwritten-looking."""
    count = 1 if rng.random() < 0.75 else int(rng.integers(2, 5))
    text = "".join(rng.choice(list(NEGATIVE_LETTERS), count))
    if not source.fonts or (source.hershey and rng.random() < 0.5):
        return hershey_glyph(text, int(rng.choice(source.hershey)), rng)
    return font_glyph(text, str(rng.choice(source.fonts)), rng)


def font_symbol(rng: np.random.Generator, source: Source) -> np.ndarray:
    """A symbol glyph (# % & @ + ★ ☺ → ✓ ...) from a font that has it (drawn as a box when it has not)."""
    from PIL import ImageFont

    if not source.fonts:  # a machine without fonts: draw the symbol with a pen instead
        return drawn_symbol(rng, source, tuple(n for n in SYMBOLS if n not in HELD_OUT_SYMBOLS))
    for _ in range(5):
        font_file = str(rng.choice(source.fonts))
        symbol = str(rng.choice(list(FONT_SYMBOLS)))
        font = ImageFont.truetype(font_file, 32)
        # A font without the glyph draws .notdef (a box); skip those rather than teach boxes as symbols.
        if font.getmask(symbol).getbbox() and font.getmask(symbol).getbbox() != font.getmask("\uffff").getbbox():
            return font_glyph(symbol, font_file, rng)
    return font_glyph("#", str(rng.choice(source.fonts)), rng)


def _star(points: int = 5) -> list[np.ndarray]:
    angles = -math.pi / 2 + np.arange(points + 1) * 2 * math.pi * 2 / points
    return [np.c_[0.5 + 0.5 * np.cos(angles), 0.5 + 0.5 * np.sin(angles)]]


def _star_outline(points: int = 5) -> list[np.ndarray]:
    angles = -math.pi / 2 + np.arange(2 * points + 1) * math.pi / points
    radius = np.where(np.arange(2 * points + 1) % 2 == 0, 0.5, 0.2)
    return [np.c_[0.5 + radius * np.cos(angles), 0.5 + radius * np.sin(angles)]]


def _circle(cx: float, cy: float, r: float, start: float = 0.0, end: float = 2 * math.pi, n: int = 24) -> np.ndarray:
    angles = np.linspace(start, end, n)
    return np.c_[cx + r * np.cos(angles), cy + r * np.sin(angles)]


def _arrow(rng: np.random.Generator) -> list[np.ndarray]:
    angle = rng.choice([0.0, math.pi, math.pi / 2, -math.pi / 2, math.pi / 4, 3 * math.pi / 4])
    direction = np.array([math.cos(angle), math.sin(angle)])
    tail, head = 0.5 - 0.5 * direction, 0.5 + 0.5 * direction
    wing = 0.25
    left = head - wing * (direction @ [[math.cos(0.5), math.sin(0.5)], [-math.sin(0.5), math.cos(0.5)]])
    right = head - wing * (direction @ [[math.cos(-0.5), math.sin(-0.5)], [-math.sin(-0.5), math.cos(-0.5)]])
    return [np.array([tail, head]), np.array([left, head, right])]


# Symbols as pen strokes in a unit box; each returns (strokes, curved).
SYMBOLS: dict[str, Callable[[np.random.Generator], tuple[list[np.ndarray], bool]]] = {
    "plus": lambda rng: ([np.array([[0.5, 0.0], [0.5, 1.0]]), np.array([[0.0, 0.5], [1.0, 0.5]])], False),
    "times": lambda rng: ([np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])], False),
    "equals": lambda rng: ([np.array([[0.0, 0.3], [1.0, 0.3]]), np.array([[0.0, 0.7], [1.0, 0.7]])], False),
    "check": lambda rng: ([np.array([[0.0, 0.55], [0.35, 1.0], [1.0, 0.0]])], False),
    "star": lambda rng: (_star(), False),
    "star outline": lambda rng: (_star_outline(), False),
    "smiley": lambda rng: ([_circle(0.5, 0.5, 0.5), _circle(0.33, 0.35, 0.02, n=2), _circle(0.67, 0.35, 0.02, n=2),
                            _circle(0.5, 0.45, 0.3, 0.4, math.pi - 0.4, 10)], True),
    "arrow": lambda rng: (_arrow(rng), False),
    "asterisk": lambda rng: ([np.array([[0.5, 0.0], [0.5, 1.0]]), np.array([[0.07, 0.25], [0.93, 0.75]]),
                              np.array([[0.93, 0.25], [0.07, 0.75]])], False),
    "tilde": lambda rng: ([np.array([[0.0, 0.6], [0.25, 0.4], [0.5, 0.55], [0.75, 0.65], [1.0, 0.4]])], True),
    "caret": lambda rng: ([np.array([[0.0, 1.0], [0.5, 0.0], [1.0, 1.0]])], False),
    "angle": lambda rng: ([np.array([[1.0, 0.0], [0.0, 0.5], [1.0, 1.0]])[:, :: 1] if rng.random() < 0.5
                           else np.array([[0.0, 0.0], [1.0, 0.5], [0.0, 1.0]])], False),
    "triangle": lambda rng: ([np.array([[0.5, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.0]])], False),
    "square": lambda rng: ([np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])], False),
    "dash": lambda rng: ([np.array([[0.0, 0.5], [1.0, 0.5 + rng.uniform(-0.1, 0.1)]])], False),
    "tap": lambda rng: ([np.array([[0.5, 0.5]])], False),
    "dots": lambda rng: ([np.array([point]) for point in rng.uniform(0, 1, (int(rng.integers(2, 6)), 2))], False),
    "cross-hatch": lambda rng: ([np.array([[0.0, y], [1.0, y]]) for y in (0.2, 0.5, 0.8)]
                                + [np.array([[x, 0.0], [x, 1.0]]) for x in (0.2, 0.5, 0.8)], False),
    # held out of training (HELD_OUT_FAMILIES): the benchmark draws these
    "heart": lambda rng: ([np.array([[0.5, 1.0], [0.05, 0.45], [0.1, 0.1], [0.35, 0.05], [0.5, 0.3], [0.65, 0.05],
                                     [0.9, 0.1], [0.95, 0.45], [0.5, 1.0]])], True),
    "diamond": lambda rng: ([np.array([[0.5, 0.0], [1.0, 0.5], [0.5, 1.0], [0.0, 0.5], [0.5, 0.0]])], False),
    "infinity": lambda rng: ([np.array([[0.5, 0.5], [0.75, 0.25], [1.0, 0.5], [0.75, 0.75], [0.5, 0.5],
                                        [0.25, 0.25], [0.0, 0.5], [0.25, 0.75], [0.5, 0.5]])], True),
    "hash": lambda rng: ([np.array([[0.35, 0.0], [0.3, 1.0]]), np.array([[0.7, 0.0], [0.65, 1.0]]),
                          np.array([[0.0, 0.33], [1.0, 0.33]]), np.array([[0.0, 0.67], [1.0, 0.67]])], False),
}
HELD_OUT_SYMBOLS = ("heart", "diamond", "infinity", "hash")
# Symbols whose natural shape is wide or flat; the rest are drawn in a roughly square box.
FLAT_SYMBOLS = {"dash": (0.05, 0.2), "tilde": (0.2, 0.45), "equals": (0.35, 0.7), "infinity": (0.35, 0.55)}


def drawn_symbol(rng: np.random.Generator, source: Source, names: tuple[str, ...]) -> np.ndarray:
    """A symbol drawn with pen strokes (jittered, tilted, any pen width)."""
    name = str(rng.choice(names))
    strokes, curved = SYMBOLS[name](rng)
    flat = FLAT_SYMBOLS.get(name)
    aspect = 1.0 / rng.uniform(*flat) if flat else rng.uniform(0.7, 1.4)
    jitter = 0.0 if name in ("tap", "dots") else 0.035
    strokes = [affine_points(np.asarray(s) * [aspect, 1.0] / max(aspect, 1.0) + rng.normal(0, jitter, np.shape(s)),
                             rng, 10.0, 0.2) for s in strokes]
    width = rng.uniform(0.1, 0.6) if name in ("tap", "dots") else rng.uniform(0.03, 0.16)
    height = int(rng.integers(40, 120))
    return draw_strokes(strokes, height, Pen(width=width), rng, curved=curved, aspect=1.0)


def scribble(rng: np.random.Generator, source: Source) -> np.ndarray:
    """A scribble: a long, wandering pen stroke, zig-zags, or hatching to fill an area."""
    kind = rng.integers(3)
    if kind == 0:  # wandering stroke with many turns
        points = rng.uniform(0, 1, (int(rng.integers(8, 20)), 2))
    elif kind == 1:  # zig-zag across
        count = int(rng.integers(5, 12))
        points = np.c_[np.linspace(0, 1, count) + rng.normal(0, 0.03, count), np.tile([0.1, 0.9], count)[:count]]
        if rng.random() < 0.5:
            points = points[:, ::-1]
    else:  # hatching a patch, back and forth
        count = int(rng.integers(6, 16))
        points = np.c_[np.tile([0.0, 1.0], count)[:count] + rng.normal(0, 0.05, count), np.linspace(0, 1, count)]
        if rng.random() < 0.5:
            points = points[:, ::-1]
    points = affine_points(points, rng, 20.0, 0.3)
    return draw_strokes([points], int(rng.integers(40, 140)), Pen(width=rng.uniform(0.02, 0.12)), rng,
                        curved=bool(kind != 1 or rng.random() < 0.5))


def blob(rng: np.random.Generator, source: Source) -> np.ndarray:
    """Fills and blobs: a filled irregular shape, an ink spill with tendrils, a marker smudge."""
    size = int(rng.integers(30, 120))
    canvas = np.zeros((size, size), np.float32)
    count = int(rng.integers(5, 12))
    angles = np.sort(rng.uniform(0, 2 * math.pi, count))
    radius = size * 0.45 * rng.uniform(0.4, 1.0, count)
    polygon = np.c_[size / 2 + radius * np.cos(angles), size / 2 + radius * np.sin(angles)].astype(np.int32)
    cv2.fillPoly(canvas, [polygon], 1.0, cv2.LINE_AA)
    if rng.random() < 0.4:  # tendrils of a spill
        for _ in range(int(rng.integers(1, 5))):
            angle = rng.uniform(0, 2 * math.pi)
            end = (size / 2 + size * 0.5 * math.cos(angle), size / 2 + size * 0.5 * math.sin(angle))
            cv2.line(canvas, (size // 2, size // 2), (int(end[0]), int(end[1])), 1.0, max(1, size // 15))
    if rng.random() < 0.3:  # a hole or a lighter patch inside
        cv2.circle(canvas, (size // 2, size // 2), int(size * rng.uniform(0.05, 0.2)), 0.0, -1)
    canvas = np.asarray(cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 3.0)), np.float32)
    return elastic(canvas, rng, 0.05)


def fragment(rng: np.random.Generator, source: Source) -> np.ndarray:
    """Part of a digit, or the join of two neighbouring digits: what a bad cut of touching digits gives."""
    assert source.digits is not None, "fragments need real digits"
    height = 84
    first = cv2.resize(source.digits[rng.integers(len(source.digits))], (height, height), interpolation=cv2.INTER_CUBIC)
    first = np.clip(first, 0, 1)
    for _ in range(10):
        if rng.random() < 0.5:  # the join of two digits
            second = cv2.resize(source.digits[rng.integers(len(source.digits))], (height, height),
                                interpolation=cv2.INTER_CUBIC)
            a, b = tight(first), tight(np.clip(second, 0, 1))
            gap = int(rng.integers(-6, 4))
            tall = max(a.shape[0], b.shape[0])
            pair = np.zeros((tall, a.shape[1] + b.shape[1] + max(gap, 0) + 6), np.float32)
            pair[: a.shape[0], : a.shape[1]] = a
            x = max(0, a.shape[1] + gap)
            pair[: b.shape[0], x : x + b.shape[1]] = np.maximum(pair[: b.shape[0], x : x + b.shape[1]], b)
            middle = a.shape[1] + gap // 2
            half = int(rng.uniform(0.3, 0.5) * (a.shape[1] + b.shape[1]) / 2)
            piece = pair[:, max(0, middle - half) : middle + half]
            left_ink, right_ink = piece[:, : piece.shape[1] // 2].sum(), piece[:, piece.shape[1] // 2 :].sum()
            if min(left_ink, right_ink) < 0.3 * max(left_ink, right_ink):
                continue
        else:  # a part of one digit: a half or a corner
            ink = tight(first)
            h, w = ink.shape
            keep = np.zeros_like(ink, bool)
            side = rng.integers(4)
            cut = rng.uniform(0.35, 0.55)
            if side == 0:
                keep[: int(cut * h)] = True
            elif side == 1:
                keep[int((1 - cut) * h) :] = True
            elif side == 2:
                keep[:, : int(cut * w)] = True
            else:
                keep[:, int((1 - cut) * w) :] = True
            piece = ink * keep
            share = piece.sum() / max(ink.sum(), 1e-6)
            if not 0.2 < share < 0.7:
                continue
        piece = tight(piece)
        # A narrow upright sliver is a "1" to anyone: not a fair negative.
        if piece.shape[1] < 0.45 * piece.shape[0] or piece.max() < 0.5:
            continue
        return piece
    return tight(first[: height // 3])  # fallback: the top third


def touching_digits(rng: np.random.Generator, source: Source) -> np.ndarray:
    """2-3 whole real digits written touching, read as one crop (`touching.whole_row`): not one digit."""
    assert source.digits is not None and source.labels is not None, "touching digits need labelled digits"
    return touching.whole_row(rng, source.digits, source.labels)


def blank_paper(rng: np.random.Generator, source: Source) -> np.ndarray:
    """Paper with nothing written: ruled or squared lines, a paper edge, a shadow, a crease, noise.

    Returned as ink that `on_paper` darkens; the pipeline should find nothing, and whatever it does find
    is not a digit.
    """
    height, width = int(rng.integers(60, 200)), int(rng.integers(60, 200))
    ink = np.zeros((height, width), np.float32)
    kind = rng.integers(5)
    if kind == 0:  # ruled (and sometimes squared) paper
        spacing = int(rng.integers(8, 30))
        strength = rng.uniform(0.2, 0.6)
        ink[int(rng.integers(spacing)) :: spacing, :] = strength
        if rng.random() < 0.4:
            ink[:, int(rng.integers(spacing)) :: spacing] = strength
    elif kind == 1:  # the paper's edge: the table beyond it
        column = int(rng.uniform(0.6, 0.95) * width)
        ink[:, column:] = rng.uniform(0.4, 1.0)
        ink = elastic(ink, rng, 0.02)
    elif kind == 2:  # a shadow (a hand, the phone) falling across
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        edge = rng.uniform(0.3, 0.7) * width + (yy - height / 2) * rng.uniform(-0.5, 0.5)
        ink = np.clip((xx - edge) / rng.uniform(3, 30), 0, 1) * rng.uniform(0.2, 0.6)
    elif kind == 3:  # a fold or crease: a faint thin line at any angle
        angle = rng.uniform(0, math.pi)
        cx, cy = width / 2, height / 2
        length = max(width, height)
        cv2.line(ink, (int(cx - length * math.cos(angle)), int(cy - length * math.sin(angle))),
                 (int(cx + length * math.cos(angle)), int(cy + length * math.sin(angle))), rng.uniform(0.2, 0.5), 1)
    else:  # noise: grain, speckles
        ink = (rng.random((height, width)) < rng.uniform(0.002, 0.05)).astype(np.float32) * rng.uniform(0.3, 1.0)
        ink = np.asarray(cv2.GaussianBlur(ink, (0, 0), rng.uniform(0.3, 1.5)), np.float32)
        ink /= max(float(ink.max()), 1e-6)
    return ink


FAMILIES: dict[str, Callable[[np.random.Generator, Source], np.ndarray]] = {
    "letter": letter,
    "font symbol": font_symbol,
    "symbol": lambda rng, source: drawn_symbol(rng, source, tuple(n for n in SYMBOLS if n not in HELD_OUT_SYMBOLS)),
    "scribble": scribble,
    "blob": blob,
    "fragment": fragment,
    "blank paper": blank_paper,
}
# How often each family is drawn for training (per 100 negatives).
TRAINING_MIX = {"letter": 34, "font symbol": 8, "symbol": 26, "scribble": 10, "blob": 8, "fragment": 8,
                "blank paper": 6}
HELD_OUT_FAMILIES = {
    "held-out symbol": lambda rng, source: drawn_symbol(rng, source, HELD_OUT_SYMBOLS),
}
# Drawn only when asked for (`trust_scratch extra`): not in TRAINING_MIX, which the bundle's pack was made with.
EXTRA_FAMILIES = {"touching digits": touching_digits}
# Families whose image is a negative only read whole as one group: a touching pair's digits apart are digits.
WHOLE_ONLY = {"touching digits"}


def looks_like_a_one(crop: np.ndarray) -> bool:
    """A (28, 28) crop whose ink is a narrow upright bar: a paper edge, an "l", a sliver of a digit read
    this way *is* a 1 to anyone, so it is no fair negative."""
    rows, cols = np.nonzero(crop > 0.3)
    if rows.size == 0:
        return False
    return bool(np.ptp(cols) + 1 < 0.4 * (np.ptp(rows) + 1))


def negative_crops(count: int, rng: np.random.Generator, source: Source, mix: dict[str, int] | None = None,
                   families: dict[str, Callable[[np.random.Generator, Source], np.ndarray]] | None = None,
                   ) -> tuple[np.ndarray, list[str]]:
    """`count` (28, 28) crops the pipeline makes of non-digit images -> ((count, 28, 28) float32, families).

    Each image is drawn by a family chosen per `mix`, put on paper, and read back: all ink as one digit,
    or (when the pipeline finds several groups) one of the groups. Images the pipeline finds empty (most
    blank paper, as it should) are drawn again.
    """
    families = {**FAMILIES, **HELD_OUT_FAMILIES, **EXTRA_FAMILIES, **(families or {})}
    mix = mix or TRAINING_MIX
    names = list(mix)
    weights = np.array([mix[name] for name in names], np.float64)

    def draw() -> tuple[np.ndarray, str] | None:
        name = names[rng.choice(len(names), p=weights / weights.sum())]
        ink = families[name](rng, source)
        if ink.size == 0 or ink.max() <= 0.05:
            return None
        grey = on_paper(ink, random_paper(rng, faint=rng.random() < 0.1), rng)
        found = pipeline_crops(grey, whole=True, groups=True)
        if name in WHOLE_ONLY and len(found) != 1:  # the pipeline found its digits apart: no negative
            return None
        crop = found[int(rng.integers(len(found)))] if found else None
        return None if crop is None or looks_like_a_one(crop) else (crop, name)

    made = draw_until(count, draw, "the pipeline finds no ink in the negatives: check the generators")
    return np.stack([crop for crop, _ in made]).astype(np.float32), [name for _, name in made]
