"""Turn any grey image into what an MNIST model expects: white ink on black, 28x28, sized and centred as
MNIST was.

Two stages, both pure functions on arrays:

1. `find_ink`: the whole image, at a reduced "analysis" resolution (fast for big photos) -> an `InkMap`:
   polarity decided from the image (dark ink on paper, or chalk/MNIST-style light on dark), the paper's
   uneven lighting divided out (a morphological-closing background estimate), and a threshold that is
   Otsu's but never below the image's own noise level, so blank paper has no ink. A bold digit cropped
   tight (two clear tones, the paper along the frame) is read against a plane fitted to its paper instead.
2. `render_digit`: one digit's region of the *original* image (so small digits in big photos keep their
   detail) -> the (28, 28) float32 the model reads: contrast stretched so the stroke core is 1, stroke
   weight nudged into MNIST's range, longer side scaled to 20 px with area averaging (anti-aliased), placed
   so its centre of mass is at the centre, as LeCun et al. made MNIST. An MNIST image passes through
   unchanged: its ink already has a 20 px box and a centred mass.

`preprocess` runs both on an image holding one digit. Finding several digits is `digitrec.segment`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from digitrec import smallarrays

MNIST_SIZE = 28
MNIST_BOX = 20  # MNIST digits were scaled to fit 20x20, then centred by mass in 28x28
ANALYSIS_MAX_SIDE = 640  # find ink at most this big: ~2 ms for a 1000x1000 photo, digits still >= ~10 px
POLARITY_MAX_SIDE = 256  # polarity is a whole-image statistic
BACKGROUND_MAX_SIDE = 96  # the paper's lighting varies slowly; estimate it on a tiny image
RENDER_BOX = 80  # render each digit with its longer side at most this (4x the final 20) before the last resize
MIN_CONTRAST = 0.12  # ink must be at least 12% darker than its paper (faint pencil is ~25%)
NOISE_SIGMAS = 5.0  # ... and this many noise standard deviations above it
# Contrast this clearly split in two (Otsu's between-class share of the variance) is paper and ink whatever
# their proportions: the paper's noise is then measured on its own class (ink may be half the picture).
BIMODAL_SEPARATION = 0.7
MAX_WRITING_SHARE = 0.62  # writing (a bold digit cropped tight, its blur included) covers at most this share
MAX_BOLD_SHARE = 0.9  # a bold 1 cropped tight, re-read on the paper's tone (`other_polarity`), is up to this
# A bold digit cropped tight (`polarity`, `framed_tone`): the polarity vote's skewness is weak, under this
# either way (its ink may be half the picture), and the picture is two clear tones, ...
AMBIGUOUS_SKEW = 2.0  # (synthetic tight crops: |skewness| up to 1.7; plain writing mostly 2-11)
MAX_SIDE_COVER = 0.9  # ... the ink covering at most this share of any side of the frame (where the crop cut it)
MIN_TIGHT_EXTENT = 0.5  # ... and spanning at least this share of the picture's width and height, ...
MIN_MAIN_PIECE = 0.5  # ... its largest piece holding at least this share of it (not speckled paper's grain)
DENSE_SHARE = 0.2  # ink over this share of the picture is dense (a bold digit in a tight crop): check polarity
# Stroke width of MNIST digits, measured with `stroke_width` on the MNIST test set scaled to an 80 px box:
# 5th/50th/95th percentiles 6.6 / 10.1 / 15.8 px. Strokes outside [MIN, MAX] are grown or thinned.
MNIST_STROKE_80 = 10.0
STROKE_RANGE_80 = (5.5, 17.0)
# Faint ink (light pencil, a yellow or light-blue pen: strokes 5-12% darker than the paper, under MIN_CONTRAST)
# is looked for only where nothing (or a few stray pixels) was found, on the contrast smoothed a little:
FAINT_PIXELS = 25  # found less ink than this (recognize's "no ink"), ...
FAINT_FULL_INK = 0.2  # ... or ink whose stroke core is fainter than this: look for faint ink
FAINT_SMOOTH = 1.0  # sigma (px): pixel noise falls ~3.5x, a stroke wider than that keeps its level
FAINT_MIN_CONTRAST = 0.05  # never under this (JPEG's blocks, a lens's vignetting, paper texture)
FAINT_SIGMAS = 6.0  # ... and this many of the paper's own smoothed noise sigmas above it
FAINT_MIN_SIDE = 8  # a faint piece is writing when it is this long (analysis px) or more, ...
FAINT_THICKNESS = 0.35  # ... its stroke at most this share of its longer side (not a smudge), ...
# ... and it lies wholly inside the picture: shadows, creases, paper edges and the lighting the background
# estimate left over reach the frame. Thresholded this low they would be "ink"; a faint digit has paper round it.
FAINT_MAX_COMPONENTS = 400  # more pieces than this at the faint threshold: grain, not writing


@dataclass(frozen=True)
class InkMap:
    """Where the ink is, at analysis resolution (h, w) = original (H, W) * scale."""

    contrast: np.ndarray  # (h, w) float32 in [0, 1]: 0 = paper, 1 = as dark (or light) as ink can be
    mask: np.ndarray  # (h, w) bool: contrast >= threshold, and fainter ink touching it (hysteresis)
    background: np.ndarray  # (h, w) float32: the paper's tone, in "dark ink" orientation
    scale: float  # analysis pixels per original pixel (<= 1)
    dark_ink: bool  # True: dark ink on light paper; False: light ink on dark (MNIST, chalkboard)
    threshold: float  # contrast threshold for the mask
    noise_floor: float  # contrast below this is paper noise
    full_ink: float  # contrast of the stroke core (90th percentile of the mask's contrast)
    steps: dict[str, Any] = field(default_factory=dict)  # JSON-able summary for the page and debugging
    # (h, w) float32: the analysis image itself, in "dark ink" orientation (None: not kept). What is either
    # side of a piece of "ink" (paper, or more of the same tone: a shadow, the table) is read from it.
    paper: np.ndarray | None = None
    # A tight crop of bold ink (`polarity`): two clear tones, the ink told from the paper by the frame; its
    # ink may be up to MAX_BOLD_SHARE of the picture.
    tight_crop: bool = False


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize (H, W) -> (height, width): area-averaging when shrinking (anti-aliased), linear when growing."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def scale_to_max_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """(H, W) -> (h, w) with max(h, w) <= max_side, and the scale 1 / factor (never enlarges).

    Shrinks by a whole factor (block averaging, several times faster than a fractional area resize).
    """
    height, width = image.shape
    factor = math.ceil(max(height, width) / max_side)
    if factor <= 1:
        return image, 1.0
    small = resize_to(image, max(1, width // factor), max(1, height // factor))
    # The scale is the factor, not a ratio of sides: in a thin image (641x13 -> 320x6) the sides' ratios
    # differ, and the height's would map analysis columns past the original's right edge.
    return small, 1.0 / factor


def ink_is_dark(grey: np.ndarray) -> bool:
    """Decide polarity from (h, w) grey (`polarity`'s first answer)."""
    return polarity(grey)[0]


def polarity(grey: np.ndarray) -> tuple[bool, bool]:
    """(h, w) grey -> (the ink is dark, the picture is a tight crop of bold ink): ink is the sparse tail of
    the local contrast's distribution.

    Paper covers most of any picture of writing, so the residual after subtracting a broad local mean is
    a narrow peak (paper, noise) plus a long tail on the ink's side; the sign of its skewness says which
    side that is. Broad, smooth lighting changes are removed by the local mean and do not vote.
    A bold digit cropped tight can cover half the picture or more: the vote is then weak (its skewness
    under AMBIGUOUS_SKEW either way), and when the picture is two clear tones whose ink covers over
    DENSE_SHARE of it, a tight crop's, `framed_tone` decides. (Where its ink is sparse the vote stands: the
    two tones of a faint photo may be its lighting's, not its ink's.)
    """
    grey, _ = scale_to_max_side(grey, POLARITY_MAX_SIDE)  # a global statistic: a small image will do
    height, width = grey.shape
    size = max(3, (min(height, width) // 4) | 1)
    local_mean = cv2.blur(cv2.blur(grey, (size, size)), (size, size))
    residual = grey - local_mean  # (h, w) float32
    squared = residual * residual
    spread = float(np.mean(squared, dtype=np.float64))
    if spread < 1e-10:
        return True, False  # a flat image: no ink either way
    skewness = float(np.mean(squared * residual, dtype=np.float64)) / spread**1.5
    if abs(skewness) < AMBIGUOUS_SKEW and may_be_tight(grey, skewness <= 0.0):
        framed = framed_tone(grey)
        if framed is not None and framed[1] > DENSE_SHARE:
            return framed[0], True
    return skewness <= 0.0, False


def may_be_tight(grey: np.ndarray, dark: bool) -> bool:
    """Whether (h, w) grey, its polarity voted `dark`, may be a tight crop of bold ink (for `framed_tone`
    to judge): the mean tone along its frame is on the ink's side of the picture's mean (the vote may have
    taken the paper for the ink), or over DENSE_SHARE of it is past halfway from that tone to the ink's
    extreme. A plain digit with a margin is neither, and skips `framed_tone`'s work (on the server's path).
    """
    height, width = grey.shape
    frame = (float(grey[0].sum()) + float(grey[-1].sum()) + float(grey[:, 0].sum()) + float(grey[:, -1].sum())) \
        / (2 * (height + width))
    middle = cv2.mean(grey)[0]
    if (frame < middle) if dark else (frame > middle):
        return True
    darkest, lightest, _, _ = cv2.minMaxLoc(grey)
    halfway = 0.5 * (frame + (darkest if dark else lightest))
    beyond = cv2.countNonZero((grey < halfway) if dark else (grey > halfway))
    return beyond > DENSE_SHARE * grey.size


def framed_tone(grey: np.ndarray) -> tuple[bool, float] | None:
    """(h, w) grey -> (its darker tone is the ink, the ink tone's share of the picture), or None when the
    picture is not two clear tones (`two_tones`' separation under BIMODAL_SEPARATION).

    A photo of writing is framed on its paper: however much of the picture a bold digit covers, the paper
    surrounds it, and it meets the frame only where the crop cut it (a stroke's ends, a loop's side); the
    paper runs along most of the frame. So the ink is the tone that covers less of the picture's outermost
    pixels. Where the crop cut it, a stroke meets the frame across its width: not along a whole side (over
    MAX_SIDE_COVER of it: None), as the edge of the paper, of the table or of a shadow does; cropped tight,
    it spans most of the picture both ways (MIN_TIGHT_EXTENT); a bold marker's ink is clearly darker (or
    lighter) than its paper (MIN_CONTRAST); and one digit's ink is mostly one piece (MIN_MAIN_PIECE). (A
    light-on-dark picture, a chalkboard, is framed by its dark board the same way.)
    """
    darker, separation = two_tones(grey)
    if separation < BIMODAL_SEPARATION:
        return None
    share = edge_share(darker)
    if share == 0.5:
        return None
    ink = darker if share < 0.5 else ~darker
    sides = (ink[0], ink[-1], ink[:, 0], ink[:, -1])
    if max(float(side.mean()) for side in sides) > MAX_SIDE_COVER:
        return None  # it runs along a whole side: the edge of the paper, the table or a shadow, not a digit
    if min(extent(ink, 0), extent(ink, 1)) < MIN_TIGHT_EXTENT:
        return None  # not cropped tight to it: a band (a shadow's, the table's) across a wider picture
    # Clear tones: the ink at least MIN_CONTRAST darker than its paper, as `ink_levels` asks (the two tones
    # of a faint pen's digit are left to `faint_ink`).
    low = cv2.mean(grey, mask=darker.view(np.uint8))[0]
    high = cv2.mean(grey, mask=(~darker).view(np.uint8))[0]
    if high - low < MIN_CONTRAST * (high if share < 0.5 else 1.0 - low):
        return None
    # One bold digit: most of its tone is one piece, not the grain of speckled paper.
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink.view(np.uint8), connectivity=8)
    if stats.shape[0] < 2 or stats[1:, cv2.CC_STAT_AREA].max() < MIN_MAIN_PIECE * stats[1:, cv2.CC_STAT_AREA].sum():
        return None
    dark_share = float(darker.mean())
    return (True, dark_share) if share < 0.5 else (False, 1.0 - dark_share)


def extent(mask: np.ndarray, axis: int) -> float:
    """(h, w) bool -> the share of the picture's width (axis 0) or height (axis 1) between the first and
    the last column (row) holding 2% of its pixels or more (a few noise pixels do not count)."""
    counts = np.count_nonzero(mask, axis=axis)
    held = np.flatnonzero(counts >= max(1.0, 0.02 * mask.shape[axis]))
    return 0.0 if held.size == 0 else float(held[-1] - held[0] + 1) / counts.size


def two_tones(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """(h, w) grey -> ((h, w) bool its darker tone's pixels, how clearly it is two tones: Otsu's separation).

    Judged on the grey smoothed a little, less a plane fitted to its lighter half (Otsu's): a lighting
    gradient across blank paper is a spread of tones, not two of them (a linear ramp's Otsu separation is
    0.75, two tones' 0.8-1), and less the plane, it is the paper's noise. (A plane fitted to all of it would
    turn a step, the edge of the table, into two ramps.) OpenCV calls throughout: it runs on small images
    on the server's path, where NumPy's per-call cost would dominate.
    """
    smooth = cv2.GaussianBlur(grey, (0, 0), 1.0)
    _, lighter = cv2.threshold(cv2.convertScaleAbs(smooth, alpha=255.0), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    residual = smooth - fit_plane(smooth, lighter)  # (h, w); the lighter half is most often the paper
    as_bytes = cv2.normalize(residual, np.empty(residual.shape, np.uint8), 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
    _, higher = cv2.threshold(as_bytes, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)  # (h, w) uint8 0/1
    # Otsu's effectiveness (`otsu_separation`): between-class over total variance.
    mean, deviation = (float(v[0, 0]) for v in cv2.meanStdDev(as_bytes))
    share = cv2.countNonZero(higher) / higher.size
    if deviation <= 0.0 or share in (0.0, 1.0):
        return higher == 0, 0.0
    high = cv2.mean(as_bytes, mask=higher)[0]
    low = (mean - share * high) / (1.0 - share)
    return higher == 0, share * (1.0 - share) * (high - low) ** 2 / deviation**2


def fit_plane(values: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """(h, w) values -> (h, w) float32 the plane a + b x + c y closest to them (least squares) over the
    pixels `where` (h, w, nonzero: chosen) holds (None: all of them)."""
    height, width = values.shape
    weight = np.ones(values.shape, np.float32) if where is None else where.astype(np.float32)
    # The normal equations from image moments (sums of 1, x, y, x^2, xy, y^2 and of v, xv, yv over the
    # chosen pixels): two calls in C, not an (n, 3) design matrix.
    count = cv2.moments(weight)
    value = cv2.moments(values.astype(np.float32) * weight)
    if count["m00"] < 3:
        return np.full(values.shape, float(np.mean(values)), np.float32)
    # A whisker of ridge on the slopes: chosen pixels on one line leave the system singular (any plane
    # through the line fits them), and then the flattest is taken; elsewhere it changes nothing visible.
    ridge = 1e-6 * count["m00"] * max(height, width) ** 2
    normal = np.array([[count["m00"], count["m10"], count["m01"]],
                       [count["m10"], count["m20"] + ridge, count["m11"]],
                       [count["m01"], count["m11"], count["m02"] + ridge]])
    a, b, c = np.linalg.solve(normal, np.array([value["m00"], value["m10"], value["m01"]]))
    columns = np.arange(width, dtype=np.float32)[None, :]
    rows = np.arange(height, dtype=np.float32)[:, None]
    return (a + b * columns + c * rows).astype(np.float32)


def paper_plane(paper: np.ndarray) -> np.ndarray:
    """(h, w) grey with dark ink, two clear tones (a bold digit cropped tight) -> (h, w) float32 the paper's
    tone: a plane (a linear lighting gradient) fitted to the lighter tone's pixels."""
    ink, _ = two_tones(paper)
    if np.count_nonzero(~ink) < 3:
        return np.full(paper.shape, max(float(paper.max()), 0.05), np.float32)
    tones = paper[~ink]
    return np.clip(fit_plane(paper, ~ink), float(tones.min()), float(tones.max()))


def estimate_background(paper: np.ndarray) -> np.ndarray:
    """(h, w) grey with dark ink -> (h, w) the paper's tone without the ink, lighting and shadows kept.

    Max-pooling to a small image and a morphological closing (max then min filter) wider than any stroke
    remove the ink but follow the lighting: a closing reproduces linear gradients exactly, unlike a blur,
    which would smear the ink into the estimate.
    """
    height, width = paper.shape
    factor = max(1, math.ceil(max(height, width) / BACKGROUND_MAX_SIDE))
    # Average pooling, not max: the max of noisy paper is its noise's upper tail, which would make all
    # of a grainy photo look like faint ink. Ink thinner than a block only darkens it; the closing's
    # max filter then prefers the clean blocks around it.
    small = avg_pool(paper, factor)  # (ceil(h/f), ceil(w/f))
    # A third of the picture: wider than the strokes of a digit that fills the frame.
    size = max(3, round(min(small.shape) / 3) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    # A closing is exact for a gradient only where its window fits; at the edges, continue the gradient
    # (odd reflection, clipped to the image's own range so ink at the edge does not mirror into glare).
    pad = size // 2 + 1
    padded = smallarrays.pad_odd_reflect(small, pad).clip(small.min(), small.max())  # np.pad's odd reflection
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)[pad:-pad, pad:-pad]
    smooth = max(3, (size // 2) | 1)
    closed = cv2.blur(closed, (smooth, smooth))
    # Each pooled pixel stands for an f x f block of the padded image: resize to that, then cut the padding.
    full = cv2.resize(closed, (closed.shape[1] * factor, closed.shape[0] * factor), interpolation=cv2.INTER_LINEAR)
    return full[:height, :width]


def avg_pool(image: np.ndarray, factor: int) -> np.ndarray:
    """(h, w) -> (ceil(h/f), ceil(w/f)): the mean of each f x f block (edges padded by replication)."""
    if factor == 1:
        return image
    height, width = image.shape
    padded = cv2.copyMakeBorder(image, 0, -height % factor, 0, -width % factor, cv2.BORDER_REPLICATE)
    size = (padded.shape[1] // factor, padded.shape[0] // factor)
    return cv2.resize(padded, size, interpolation=cv2.INTER_AREA)  # exact block means at an integer factor


def ink_contrast(paper: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(h, w) grey with dark ink, (h, w) paper tone -> (h, w) float32 ink contrast in [0, 1].

    Dividing by the paper's own tone makes ink in a shadow as strong as ink in the light.
    """
    contrast = (background - paper) / np.maximum(background, 0.05)
    return np.clip(contrast, 0.0, 1.0).astype(np.float32)


def ink_levels(contrast: np.ndarray) -> tuple[float, float, float]:
    """(h, w) contrast -> (noise floor, weak, strong threshold): Otsu's, but clear of the paper's noise.

    Strong pixels are surely ink; weak ones count as ink where they touch strong ones (`hysteresis`);
    contrast under the noise floor is paper.
    """
    sample = subsample(contrast)
    otsu, _ = cv2.threshold((sample * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    paper = sample
    # Judged on the contrast smoothed a little: regions, not pixels (pixel noise, even uniform noise, is one
    # class once smoothed; ink strokes are not changed by it).
    smoothed = subsample(cv2.GaussianBlur(contrast, (0, 0), 1.0))
    dense = float(np.mean(sample >= otsu / 255.0)) >= DENSE_SHARE  # sparse ink leaves the whole image's spread
    if dense and otsu_separation(smoothed, otsu / 255.0) >= BIMODAL_SEPARATION:  # to the paper: as it was
        # Two clear classes (a bold digit filling the frame: ink is 30-60% of the pixels): the paper's own
        # spread is its class's, not the whole image's, which the ink would inflate past any ink contrast.
        paper = sample[sample < otsu / 255.0]
    median, noise = paper_level(paper)
    floor = median + 3.0 * noise
    threshold = max(otsu / 255.0, median + NOISE_SIGMAS * noise, MIN_CONTRAST)
    return min(floor, threshold / 2), max(floor, threshold / 2), threshold


def subsample(image: np.ndarray) -> np.ndarray:
    """Every k-th row and column, at most ~256 of each: what contrast levels are judged on, at any size."""
    return image[:: max(1, image.shape[0] // 128), :: max(1, image.shape[1] // 128)]


def paper_level(values: np.ndarray) -> tuple[float, float]:
    """(median, robust sigma) of contrast values the paper dominates: the paper's level and its noise."""
    median = float(smallarrays.median(values))
    return median, 1.4826 * float(smallarrays.median(np.abs(values - median)))


def otsu_separation(values: np.ndarray, threshold: float) -> float:
    """Between-class variance over total variance when `values` are split at `threshold` (Otsu's
    effectiveness, in [0, 1]): about 0.64 for one Gaussian peak (blank paper's noise), near 1 for two
    separate peaks (paper and ink)."""
    total = float(values.var())
    if total <= 0.0:
        return 0.0
    high = values >= threshold
    share = float(high.mean())
    if share in (0.0, 1.0):
        return 0.0
    gap = float(values[high].mean()) - float(values[~high].mean())
    return share * (1.0 - share) * gap * gap / total


def hysteresis(contrast: np.ndarray, weak_threshold: float, threshold: float) -> np.ndarray:
    """(h, w) contrast -> (h, w) bool: pixels over `threshold`, plus fainter ones (over `weak_threshold`)
    that touch them, so grainy pencil and blurred thin strokes stay whole instead of breaking into dots."""
    strong = contrast >= threshold
    weak = contrast >= weak_threshold
    if not strong.any():
        return strong
    count, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
    seeded = np.zeros(count, bool)
    seeded[labels[strong]] = True
    seeded[0] = False
    return seeded[labels]


def find_ink(grey: np.ndarray) -> InkMap:
    """(H, W) float32 grey in [0, 1] -> an `InkMap` at analysis resolution."""
    # 1. work small: lighting and thresholds need no more than ANALYSIS_MAX_SIDE pixels
    small, scale = scale_to_max_side(np.asarray(grey, dtype=np.float32), ANALYSIS_MAX_SIDE)
    # 2. polarity: turn light-on-dark (chalkboards, MNIST) into dark-on-light "paper"
    dark, tight = polarity(small)
    if tight:
        # Two clear tones, the ink told from the paper by the frame: a bold digit cropped tight, whatever
        # share of the picture it covers (up to MAX_BOLD_SHARE). Its strokes may be wider than the lighting
        # estimate's window, so the paper's tone is a plane fitted to the paper's own pixels; and the checks
        # below, which judge the other polarity by its ink's share and tone, are left out: such a crop
        # leaves them undecided.
        paper = small if dark else 1.0 - small
        ink = ink_map(small, scale, dark, paper_plane(paper))
        return dataclasses.replace(ink, tight_crop=True, steps={**ink.steps, "tight_crop": True})
    ink = ink_map(small, scale, dark)
    # The skewness vote needs ink to be the sparse side; a bold digit filling a tight crop is not. When the
    # vote finds no ink, or dense ink (over DENSE_SHARE of the picture), the other polarity is tried too,
    # and the one whose ink is plausible (some, at most MAX_WRITING_SHARE) and stands apart from its paper
    # in tone more clearly is kept. In the wrong polarity a bold stroke is paper to the lighting estimate,
    # and the "ink" is the halo of paper along its sides, of the paper's own tone: no apart at all.
    # (The edge of the picture used to decide: a bold digit cropped tight touches it more than its halo.)
    share = float(ink.mask.mean())
    if share <= DENSE_SHARE and (share * ink.mask.size < FAINT_PIXELS or ink.full_ink < FAINT_FULL_INK):
        # Nothing found, or only the darkest specks of faint writing (noise lifting a few of its pixels over
        # the threshold): look for faint ink, and keep it when it is more than what was found.
        faint = faint_ink(ink)
        if faint is not None and np.count_nonzero(faint.mask) > share * ink.mask.size:
            return faint
    if share == 0.0 or share > DENSE_SHARE:
        other = ink_map(small, scale, not dark)
        other_share = float(other.mask.mean())
        if 0.0 < other_share <= MAX_WRITING_SHARE and (
                share == 0.0 or share > MAX_WRITING_SHARE
                or tone_separation(small, other.mask, not dark) > tone_separation(small, ink.mask, dark)):
            other.steps["polarity_flipped"] = True
            return other
    return ink


def faint_ink(ink: InkMap) -> InkMap | None:
    """The `InkMap` of faint writing that `ink`'s threshold missed, or None when there is none.

    Light pencil, a yellow or a light-blue pen leave strokes 5-12% darker than the paper (in luminance),
    under MIN_CONTRAST, which keeps lighting left over, shadows and creases out. Here the contrast is
    smoothed a little (FAINT_SMOOTH), the threshold is FAINT_SIGMAS of the paper's own smoothed noise above
    it (at least FAINT_MIN_CONTRAST), and only pieces that look like writing are kept: wholly inside the
    picture (what reaches the frame is a shadow's, the paper's or a crease's edge, or lighting), a digit
    stroke's length, and thin (a faint smudge or blob is not writing). Their map is the smoothed contrast.
    """
    smoothed = cv2.GaussianBlur(ink.contrast, (0, 0), FAINT_SMOOTH)
    height, width = smoothed.shape
    if min(height, width) < FAINT_MIN_SIDE + 2:
        return None
    median, noise = paper_level(subsample(smoothed))
    threshold = max(median + FAINT_SIGMAS * noise, FAINT_MIN_CONTRAST)
    if threshold >= ink.threshold:
        return None  # the noise allows nothing fainter than what was already looked for
    floor = median + 3.0 * noise
    mask = hysteresis(smoothed, max(floor, 0.5 * threshold), threshold)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1 or count > FAINT_MAX_COMPONENTS:
        return None
    keep = np.zeros(count, bool)
    for label in range(1, count):
        x, y, w, h, _area = (int(value) for value in stats[label])
        if x == 0 or y == 0 or x + w == width or y + h == height or max(w, h) < FAINT_MIN_SIDE:
            continue
        keep[label] = stroke_width(labels[y : y + h, x : x + w] == label) <= FAINT_THICKNESS * max(w, h)
    if not keep.any():
        return None
    mask = keep[labels]
    full = float(np.percentile(smoothed[mask], 90))
    floor = min(floor, 0.5 * threshold)
    steps = {**ink.steps, "threshold": round(threshold, 3), "noise_floor": round(floor, 3),
             "ink_fraction": round(float(mask.mean()), 4), "faint_ink": True}
    return InkMap(smoothed, mask, ink.background, ink.scale, ink.dark_ink, threshold, floor, max(full, threshold),
                  steps, ink.paper)


def other_polarity(ink: InkMap) -> InkMap | None:
    """The same picture's `InkMap` in the other polarity, or None when that one's ink is implausible (none,
    or more than MAX_WRITING_SHARE of the picture)."""
    if ink.paper is None:
        return None
    small = ink.paper if ink.dark_ink else 1.0 - ink.paper
    other = ink_map(small, ink.scale, not ink.dark_ink)
    share = float(other.mask.mean())
    if share <= DENSE_SHARE and not ink.dark_ink and ink.mask.any():
        # Dark ink wider than the lighting estimate's window (a bold 1 filling a tight crop: its stroke is
        # most of the picture's width) is paper to that estimate, and little ink is left. What the light
        # polarity took for ink, the strips along the frame, is the paper: its tone is the background.
        # Only for dark ink on light paper, the common case: a light piece of paper between two dark table
        # edges would otherwise become a bold light "1".
        background = np.full(small.shape, float(np.median(small[ink.mask])), np.float32)
        flat = ink_map(small, ink.scale, True, background)
        if DENSE_SHARE < float(flat.mask.mean()) <= MAX_BOLD_SHARE:
            flat.steps["flat_paper"] = True
            return flat
    return other if 0.0 < share <= MAX_WRITING_SHARE else None


def tone_separation(grey: np.ndarray, mask: np.ndarray, dark: bool) -> float:
    """How clearly the ink `mask` stands apart from the rest in tone, the ink on its polarity's side:
    the gap between their mean tones over their pooled standard deviation (negative: the wrong side)."""
    ink, paper = grey[mask], grey[~mask]
    if ink.size == 0 or paper.size == 0:
        return -math.inf
    gap = float(paper.mean() - ink.mean()) if dark else float(ink.mean() - paper.mean())
    return gap / math.sqrt(0.5 * (float(ink.var()) + float(paper.var())) + 1e-6)


def edge_share(mask: np.ndarray) -> float:
    """(h, w) bool -> the share of the picture's outermost pixels that are ink."""
    ring = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(ring.mean()) if ring.size else 0.0


def ink_map(small: np.ndarray, scale: float, dark: bool, background: np.ndarray | None = None) -> InkMap:
    """(h, w) analysis-size grey and a polarity -> its `InkMap` (`background`: the paper's tone, in that
    polarity's "dark ink" orientation, when it is known; None: estimated)."""
    paper = small if dark else 1.0 - small
    # 3. divide out the paper's tone: lighting gradients, shadows, tinted or grey paper
    background = estimate_background(paper) if background is None else background
    contrast = ink_contrast(paper, background)
    # 4. threshold: Otsu, above the noise
    floor, weak, threshold = ink_levels(contrast)
    mask = hysteresis(contrast, weak, threshold)
    full = float(smallarrays.percentile(contrast[mask], 90)) if mask.any() else 1.0
    steps = {
        "analysis_size": [int(small.shape[1]), int(small.shape[0])],
        "polarity": "dark ink on light paper" if dark else "light ink on dark background",
        "paper_tone": round(float(smallarrays.median(background[::8, ::8])), 3),
        "threshold": round(threshold, 3),
        "noise_floor": round(floor, 3),
        "ink_fraction": round(float(mask.mean()), 4),
    }
    return InkMap(contrast, mask, background, scale, dark, threshold, floor, max(full, threshold), steps, paper)


def stretch_ink(contrast: np.ndarray, ink: InkMap) -> np.ndarray:
    """(h, w) contrast -> (h, w) ink in [0, 1]: noise floor -> 0, stroke core -> 1 (faint pencil included)."""
    span = max(ink.full_ink - ink.noise_floor, 1e-3)
    return np.clip((contrast - ink.noise_floor) / span, 0.0, 1.0).astype(np.float32)


def region_contrast(grey: np.ndarray, ink: InkMap, box: tuple[int, int, int, int]) -> tuple[np.ndarray, float]:
    """Contrast of an original-pixel box (x, y, w, h), rendered with its longer side <= RENDER_BOX.

    Returns ((h', w') contrast, render scale in pixels per original pixel). Uses the original image, not
    the analysis one, when the digit is small there, so a small digit in a big photo keeps its detail.
    """
    x, y, width, height = box
    scale = min(1.0, RENDER_BOX / max(width, height))
    if scale <= ink.scale * 1.05:  # the analysis image is already detailed enough: crop it
        ax0, ay0 = math.floor(x * ink.scale), math.floor(y * ink.scale)
        ax1 = max(ax0 + 1, math.ceil((x + width) * ink.scale))
        ay1 = max(ay0 + 1, math.ceil((y + height) * ink.scale))
        return ink.contrast[ay0:ay1, ax0:ax1], ink.scale
    crop = np.asarray(grey[y : y + height, x : x + width], dtype=np.float32)  # (height, width)
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    crop = resize_to(crop, out_w, out_h)
    paper = crop if ink.dark_ink else 1.0 - crop
    # The background estimate is smooth: bilinear upsampling of its piece of the analysis grid is exact enough.
    bx0, by0 = x * ink.scale, y * ink.scale
    map_x = (bx0 + (np.arange(out_w, dtype=np.float32) + 0.5) / scale * ink.scale - 0.5).astype(np.float32)
    map_y = (by0 + (np.arange(out_h, dtype=np.float32) + 0.5) / scale * ink.scale - 0.5).astype(np.float32)
    grid_x, grid_y = np.meshgrid(map_x, map_y)  # (out_h, out_w) each
    background = cv2.remap(ink.background, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return ink_contrast(paper, background), scale


def stroke_width(mask: np.ndarray) -> float:
    """(h, w) bool stroke mask -> mean stroke width in pixels, as 2 * area / boundary length."""
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    as_bytes = mask.astype(np.uint8)
    eroded = cv2.erode(as_bytes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), borderValue=0)
    boundary = area - int(np.count_nonzero(eroded))
    return 2.0 * area / max(boundary, 1)


def normalize_stroke(ink: np.ndarray) -> tuple[np.ndarray, float, int]:
    """(h, w) ink in [0, 1] -> (same, measured width at an 80 px box, pixels grown (+) or thinned (-)).

    Ballpoint in a big photo becomes hair-thin at 20 px and marker becomes a blob; MNIST strokes sit in a
    narrow band. Widths inside the band (all but a few % of MNIST) are left exactly as they are.
    """
    height, width = ink.shape
    box80 = RENDER_BOX / max(height, width)  # this image's pixels -> pixels of an 80 px box
    measured = stroke_width(ink >= 0.5) * box80
    if measured <= 0.0 or STROKE_RANGE_80[0] <= measured <= STROKE_RANGE_80[1]:
        return ink, measured, 0
    # Grow or thin by whole pixels on each side, toward the MNIST median, at this image's resolution.
    change = round((MNIST_STROKE_80 - measured) / 2.0 / box80)
    if change == 0:
        return ink, measured, 0
    size = 2 * abs(change) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    if change > 0:
        padded = np.pad(ink, abs(change))  # room to grow past the box
        return cv2.dilate(padded, kernel), measured, change
    thinned = cv2.erode(ink, kernel, borderValue=0)
    if thinned.max(initial=0.0) < 0.5:  # thinning would erase the digit: keep it as it is
        return ink, measured, 0
    return thinned, measured, change


def to_mnist(ink: np.ndarray) -> np.ndarray:
    """(h, w) ink in [0, 1] (white on black) -> (28, 28) float32 the MNIST way.

    Crop to the ink, scale the longer side to 20 px keeping the aspect ratio (area averaging when
    shrinking), then place it so the centre of mass is at (14, 14), rounded to whole pixels as MNIST's
    own centring was. An all-zero input gives all zeros.
    """
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32)
    rows, cols = np.nonzero(ink > 0)
    if rows.size == 0:
        return out
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # (h', w') tight box
    height, width = crop.shape
    factor = MNIST_BOX / max(height, width)
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    digit = np.clip(resize_to(crop.astype(np.float32), new_w, new_h), 0.0, 1.0)  # (new_h, new_w)
    peak = float(digit.max())
    if peak <= 0.0:
        return out
    digit = digit / peak  # MNIST's stroke cores are at full intensity; thin strokes lose it when shrunk
    total = float(digit.sum())
    ys, xs = np.arange(new_h, dtype=np.float64), np.arange(new_w, dtype=np.float64)
    center_y = float((digit.sum(axis=1) * ys).sum() / total)
    center_x = float((digit.sum(axis=0) * xs).sum() / total)
    top = min(max(round(MNIST_SIZE / 2 - center_y), 0), MNIST_SIZE - new_h)
    left = min(max(round(MNIST_SIZE / 2 - center_x), 0), MNIST_SIZE - new_w)
    out[top : top + new_h, left : left + new_w] = digit
    return out


def expand_box(box: tuple[int, int, int, int], shape: tuple[int, int], scale: float) -> tuple[int, int, int, int]:
    """Grow a box (x, y, w, h) in original pixels to take in the soft edges around the thresholded ink."""
    x, y, width, height = box
    margin = math.ceil(max(2.0 / scale, 0.04 * max(width, height)))
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(shape[1], x + width + margin), min(shape[0], y + height + margin)
    return x0, y0, x1 - x0, y1 - y0


def render_digit(grey: np.ndarray, ink: InkMap, box: tuple[int, int, int, int],
                 keep: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One digit's box (x, y, w, h) in original pixels -> ((28, 28) float32 in [0, 1], steps).

    `keep`: (h, w) bool over the whole analysis image, the pixels that belong to this digit (ink of
    neighbours or specks near the box is dropped); None keeps all the ink around the box.
    """
    box = expand_box(box, grey.shape, ink.scale)
    contrast, scale = region_contrast(grey, ink, box)  # (h', w')
    digit = stretch_ink(contrast, ink)
    if keep is not None:
        x, y, width, height = box
        ax0, ay0 = math.floor(x * ink.scale), math.floor(y * ink.scale)
        ax1 = max(ax0 + 1, math.ceil((x + width) * ink.scale))
        ay1 = max(ay0 + 1, math.ceil((y + height) * ink.scale))
        # Stretch the analysis mask to the render grid; a dilation keeps the soft, anti-aliased edges.
        grown = cv2.dilate(keep[ay0:ay1, ax0:ax1].astype(np.uint8), np.ones((5, 5), np.uint8))
        grown = cv2.resize(grown, (digit.shape[1], digit.shape[0]), interpolation=cv2.INTER_NEAREST)
        digit = digit * grown
    digit, measured, change = normalize_stroke(digit)
    steps = {"render_scale": round(scale, 4), "stroke_width_80": round(measured, 2), "stroke_change_px": change}
    return to_mnist(digit), steps


@dataclass(frozen=True)
class Preprocessed:
    """One image read as one digit: what the model sees, and how it got there."""

    image: np.ndarray  # (28, 28) float32 in [0, 1], white digit on black (zeros: no ink found)
    box: tuple[int, int, int, int] | None  # x, y, w, h of the ink in original pixels; None: no ink
    steps: dict[str, Any]


def ink_box(mask: np.ndarray, scale: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(h, w) bool analysis mask -> its bounding box (x, y, w, h) in original (H, W) pixels, or None."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    x0, y0 = math.floor(cols.min() / scale), math.floor(rows.min() / scale)
    x1 = min(shape[1], math.ceil((cols.max() + 1) / scale))
    y1 = min(shape[0], math.ceil((rows.max() + 1) / scale))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def preprocess(grey: np.ndarray) -> Preprocessed:
    """(H, W) float32 grey in [0, 1] holding one digit -> `Preprocessed` (the whole ink read as one digit).

    No specks, lines or neighbours are removed here: that is `digitrec.segment`'s job.
    """
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 2 or grey.size == 0:
        raise ValueError(f"expected a non-empty (H, W) grey image, got shape {grey.shape}")
    ink = find_ink(grey)
    box = ink_box(ink.mask, ink.scale, grey.shape)
    if box is None:
        return Preprocessed(np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32), None, {**ink.steps, "ink": "none"})
    image, render_steps = render_digit(grey, ink, box)
    return Preprocessed(image, box, {**ink.steps, **render_steps})
