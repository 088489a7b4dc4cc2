"""Writing styles MNIST rarely has, generated at stroke level, as training augmentation and as a benchmark.

Two ways, both producing ink images that `synth` puts on paper and reads back through the pipeline:

- templates: a digit as pen strokes in a unit box (x right, y down), every control point jittered, the
  whole tilted and slanted, drawn with a random pen (`TEMPLATES`). Each style has training variants and
  one held-out variant (`HELD_OUT_VARIANT`) that only the benchmark draws, so a style's score is not a
  memorised template;
- edits of real digits: a flag and base added to 1s, a slash through 0s, a bar across 7s (`edit_digit`),
  on MNIST for training and on USPS (other writers) in the benchmark.

Styles: continental 1 (long flag, often a base), slashed zero, open-top 4, 9 with an open "g"-like loop,
7 with a short top bar, crossed 7, thin and faint strokes, bold digits cropped against the border.
Pure numpy/OpenCV; no Keras.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from digitrec.preprocess import to_mnist
from digitrec.synth import Pen, affine_points, draw_strokes, draw_until, on_paper, pipeline_crops, random_paper, tight

Template = Callable[[np.random.Generator], list[np.ndarray]]


def _arc(cx: float, cy: float, rx: float, ry: float, start_deg: float, end_deg: float, n: int = 16) -> np.ndarray:
    """Points on an ellipse, angles in degrees, clockwise on screen (y down) as the angle grows."""
    angles = np.radians(np.linspace(start_deg, end_deg, n))
    return np.c_[cx + rx * np.cos(angles), cy + ry * np.sin(angles)]


def continental_one(rng: np.random.Generator) -> list[np.ndarray]:
    """A 1 with a long, straight flag from the top, down-left at 30-60 degrees; a base half the time.

    (A flatter or longer flag is a 7's bar: the two differ in nothing else.)
    """
    length, angle = rng.uniform(0.22, 0.45), math.radians(rng.uniform(30, 60))
    top = np.array([0.5, 0.0])
    flag = top + np.array([-length * math.cos(angle), length * math.sin(angle)])
    strokes = [np.array([flag, top, [0.5 + rng.uniform(-0.08, 0.08), 1.0]])]
    if rng.random() < 0.5:
        half = rng.uniform(0.15, 0.3)
        strokes.append(np.array([[0.5 - half, 1.0], [0.5 + half, 1.0]]))
    return strokes


def continental_one_curved(rng: np.random.Generator) -> list[np.ndarray]:
    """The flag as a curved upstroke (the pen's lead-in), always a base."""
    length = rng.uniform(0.3, 0.5)
    start = np.array([0.5 - length * 0.8, length * 0.7])
    middle = np.array([0.5 - length * 0.45, length * 0.2])
    half = rng.uniform(0.15, 0.3)
    return [np.array([start, middle, [0.5, 0.0], [0.5, 0.5], [0.5, 1.0]]),
            np.array([[0.5 - half, 1.0 + rng.uniform(-0.03, 0.03)], [0.5 + half, 1.0]])]


def continental_one_serif(rng: np.random.Generator) -> list[np.ndarray]:
    """Held out: a separately drawn flag that starts just below the top, and a base with upturned ends."""
    length = rng.uniform(0.28, 0.45)
    half = rng.uniform(0.18, 0.3)
    return [np.array([[0.5 - length * 0.75, length * 0.65], [0.5, 0.02]]),
            np.array([[0.5, 0.0], [0.48, 1.0]]),
            np.array([[0.5 - half, 0.95], [0.5 - half * 0.8, 1.0], [0.5 + half * 0.8, 1.0], [0.5 + half, 0.95]])]


def slashed_zero(rng: np.random.Generator) -> list[np.ndarray]:
    """An oval with a slash through it, ending on or a little beyond the oval."""
    rx = rng.uniform(0.22, 0.35)
    oval = _arc(0.5, 0.5, rx, 0.5, -90, 275, 24)
    reach = rng.uniform(0.3, 0.75)
    return [oval, np.array([[0.5 - rx * reach * 1.3, 0.5 + reach * 0.6], [0.5 + rx * reach * 1.3, 0.5 - reach * 0.6]])]


def slashed_zero_open(rng: np.random.Generator) -> list[np.ndarray]:
    """The oval not quite closed at the top (or overshooting it), a long slash."""
    rx = rng.uniform(0.22, 0.35)
    start = rng.uniform(-110, -70)
    oval = _arc(0.5, 0.5, rx, 0.5, start, start + rng.uniform(330, 380), 26)
    return [oval, np.array([[0.5 - rx * 1.2, 0.95], [0.5 + rx * 1.2, 0.05]])]


def slashed_zero_squared(rng: np.random.Generator) -> list[np.ndarray]:
    """A 0 with straight sides and rounded corners (a superellipse, drawn from the top) and a slash:
    the zero of people who write in boxes, on forms and in code."""
    rx = rng.uniform(0.2, 0.34)
    power = 2.0 / rng.uniform(3.0, 6.0)  # 1 would be an ellipse; smaller is squarer
    angles = np.radians(np.linspace(-90, 270 + rng.uniform(-10, 15), 32))
    cos, sin = np.cos(angles), np.sin(angles)
    box = np.c_[0.5 + rx * np.sign(cos) * np.abs(cos) ** power, 0.5 + 0.5 * np.sign(sin) * np.abs(sin) ** power]
    reach = rng.uniform(0.5, 0.95)
    return [box, np.array([[0.5 - rx * reach, 0.5 + reach * 0.45], [0.5 + rx * reach, 0.5 - reach * 0.45]])]


def slashed_zero_boxy(rng: np.random.Generator) -> list[np.ndarray]:
    """Held out: a squarish 0 (straight sides) with a slash from corner to corner."""
    w = rng.uniform(0.2, 0.32)
    box = np.array([[0.5, 0.0], [0.5 + w, 0.1], [0.5 + w, 0.9], [0.5, 1.0], [0.5 - w, 0.9], [0.5 - w, 0.1], [0.5, 0.0]])
    return [box, np.array([[0.5 - w * 0.9, 0.85], [0.5 + w * 0.9, 0.15]])]


def open_four(rng: np.random.Generator) -> list[np.ndarray]:
    """A 4 whose left stroke and stem do not meet at the top: down, across, then the stem."""
    bar = rng.uniform(0.5, 0.7)
    left = rng.uniform(0.05, 0.2)
    stem = rng.uniform(0.55, 0.7)
    return [np.array([[left + rng.uniform(0, 0.1), 0.0], [left, bar], [stem + rng.uniform(0.1, 0.25), bar]]),
            np.array([[stem, rng.uniform(0.0, 0.2)], [stem - rng.uniform(0, 0.08), 1.0]])]


def open_four_round(rng: np.random.Generator) -> list[np.ndarray]:
    """A 4 written like a "u" with a long right stem (the shape of a y or a Cyrillic ch)."""
    bar = rng.uniform(0.45, 0.62)
    stem = rng.uniform(0.6, 0.72)
    return [np.array([[0.12, 0.0], [0.12, bar - 0.12], [0.3, bar + 0.02], [stem, bar - 0.05], [stem, 0.0]]),
            np.array([[stem, 0.0], [stem - rng.uniform(0, 0.06), 1.0]])]


def open_four_slanted(rng: np.random.Generator) -> list[np.ndarray]:
    """Held out: the left stroke a long diagonal, the bar overshooting the stem, the stem from above the bar."""
    bar = rng.uniform(0.55, 0.7)
    return [np.array([[0.35, 0.0], [0.0, bar], [0.9, bar]]), np.array([[0.62, 0.25], [0.6, 1.0]])]


def open_nine(rng: np.random.Generator) -> list[np.ndarray]:
    """A 9 like a "g": a round head, then a tail that hooks back to the left."""
    r = rng.uniform(0.2, 0.28)
    head = _arc(0.42, r + 0.02, r, r, 0, -360, 20)
    stem = 0.42 + r
    tail = np.array([[stem, r], [stem, 0.75], [stem - 0.15, 1.0], [0.12, rng.uniform(0.85, 0.98)]])
    return [np.vstack([head, tail[1:]])]


def open_nine_gap(rng: np.random.Generator) -> list[np.ndarray]:
    """A 9 whose head is open at the top right (a "c" beside the stem), the stem straight or hooked."""
    r = rng.uniform(0.2, 0.28)
    start = rng.uniform(-70, -30)
    head = _arc(0.4, r + 0.02, r, r, start, start - rng.uniform(260, 300), 18)
    stem = 0.4 + r + rng.uniform(0.0, 0.06)
    end = [[stem - 0.05, 1.0]] if rng.random() < 0.5 else [[stem, 0.85], [stem - 0.25, 0.98]]
    return [head, np.array([[stem, 0.0], [stem, 0.5], *end])]


def open_nine_loop(rng: np.random.Generator) -> list[np.ndarray]:
    """Held out: an open head and a tail that curls far to the left, as in cursive."""
    r = rng.uniform(0.2, 0.26)
    head = _arc(0.42, 0.26, r, 0.24, -40, -320, 18)
    return [head, np.array([[0.42 + r, 0.05], [0.42 + r, 0.6], [0.5, 0.9], [0.3, 1.0], [0.05, 0.9], [0.15, 0.75]])]


def short_bar_seven(rng: np.random.Generator) -> list[np.ndarray]:
    """A 7 whose top bar is short (a fifth to a third of the height); crossed half the time."""
    bar = rng.uniform(0.2, 0.35)
    right = 0.5 + bar / 2
    foot = right - rng.uniform(0.1, 0.35)
    strokes = [np.array([[right - bar, rng.uniform(-0.03, 0.03)], [right, 0.0], [foot, 1.0]])]
    if rng.random() < 0.5:
        mid = (right + foot) / 2
        strokes.append(np.array([[mid - 0.15, 0.5], [mid + 0.15, 0.5]]))
    return strokes


def short_bar_seven_wave(rng: np.random.Generator) -> list[np.ndarray]:
    """A short, wavy bar and a nearly upright stem."""
    bar = rng.uniform(0.22, 0.35)
    right = 0.5 + bar / 2
    return [np.array([[right - bar, 0.05], [right - bar / 2, -0.02], [right, 0.02], [right - 0.05, 0.5],
                      [right - 0.12, 1.0]])]


def short_bar_seven_tick(rng: np.random.Generator) -> list[np.ndarray]:
    """Held out: a short bar with a downward tick at its start, the stem curving at the foot."""
    bar = rng.uniform(0.22, 0.33)
    right = 0.5 + bar / 2
    return [np.array([[right - bar, 0.12], [right - bar, 0.0], [right, 0.0], [right - 0.15, 0.6], [right - 0.2, 1.0]])]


def crossed_seven(rng: np.random.Generator) -> list[np.ndarray]:
    """A 7 with a full bar and a bar across its stem."""
    width = rng.uniform(0.45, 0.7)
    left = 0.5 - width / 2
    foot = left + width - rng.uniform(0.15, 0.4)
    mid = (left + width + foot) / 2
    return [np.array([[left, 0.0], [left + width, 0.0], [foot, 1.0]]),
            np.array([[mid - rng.uniform(0.12, 0.22), 0.5], [mid + rng.uniform(0.12, 0.22), 0.5]])]


def crossed_seven_hook(rng: np.random.Generator) -> list[np.ndarray]:
    """Held out: a bar that starts with a small hook, a curved stem, the cross bar low."""
    return [np.array([[0.2, 0.1], [0.25, 0.0], [0.8, 0.0], [0.55, 0.5], [0.45, 1.0]]),
            np.array([[0.35, 0.6], [0.7, 0.55]])]


# style -> (digit, training variants, held-out variant)
TEMPLATES: dict[str, tuple[int, tuple[Template, ...], Template]] = {
    "continental 1": (1, (continental_one, continental_one_curved), continental_one_serif),
    "slashed 0": (0, (slashed_zero, slashed_zero_open, slashed_zero_squared), slashed_zero_boxy),
    "open-top 4": (4, (open_four, open_four_round), open_four_slanted),
    "open 9": (9, (open_nine, open_nine_gap), open_nine_loop),
    "short-bar 7": (7, (short_bar_seven, short_bar_seven_wave), short_bar_seven_tick),
    "crossed 7": (7, (crossed_seven,), crossed_seven_hook),
}
# Styles made from real digits rather than templates.
EDIT_STYLES = ("continental 1", "slashed 0", "crossed 7")
RENDER_STYLES = ("thin faint", "border cropped")
PHOTOGRAPHED = "photographed"  # real digits with an ordinary pen on random paper (training only)


def template_ink(style: str, rng: np.random.Generator, held_out: bool = False,
                 pen_width: tuple[float, float] = (0.05, 0.16),
                 variants: tuple[Template, ...] | None = None) -> tuple[np.ndarray, int]:
    """One digit of a template style -> (ink, digit); `variants` narrows the training variants drawn."""
    digit, trained, held = TEMPLATES[style]
    variants = variants or trained
    template = held if held_out else variants[int(rng.integers(len(variants)))]
    strokes = [np.asarray(s, np.float64) + rng.normal(0, 0.025, np.shape(s)) for s in template(rng)]
    strokes = [affine_points(s, rng, 8.0, 0.25) for s in strokes]
    height = int(rng.integers(40, 120))
    ink = draw_strokes(strokes, height, Pen(width=rng.uniform(*pen_width)), rng)
    return tight(ink), digit


def stroke_width_px(ink: np.ndarray) -> float:
    """Mean stroke width of ink in pixels (2 * area / boundary)."""
    mask = (ink > 0.5).astype(np.uint8)
    area = int(mask.sum())
    boundary = area - int(cv2.erode(mask, np.ones((3, 3), np.uint8)).sum())
    return 2.0 * area / max(boundary, 1)


def edit_digit(image: np.ndarray, digit: int, rng: np.random.Generator, height: int = 84) -> np.ndarray | None:
    """A real digit's image (28x28 MNIST or 16x16 USPS ink) with a style added -> ink, or None if the
    digit has no edit: a flag and (often) a base for a 1, a slash through a 0, a bar across a 7."""
    if digit not in (0, 1, 7):
        return None
    ink = cv2.resize(np.asarray(image, np.float32), (height, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    rows, cols = np.nonzero(ink > 0.5)
    if rows.size == 0:
        return None
    thickness = max(2, round(stroke_width_px(ink)))
    top, bottom = int(rows.min()), int(rows.max())
    tall = bottom - top
    pad = tall // 2
    ink = np.pad(ink, pad)
    top, bottom = top + pad, bottom + pad
    canvas = (ink * 255).astype(np.uint8)

    def line(a: tuple[float, float], b: tuple[float, float]) -> None:
        cv2.line(canvas, (round(a[0]), round(a[1])), (round(b[0]), round(b[1])), 255, thickness, cv2.LINE_AA)

    def x_at(row: int) -> float:
        return float(np.nonzero(ink[row] > 0.5)[0].mean()) if (ink[row] > 0.5).any() else float(cols.mean() + pad)

    if digit == 1:
        x_top = x_at(top + 1)
        length, angle = tall * rng.uniform(0.22, 0.42), math.radians(rng.uniform(30, 60))
        line((x_top, top), (x_top - length * math.cos(angle), top + length * math.sin(angle)))
        if rng.random() < 0.6:
            x_bottom, half = x_at(bottom - 1), tall * rng.uniform(0.15, 0.3)
            line((x_bottom - half, bottom), (x_bottom + half, bottom))
    elif digit == 0:
        left, right = cols.min() + pad, cols.max() + pad
        reach = rng.uniform(0.0, 0.12) * tall
        line((left - reach * 0.5, bottom + reach), (right + reach * 0.5, top - reach))
    else:
        row = top + round(tall * rng.uniform(0.45, 0.6))
        x_mid, half = x_at(row), tall * rng.uniform(0.12, 0.22)
        line((x_mid - half, row), (x_mid + half, row))
    return tight(canvas.astype(np.float32) / 255.0)


def upscale_ink_sum(image: np.ndarray, height: int) -> float:
    """Total ink of a small digit image scaled to `height` (to compare an edit with its original)."""
    big = cv2.resize(np.asarray(image, np.float32), (height, height), interpolation=cv2.INTER_CUBIC)
    return float(np.clip(big, 0.0, 1.0).sum())


def thin_faint_ink(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real digit drawn with a thin pen (eroded at a large size); `on_paper` makes it faint."""
    height = int(rng.integers(60, 140))
    ink = cv2.resize(np.asarray(image, np.float32), (height, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    width = stroke_width_px(ink)
    target = rng.uniform(1.0, max(1.5, 0.04 * height))  # a hairline to ~4% of the height
    steps = int(max(0, (width - target) // 2))
    if steps:
        thinner = cv2.erode(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), iterations=steps)
        ink = thinner if thinner.max() > 0.5 else ink
    return tight(ink)


def bold_ink(image: np.ndarray, rng: np.random.Generator, max_grow: float = 0.04) -> np.ndarray:
    """A real digit drawn with a bold marker, for cropping against the image border; its strokes grown by
    up to `max_grow` of the height on each side."""
    height = int(rng.integers(40, 120))
    ink = cv2.resize(np.asarray(image, np.float32), (height, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    grow = int(rng.integers(0, max(1, int(height * max_grow))))
    if grow:
        ink = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    ink = tight(ink)
    # Sometimes the border cuts a sliver off the digit itself (a photo framed too tightly).
    cut = [int(rng.integers(0, max(1, round(0.06 * side)))) if rng.random() < 0.3 else 0 for side in ink.shape * 2]
    return ink[cut[0] : ink.shape[0] - cut[1], cut[2] : ink.shape[1] - cut[3]]


def similar(crop: np.ndarray, ink: np.ndarray, minimum: float = 0.5) -> bool:
    """Whether the pipeline's (28, 28) crop still looks like the ink drawn (correlation with a direct
    MNIST-style rendering, both blurred a little so stroke-width changes do not count)."""
    direct = cv2.GaussianBlur(to_mnist(ink), (0, 0), 1.0).ravel()
    seen = cv2.GaussianBlur(crop, (0, 0), 1.0).ravel()
    if direct.std() == 0 or seen.std() == 0:
        return False
    return float(np.corrcoef(direct, seen)[0, 1]) >= minimum


def style_crops(style: str, count: int, rng: np.random.Generator, *, held_out: bool = False,
                digits: np.ndarray | None = None, labels: np.ndarray | None = None,
                edit_share: float = 0.5, strict: bool = False, bold_grow: float = 0.04,
                variants: tuple[Template, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`count` (28, 28) pipeline crops of one style -> (crops (count, 28, 28) float32, labels (count,)).

    Template styles mix templates with edits of real `digits` (when given and the style has an edit);
    "thin faint" and "border cropped" draw real digits with that pen and paper. `held_out` uses the
    held-out template variant only. `strict` (for training) drops crops the pipeline mangled (a frame
    read as ink, a digit in pieces), which would teach the model wrong labels; a benchmark counts them.
    `bold_grow` is "border cropped"'s `bold_ink(max_grow=)`; `variants` narrows the templates drawn.
    """
    faint, border = style == "thin faint", style == "border cropped"

    def draw() -> tuple[np.ndarray, int] | None:
        if style in (*RENDER_STYLES, PHOTOGRAPHED):
            assert digits is not None and labels is not None, f"{style!r} draws real digits"
            index = int(rng.integers(len(digits)))
            if style == PHOTOGRAPHED:
                ink = tight(cv2.resize(digits[index], (int(rng.integers(28, 120)),) * 2,
                                       interpolation=cv2.INTER_CUBIC).clip(0, 1))
            else:
                ink = thin_faint_ink(digits[index], rng) if faint else bold_ink(digits[index], rng, bold_grow)
            digit = int(labels[index])
        elif digits is not None and labels is not None and style in EDIT_STYLES and rng.random() < edit_share:
            digit = TEMPLATES[style][0]
            pool = np.flatnonzero(labels == digit)
            edited = edit_digit(digits[int(rng.choice(pool))], digit, rng)
            if edited is None:
                return None
            ink = edited
        else:
            ink, digit = template_ink(style, rng, held_out=held_out,
                                      pen_width=(0.02, 0.06) if faint else (0.05, 0.16), variants=variants)
        found = pipeline_crops(on_paper(ink, random_paper(rng, faint=faint, border=border), rng), whole=True)
        return None if not found or (strict and not similar(found[0], ink)) else (found[0], digit)

    made = draw_until(count, draw, f"the pipeline reads no digit in style {style!r}")
    return np.stack([crop for crop, _ in made]).astype(np.float32), np.array([d for _, d in made], np.int64)


STYLES = (*TEMPLATES, *RENDER_STYLES)
