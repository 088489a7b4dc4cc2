"""Synthetic writing, read back the way the pipeline reads a user's image.

The model never sees a user's image, only the 28x28 crops that `preprocess` and `segment` make of it: a
tap becomes a big disc once its box is scaled to 20 px, a filled page becomes its edges, a faint pencil
digit gets its contrast stretched. Training data for "not a digit" and for new writing styles is
therefore made as *images* -- ink drawn with a pen (`draw_strokes`), put on paper (`on_paper`) -- and
turned into crops by the pipeline's own functions (`pipeline_crops`), never drawn directly at 28x28.

Ink arrays here are (H, W) float32 in [0, 1]: 1 = full ink, 0 = paper. Pure numpy/OpenCV; no Keras.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np

from digitrec.preprocess import find_ink, render_digit
from digitrec.recognize import original_box
from digitrec.segment import Group, group_mask, merge_groups, segment_ink

T = TypeVar("T")

Stroke = np.ndarray  # (K, 2) float: x, y control points of one pen stroke, unit box (y down)


def smooth(points: Stroke, per_segment: int = 12) -> Stroke:
    """(K, 2) control points -> (M, 2) a Catmull-Rom curve through them (a pen does not draw corners
    exactly, but it passes through where the writer aimed)."""
    points = np.asarray(points, np.float64)
    if len(points) < 3:
        return points
    padded = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]  # (S, 1)
    curve = []
    for index in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[index - 1 : index + 3]
        curve.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                            + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    curve.append(points[-1:])
    return np.vstack(curve)


@dataclass(frozen=True)
class Pen:
    """How strokes are drawn: width relative to the drawing's height, and its texture."""

    width: float = 0.08  # stroke width / drawing height (MNIST's median is ~0.12 at 20 px)
    grain: float = 0.0  # 0: solid ink; up to 1: pencil-like random gaps in the stroke


def draw_strokes(strokes: list[Stroke], height: int, pen: Pen, rng: np.random.Generator, *,
                 curved: bool = True, aspect: float = 1.0) -> np.ndarray:
    """Strokes in a unit box (x in [0, aspect], y in [0, 1]) -> (height + pad, width + pad) ink.

    The canvas keeps a margin of a pen width so no stroke is cut by its edge.
    """
    thickness = max(1, round(pen.width * height))
    pad = thickness + 2
    width = max(2, math.ceil(aspect * height))
    canvas = np.zeros((height + 2 * pad, width + 2 * pad), np.uint8)
    shift = 4  # cv2 draws with sub-pixel precision in fixed point: 4 fractional bits
    for stroke in strokes:
        path = smooth(stroke) if curved and len(stroke) > 2 else np.asarray(stroke, np.float64)
        pixels = (path * [height, height] + pad) * (1 << shift)
        cv2.polylines(canvas, [pixels.round().astype(np.int32)], False, 255, thickness, cv2.LINE_AA, shift)
        if len(path) == 1 or np.ptp(path, axis=0).max() < 1e-6:  # a dot: polylines may draw nothing
            centre = pixels[0].round().astype(np.int32)
            cv2.circle(canvas, tuple(int(c) for c in centre), (thickness << shift) // 2, 255, -1, cv2.LINE_AA, shift)
    ink = canvas.astype(np.float32) / 255.0
    if pen.grain > 0:
        ink *= 1.0 - pen.grain * rng.random(ink.shape, dtype=np.float32)
    return ink


def affine_points(points: Stroke, rng: np.random.Generator, rotation_deg: float = 8.0,
                  slant: float = 0.25) -> Stroke:
    """Tilt and slant control points about the unit box's centre (writers are not upright)."""
    angle = math.radians(rng.uniform(-rotation_deg, rotation_deg))
    shear = rng.uniform(-slant, slant)
    centre = np.array([0.5, 0.5])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    shearing = np.array([[1.0, -shear], [0.0, 1.0]])  # top leans right for shear > 0
    return (np.asarray(points) - centre) @ (rotation @ shearing).T + centre


def elastic(ink: np.ndarray, rng: np.random.Generator, amount: float = 0.03, smoothness: float = 0.15) -> np.ndarray:
    """Wobble ink like an unsteady hand: a smooth random displacement field, `amount` of the height."""
    height, width = ink.shape
    sigma = max(1.0, smoothness * height)
    dx = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), sigma)
    dy = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), sigma)
    scale = amount * height / max(float(np.abs(dx).max()), float(np.abs(dy).max()), 1e-6)
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(ink, grid_x + dx * scale, grid_y + dy * scale, cv2.INTER_LINEAR, borderValue=0.0)


def tight(ink: np.ndarray) -> np.ndarray:
    """Crop ink to its bounding box (an all-zero array stays as it is)."""
    rows, cols = np.nonzero(ink > 0.05)
    if rows.size == 0:
        return ink
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


@dataclass(frozen=True)
class Paper:
    """How ink is put on paper and photographed; `random_paper` draws one per image."""

    margin: float = 0.5  # free paper around the ink, relative to its longer side (0: touches the border)
    tone: float = 0.95  # paper brightness
    contrast: float = 0.8  # how much darker than the paper the ink is (faint pencil ~0.2)
    noise: float = 0.01  # sensor noise sigma
    blur: float = 0.0  # focus blur sigma in pixels
    gradient: float = 0.0  # lighting fall-off across the image
    light_on_dark: bool = False  # chalkboard / MNIST polarity


def random_paper(rng: np.random.Generator, *, faint: bool = False, border: bool = False) -> Paper:
    """A paper/camera look: mostly clean drawings and photos, sometimes faint, dark or tight."""
    contrast = rng.uniform(0.13, 0.35) if faint else rng.uniform(0.45, 0.95)
    margin = 0.0 if border else float(rng.choice([rng.uniform(0.05, 0.3), rng.uniform(0.3, 1.5)]))
    photo = rng.random() < 0.6
    return Paper(margin=margin, tone=rng.uniform(0.7, 1.0) if photo else 1.0, contrast=contrast,
                 noise=rng.uniform(0.0, 0.025) if photo else 0.0, blur=rng.uniform(0.0, 1.0) if photo else 0.0,
                 gradient=rng.uniform(0.0, 0.3) if photo else 0.0, light_on_dark=bool(rng.random() < 0.1))


def on_paper(ink: np.ndarray, paper: Paper, rng: np.random.Generator) -> np.ndarray:
    """(h, w) ink -> (H, W) float32 grey image in [0, 1] of paper holding it, as a user's photo or drawing."""
    ink_h, ink_w = ink.shape
    margin = round(paper.margin * max(ink_h, ink_w))
    left, right, top, bottom = (int(rng.integers(0, margin + 1)) if margin else 0 for _ in range(4))
    alpha = np.pad(ink, ((top, bottom), (left, right))).astype(np.float32)  # (H, W)
    height, width = alpha.shape
    tone = np.full((height, width), paper.tone, np.float32)
    if paper.gradient > 0:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        ramp = math.cos(angle) * xx / width + math.sin(angle) * yy / height
        tone *= 1.0 - paper.gradient * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    grey = tone * (1.0 - paper.contrast * alpha)
    if paper.light_on_dark:
        grey = 1.0 - grey
    if paper.blur > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), paper.blur)
    if paper.noise > 0:
        grey = grey + np.asarray(rng.normal(0.0, paper.noise, np.shape(grey)), np.float32)
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


def draw_until(count: int, draw: Callable[[], T | None], failure: str) -> list[T]:
    """Call `draw` until it has given `count` results (None: a drawing thrown away, drawn again) -> them.
    After 20 x count + 100 calls without enough, RuntimeError(failure): a generator that never succeeds
    (no ink the pipeline finds, a style it always mangles) must not loop for ever."""
    results: list[T] = []
    attempts = 0
    while len(results) < count:
        attempts += 1
        if attempts > 20 * count + 100:
            raise RuntimeError(failure)
        result = draw()
        if result is not None:
            results.append(result)
    return results


def pipeline_crops(grey: np.ndarray, *, whole: bool = True, groups: bool = False) -> list[np.ndarray]:
    """(H, W) grey image -> the (28, 28) crops the pipeline would classify ([] when it finds no digit).

    whole: all ink read as one digit (digit mode); groups: each group found (number mode) when there are
    several.
    """
    ink = find_ink(grey)
    segmentation = segment_ink(ink)
    if not segmentation.groups:
        return []
    pieces: list[Group] = []
    if whole:
        pieces.append(merge_groups(segmentation.groups))
    if groups and len(segmentation.groups) > 1:
        pieces.extend(segmentation.groups)
    crops = []
    for piece in pieces:
        image, _ = render_digit(grey, ink, original_box(piece, ink.scale, grey.shape), group_mask(segmentation, piece))
        if image.max() > 0:
            crops.append(image)
    return crops


def upscale_digit(image: np.ndarray, height: int) -> np.ndarray:
    """A small digit image (e.g. MNIST's 28x28 or USPS's 16x16 ink) -> (height, height) smooth ink."""
    big = cv2.resize(np.asarray(image, np.float32), (height, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(big, 0.0, 1.0)
