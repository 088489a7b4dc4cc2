"""Find the digits in an ink mask: rows of them, top to bottom, each row left to right, each digit with its
box and its own pixels.

Works on `preprocess.InkMap.mask` (analysis resolution), pure numpy/OpenCV:

1. faint ruled lines (thin or faint runs spanning the page) are removed, and the strokes that crossed
   them are mended;
2. connected components; specks (tiny next to the largest), paper edges (thin strips along the
   image's border, as a filled canvas leaves once inverted), and creases and the edges of shadows, paper
   or table crossing the whole image are dropped;
3. rows: the components of digit height are clustered by their vertical extent (two components are in
   one row when they overlap vertically by half the shorter one's height, transitively), and the small
   ones (a 5's bar, a dot) join the row they sit in; nothing is ever merged across rows;
4. in each row, fragments of one digit are merged when they overlap horizontally (a 5's detached bar, a
   broken stroke, the pieces of a 4);
5. groups far shorter than their row's tallest (dots, dashes), solid blobs and dots (a tap), and
   scattered noise are dropped.

Touching digits stay one group here; `digitrec.split` offers cut paths through them and the recogniser
keeps the reading the classifier is surest of.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from digitrec import smallarrays
from digitrec.frames import remove_frames
from digitrec.preprocess import MAX_BOLD_SHARE, MAX_WRITING_SHARE, InkMap, stroke_width

MAX_COMPONENTS = 400  # bound the work on noise: only the largest components are considered
SPECK_AREA = 0.03  # a component under 3% of the largest one's area is a speck
MIN_DIGIT_HEIGHT = 0.35  # a group under 35% of the tallest group's height is not a digit of the row
MIN_DIGIT_PIXELS = 5  # ... nor one under 5 analysis pixels tall
MERGE_OVERLAP = 0.5  # merge groups whose column ranges overlap by half the narrower one's width
RULED_LINE_SPAN = 0.45  # long runs in one band of rows over 45% of the width may be a ruled line (its
# far end may fade into the lighting: the bundled ruled-ballpoint example keeps only 56% of its line)
GRID_SPAN = 0.8  # on ruled paper, straight upright runs this long (x the height) are squared paper's columns
MAX_INK_FRACTION = MAX_WRITING_SHARE  # more "ink" than this: noise or a photo of something else, not writing


NOISE_COMPONENTS = 8  # a group of this many components whose largest holds under half its ink: scattered noise
MAX_KEPT_COMPONENTS = 250  # more digit-sized components than this in one image: noise, not writing
BLOB_THICKNESS = 0.7  # a group whose thickest stroke is this much of its longer side is a dot or a blob
ROW_OVERLAP = 0.5  # two components share a row when they overlap vertically by this much of the shorter
BROKEN_GAP = 0.08  # pieces stacked with a vertical gap under this (x their joint height) are one broken digit
NEAR_ROW = 0.25  # a small piece centred this close (x the row's height) above or below a row belongs to it
EDGE_ASPECT = 12  # a strip along the border this many times longer than wide is the paper's edge
# A component crossing the whole image (touching two opposite borders) is no writing when it is ...
CREASE_THINNESS = 0.02  # ... a crease or a rule: its ink under this x its span squared (stroke < 2% of length)
EDGE_STEP = 0.4  # ... or the edge of a shadow or of the paper: the paper's tone either side differs this much
# A thin piece lying along one border (touching it over STRIP_CONTACT of its length, STRIP_ASPECT times longer
# than thick, the picture going on beyond it) is the edge of the paper or of the table beyond it, cut by the frame.
STRIP_CONTACT = 0.9
STRIP_ASPECT = 6
# A piece touching the border whose surroundings are in part (a fifth) as dark as itself (its contrast against
# them under SIDE_TONE of its contrast against the paper) is the dark side of an edge or a shadow. (0.15 also
# took faint blurred digits, whose halo is nearly as dark as their faint core; the edges measured 0.0 or less.)
SIDE_TONE = 0.05


@dataclass(frozen=True)
class Group:
    """One digit candidate, in analysis pixels: its components and the pixels of them it owns."""

    labels: tuple[int, ...]  # component labels in `Segmentation.labels`
    box: tuple[int, int, int, int]  # x, y, w, h in analysis pixels
    # A piece cut out of touching digits: (top row, first columns, end columns): for each row from `top`,
    # the piece owns the columns [first, end) (absolute analysis columns). None: all of the box.
    bounds: tuple[int, tuple[int, ...], tuple[int, ...]] | None = None


@dataclass(frozen=True)
class Segmentation:
    """Digit groups found in one image: `rows` top to bottom, each left to right; `groups` all of them."""

    labels: np.ndarray  # (h, w) int32 component labels at analysis resolution (0 = background)
    groups: tuple[Group, ...]  # the rows' groups in reading order
    lines_removed: int
    specks_removed: int
    rows: tuple[tuple[Group, ...], ...] = ()
    # The share of the ink that lay along the picture's border as strips (`is_paper_edge`, `is_border_strip`):
    # the frame's edge, or the paper left between the frame and a bold digit read in the wrong polarity.
    framed_share: float = 0.0


def remove_ruled_lines(mask: np.ndarray, contrast: np.ndarray) -> tuple[np.ndarray, int]:
    """(h, w) bool mask -> (mask without ruled lines, number removed).

    A ruled line spans most of the page's width and is thinner or fainter than the writing; a digit's bar
    spanning a tightly cropped image is as thick and dark as the rest of the digit, so it stays.
    """
    _height, width = mask.shape
    run = int(0.4 * width)
    if run < 8 or np.count_nonzero(mask, axis=1).max() < RULED_LINE_SPAN * width:  # no row can hold a line
        return mask, 0
    # Close small breaks first (noise, JPEG, a faint stretch), then keep only long horizontal runs.
    as_bytes = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((1, 7), np.uint8))
    horizontal = cv2.morphologyEx(as_bytes, cv2.MORPH_OPEN, np.ones((1, run), np.uint8)) & mask.astype(np.uint8)
    if not horizontal.any():
        return mask, 0
    # A line is a band of rows whose long runs together span the page (a digit crossing it splits its run).
    line_rows = horizontal.sum(axis=1) >= RULED_LINE_SPAN * width  # (h,)
    if not line_rows.any():
        return mask, 0
    rest = mask & (horizontal == 0)
    if not rest.any():
        return mask, 0  # nothing but the "line": it may be the digit (a dash, a 1 lying down); keep it
    rest_contrast = float(smallarrays.median(contrast[rest]))
    rest_width = stroke_width(rest)
    lines = np.zeros_like(mask)
    removed = 0
    edges = np.diff(np.concatenate([[0], line_rows.astype(np.int8), [0]]))
    for top, bottom in zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist(), strict=True):
        band = np.zeros_like(mask)
        band[top:bottom] = horizontal[top:bottom] > 0
        # Thickness: the ink a few rows either side counts too (a digit's bar is as thick as its strokes).
        columns = band[top:bottom].any(axis=0)
        around = mask[max(0, top - 3) : bottom + 3, columns]
        thickness = float(smallarrays.median(around.sum(axis=0))) if around.size else 0.0
        faint = float(smallarrays.median(contrast[band])) < 0.7 * rest_contrast
        if faint or thickness < 0.7 * rest_width:
            lines |= band
            removed += 1
    if not removed:
        return mask, 0
    without = mask & ~lines
    # Mend strokes that crossed a line: close vertically across it, only inside the line's pixels.
    tall = max(3, int(np.ceil(lines.sum(axis=0).max())) + 2)
    mended = cv2.morphologyEx(without.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((tall, 1), np.uint8)) > 0
    return without | (mended & lines), removed


def remove_grid_columns(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(h, w) bool mask of ruled paper (its horizontal lines already removed) -> (mask without the grid's
    vertical lines, number removed).

    Squared paper's vertical lines are straight, upright and span the page; once the horizontal ones are
    gone each is a perfect "1". Two or more such columns spanning GRID_SPAN of the height are the grid
    (a written 1 is neither that straight nor that long on ruled paper, whose lines are closer than that).
    """
    height, _width = mask.shape
    run = int(GRID_SPAN * height)
    if run < 8:
        return mask, 0
    vertical = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((run, 1), np.uint8)) > 0
    columns = vertical.any(axis=0)
    starts = np.flatnonzero(np.diff(np.concatenate([[0], columns.astype(np.int8)])) == 1)
    if len(starts) < 2:
        return mask, 0
    ends = np.flatnonzero(np.diff(np.concatenate([columns.astype(np.int8), [0]])) == -1) + 1
    without = mask & ~vertical
    # Mend strokes that crossed a column: close horizontally across it, only inside the column's pixels.
    wide = max(3, int((ends - starts).max()) + 2)
    mended = cv2.morphologyEx(without.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((1, wide), np.uint8)) > 0
    return without | (mended & vertical), len(starts)


def is_stray_line(component: np.ndarray, group_width: int) -> bool:
    """A thin horizontal piece much wider than the group it overlaps: a leftover of a ruled line or an
    underline, not a digit's bar (a bar is no wider than its digit)."""
    _, _, w, h, _ = component
    return bool(h * 4 < w and w > 1.5 * group_width)


def group_components(stats: np.ndarray, keep: list[int]) -> list[list[int]]:
    """Merge components whose column ranges overlap by MERGE_OVERLAP of the narrower: fragments of one digit.

    stats: (n, 5) OpenCV component stats (x, y, w, h, area). Returns lists of labels, left to right.
    """
    groups: list[list[int]] = []
    ranges: list[list[int]] = []  # [x0, x1) per group
    for label in sorted(keep, key=lambda index: stats[index][0]):
        x, w = int(stats[label][0]), int(stats[label][2])
        merged = False
        for index, (x0, x1) in enumerate(ranges):
            overlap = min(x1, x + w) - max(x0, x)
            if overlap >= MERGE_OVERLAP * min(w, x1 - x0) and not is_stray_line(stats[label], x1 - x0):
                groups[index].append(label)
                ranges[index] = [min(x0, x), max(x1, x + w)]
                merged = True
                break
        if not merged:
            groups.append([label])
            ranges.append([x, x + w])
    # A merge widens a group, which may now overlap its neighbour: repeat until nothing changes.
    changed = True
    while changed and len(groups) > 1:
        changed = False
        for index in range(len(groups) - 1):
            (a0, a1), (b0, b1) = ranges[index], ranges[index + 1]
            if min(a1, b1) - max(a0, b0) >= MERGE_OVERLAP * min(a1 - a0, b1 - b0):
                groups[index] += groups.pop(index + 1)
                ranges[index] = [min(a0, b0), max(a1, b1)]
                ranges.pop(index + 1)
                changed = True
                break
    return groups


def union_box(stats: np.ndarray, labels: list[int]) -> tuple[int, int, int, int]:
    x0 = min(int(stats[label][0]) for label in labels)
    y0 = min(int(stats[label][1]) for label in labels)
    x1 = max(int(stats[label][0] + stats[label][2]) for label in labels)
    y1 = max(int(stats[label][1] + stats[label][3]) for label in labels)
    return x0, y0, x1 - x0, y1 - y0


def is_paper_edge(component: np.ndarray, shape: tuple[int, int]) -> bool:
    """A thin strip along one border, nearly as long as that side: the edge of the paper or of a filled
    canvas (white once inverted), not writing. A digit touching the border is not this thin."""
    x, y, w, h, _ = (int(value) for value in component)
    height, width = shape
    vertical = (x == 0 or x + w == width) and h >= 0.8 * height and w * EDGE_ASPECT < h
    horizontal = (y == 0 or y + h == height) and w >= 0.8 * width and h * EDGE_ASPECT < w
    return vertical or horizontal


def is_border_strip(component: np.ndarray, labels: np.ndarray, label: int) -> bool:
    """A thin piece lying along one border for most of its length, the picture going on beyond it: the
    edge of the paper, of the table or of a shadow, cut by the frame. A written stroke meets the border at
    its end or runs into a corner; it does not lie along the frame's edge."""
    x, y, w, h, area = (int(value) for value in component)
    height, width = labels.shape
    # The outermost three pixels count as the border (a photo's last columns are often lighter: resampling, blur);
    # for a strip crossing the whole picture, as many as it is thick: the line of a table's wavy edge, cut by
    # the frame at both ends, runs a few pixels inside it (a written 1 by the border stops short of the ends).
    bands = []
    if h >= STRIP_ASPECT * w and w <= 0.5 * width:  # upright: along the left or right border
        near = max(3, round(area / max(h, 1))) if y <= 2 and y + h >= height - 2 else 3
        bands += [labels[y : y + h, :near]] if x <= 2 else []
        bands += [labels[y : y + h, -near:]] if x + w >= width - 2 else []
    if w >= STRIP_ASPECT * h and h <= 0.5 * height:  # lying: along the top or bottom border
        near = max(3, round(area / max(w, 1))) if x <= 2 and x + w >= width - 2 else 3
        bands += [labels[:near, x : x + w].T] if y <= 2 else []
        bands += [labels[-near:, x : x + w].T] if y + h >= height - 2 else []
    return any(np.count_nonzero((band == label).any(axis=1)) >= STRIP_CONTACT * band.shape[0] for band in bands)


def is_shadow_band(component: np.ndarray, labels: np.ndarray, label: int, ink: InkMap) -> bool:
    """A piece touching the border that is not darker than all of its surroundings: a pen stroke has paper
    on every side, but the dark side of an edge (paper, table, a shadow entering the picture) has more of
    its own tone beside it, which the lighting estimate took for paper. Judged on the picture's own tones
    (`InkMap.paper`, smoothed a little): a fifth of the ring around the piece (other ink left out) is
    as dark as the piece itself."""
    x, y, w, h, _ = (int(value) for value in component)
    height, width = labels.shape
    if ink.paper is None or (x > 0 and y > 0 and x + w < width and y + h < height):
        return False
    mask = labels == label
    thickness = max(1.0, stroke_width(mask[y : y + h, x : x + w]))
    inner, outer = math.ceil(thickness) + 1, math.ceil(2.5 * thickness) + 2
    x0, y0, x1, y1 = max(0, x - outer), max(0, y - outer), min(width, x + w + outer), min(height, y + h + outer)
    window = mask[y0:y1, x0:x1].astype(np.uint8)  # (h', w')
    near = cv2.dilate(window, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * inner + 1,) * 2)) > 0
    far = cv2.dilate(window, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * outer + 1,) * 2)) > 0
    ring = far & ~near & ~ink.mask[y0:y1, x0:x1]
    if np.count_nonzero(ring) < 20:
        return False  # nothing around it to compare with: a digit filling the picture
    tones = cv2.GaussianBlur(ink.paper[y0:y1, x0:x1], (0, 0), 1.0)
    own = float(smallarrays.median(tones[window > 0]))
    dark, light = (float(v) for v in np.percentile(tones[ring], [20, 80]))
    against_paper = (light - own) / max(light, 1e-3)
    # Not darker than its lighter surroundings, or much lighter than its darker ones: the outline of a stroke
    # wider than the lighting estimate's window (its core is darker), or the paper's halo in the wrong
    # polarity; neither is judged here.
    against_dark = (dark - own) / max(dark, 1e-3)
    return against_paper > 0.0 and -0.5 * against_paper < against_dark < SIDE_TONE * against_paper


def is_crease_or_edge(component: np.ndarray, labels: np.ndarray, label: int, background: np.ndarray) -> bool:
    """A component crossing the whole image from border to border that is a crease, a fold or a rule
    (a stroke under CREASE_THINNESS of its length), or the edge of a shadow, of the paper or of the table
    beyond it (the paper's tone, `InkMap.background`, differs by EDGE_STEP across it): photographed blank
    paper, read as a "1" by anyone. A digit cropped tight against two borders is thicker than a crease,
    and has paper of one tone either side (or a border: then it is kept).
    """
    x, y, w, h, area = (int(value) for value in component)
    height, width = labels.shape
    spans = []
    if y <= 1 and y + h >= height - 1:
        spans.append(False)  # top to bottom: look across its rows
    if x <= 1 and x + w >= width - 1:
        spans.append(True)  # left to right: look across its columns
    for across in spans:
        window = labels == label  # the whole picture: the paper either side of it is looked at
        tone = background
        if across:
            window, tone = window.T, tone.T
        length = window.shape[0]
        if area < CREASE_THINNESS * length * length:
            return True
        rows = np.flatnonzero(window.any(axis=1))
        first = window[rows].argmax(axis=1)
        last = window.shape[1] - 1 - window[rows, ::-1].argmax(axis=1)
        gap = max(2, int(np.median(last - first + 1)))  # a stroke's width away from it, on either side
        left, right = first - gap, last + gap
        inside = (left >= 0) & (right < window.shape[1])
        if inside.sum() < 0.5 * len(rows):
            continue  # it runs along a border: one side is not in the picture
        before = float(np.median(tone[rows[inside], left[inside]]))
        after = float(np.median(tone[rows[inside], right[inside]]))
        if abs(before - after) >= EDGE_STEP * max(before, after, 1e-3):
            return True
    return False


def find_rows(stats: np.ndarray, keep: list[int]) -> list[list[int]]:
    """Components -> rows of component labels, top to bottom.

    Components at least 40% as tall as the tallest ("anchors") are linked when they overlap vertically by
    ROW_OVERLAP of the shorter one; linked anchors form a row (single linkage, so a row may drift up or
    down across the page). A component much taller than the others (digits touching across two rows)
    links nothing; pieces of one broken digit stacked with a tiny gap are linked. Every other component
    joins the row whose extent (grown by NEAR_ROW) holds its centre, the nearest if several; one that
    sits in no row starts its own (and is judged as a digit there).
    """
    if len(keep) <= 1:  # most single digits: one component is its own row (what the rest would find, faster)
        return [list(keep)] if keep else []
    tops = np.array([stats[label][1] for label in keep], np.float64)
    heights = np.array([stats[label][3] for label in keep], np.float64)
    bottoms = tops + heights
    lefts = np.array([stats[label][0] for label in keep], np.float64)
    rights = lefts + np.array([stats[label][2] for label in keep], np.float64)
    anchor = heights >= 0.4 * heights.max()
    typical = float(smallarrays.median(heights[anchor]))
    linking = anchor & (heights <= 1.6 * typical)
    parent = list(range(len(keep)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    linkers = np.nonzero(linking)[0]
    if linkers.size:
        overlap = (np.minimum(bottoms[linkers, None], bottoms[None, linkers])
                   - np.maximum(tops[linkers, None], tops[None, linkers]))  # (k, k)
        shorter = np.minimum(heights[linkers, None], heights[None, linkers])
        # Pieces of one broken digit stacked one above the other (a gap of a pixel or two, much the same
        # columns) are one digit, so one row; two rows of digits leave a real gap between them.
        span = (np.maximum(bottoms[linkers, None], bottoms[None, linkers])
                - np.minimum(tops[linkers, None], tops[None, linkers]))
        across = (np.minimum(rights[linkers, None], rights[None, linkers])
                  - np.maximum(lefts[linkers, None], lefts[None, linkers]))
        narrower = np.minimum((rights - lefts)[linkers, None], (rights - lefts)[None, linkers])
        stacked = (-overlap <= BROKEN_GAP * span + 1) & (across >= 0.5 * narrower)
        for a, b in zip(*np.nonzero(np.triu((overlap >= ROW_OVERLAP * shorter) | stacked, 1)), strict=True):
            parent[root(int(linkers[a]))] = root(int(linkers[b]))
    rows: dict[int, list[int]] = {}
    for index in linkers.tolist():
        rows.setdefault(root(int(index)), []).append(int(index))
    bands = {key: (tops[members].min(), bottoms[members].max()) for key, members in rows.items()}
    for index in range(len(keep)):
        if linking[index]:
            continue
        centre = (tops[index] + bottoms[index]) / 2
        # Inside a row's extent, or just above or below it (a 5's bar, a 7's flag): the nearest such row.
        near = [(max(top - centre, centre - bottom, 0.0), abs(centre - (top + bottom) / 2), key)
                for key, (top, bottom) in bands.items()
                if top - NEAR_ROW * (bottom - top) <= centre <= bottom + NEAR_ROW * (bottom - top)]
        if near:
            rows[min(near)[2]].append(index)
        else:
            rows[-1 - index] = [index]
            bands[-1 - index] = (tops[index], bottoms[index])
    ordered = sorted(rows.values(), key=lambda members: float(np.median((tops[members] + bottoms[members]) / 2)))
    return [[keep[index] for index in members] for members in ordered]


def is_dot_or_noise(labels: np.ndarray, stats: np.ndarray, members: list[int],
                    box: tuple[int, int, int, int]) -> bool:
    """A tap or blob (its thickest stroke nearly as wide as the whole), or scattered noise (many pieces,
    none holding most of the ink): not a written digit."""
    x, y, w, h = box
    areas = [int(stats[label][cv2.CC_STAT_AREA]) for label in members]
    if len(members) >= NOISE_COMPONENTS and max(areas) < 0.5 * sum(areas):
        return True
    if max(w, h) < 6:
        return False  # too small to judge; the height rules decide
    window = has_label(labels[y : y + h, x : x + w], members).astype(np.uint8)
    framed = cv2.copyMakeBorder(window, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)  # np.pad(window, 1), faster
    thickest = 2.0 * float(cv2.distanceTransform(framed, cv2.DIST_L2, 3).max())
    return thickest >= BLOB_THICKNESS * max(w, h)


def segment_ink(ink: InkMap, max_ink: float = MAX_INK_FRACTION) -> Segmentation:
    """An `InkMap` -> the digit groups in it, by rows (none for a blank or ink-free image, or one whose ink
    is over `max_ink` of the picture: a bold 1's tight crop re-read in the other polarity may be more)."""
    empty = Segmentation(np.zeros(ink.mask.shape, np.int32), (), 0, 0)
    if not ink.mask.any() or ink.mask.mean() > (max(max_ink, MAX_BOLD_SHARE) if ink.tight_crop else max_ink):
        return empty
    # 1. printed frames (a form's boxes), ruled lines
    mask, frames = remove_frames(ink.mask)
    mask, lines = remove_ruled_lines(mask, ink.contrast)
    if lines:
        mask, columns = remove_grid_columns(mask)
        lines += columns
    lines += frames
    # 2. components; specks; paper edges
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return Segmentation(labels, (), lines, 0)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1][:MAX_COMPONENTS] + 1
    largest = int(areas.max())
    keep, framed = [], 0
    for label in (int(label) for label in order if stats[label][cv2.CC_STAT_AREA] >= SPECK_AREA * largest):
        if is_paper_edge(stats[label], mask.shape) or is_border_strip(stats[label], labels, label):
            framed += int(stats[label][cv2.CC_STAT_AREA])
        elif not is_crease_or_edge(stats[label], labels, label, ink.background) \
                and not is_shadow_band(stats[label], labels, label, ink):
            keep.append(label)
    specks = count - 1 - len(keep)
    if len(keep) > MAX_KEPT_COMPONENTS:  # hundreds of similar pieces: noise, not writing
        return Segmentation(labels, (), lines, count - 1)
    # 3. rows; 4. fragments of one digit, per row
    tallest = max((int(stats[label][3]) for label in keep), default=0)
    rows = []
    for row in find_rows(stats, keep):
        grouped = group_components(stats, row)
        boxes = [union_box(stats, labels_) for labels_ in grouped]
        row_tallest = max(box[3] for box in boxes)
        # 5. dots, dashes, blobs, noise
        groups = []
        for labels_, box in zip(grouped, boxes, strict=True):
            _x, _y, w, h = box
            area = sum(int(stats[label][cv2.CC_STAT_AREA]) for label in labels_)
            if h < MIN_DIGIT_HEIGHT * row_tallest or h < 0.25 * tallest or h < MIN_DIGIT_PIXELS:
                specks += len(labels_)
                continue
            if area > 0.85 * w * h and w > 0.6 * h and w * h > 16:
                specks += len(labels_)  # a solid block: a smudge or a dark object, not a written digit
                continue
            if is_dot_or_noise(labels, stats, labels_, box):
                specks += len(labels_)
                continue
            groups.append(Group(tuple(labels_), box))
        if groups:
            rows.append(tuple(groups))
    return Segmentation(labels, tuple(group for row in rows for group in row), lines, specks, tuple(rows),
                        framed / max(1, int(np.count_nonzero(mask))))


def has_label(labels: np.ndarray, members: tuple[int, ...] | list[int]) -> np.ndarray:
    """np.isin(labels, members), with a plain comparison for one label (most groups): np.isin's own Python
    was ~20 us a call, a share of a small image's whole reading."""
    return labels == members[0] if len(members) == 1 else np.isin(labels, members)


def group_mask(segmentation: Segmentation, group: Group) -> np.ndarray:
    """(h, w) bool: the pixels of one group's components inside its box (a cut piece: between its cuts)."""
    x, y, w, h = group.box
    mask = np.zeros(segmentation.labels.shape, bool)
    window = has_label(segmentation.labels[y : y + h, x : x + w], group.labels)  # (h, w)
    if group.bounds is not None:
        top, firsts, ends = group.bounds
        rows = np.arange(y, y + h) - top
        columns = np.arange(x, x + w)
        first, end = np.asarray(firsts)[rows], np.asarray(ends)[rows]
        window &= (columns[None, :] >= first[:, None]) & (columns[None, :] < end[:, None])
    mask[y : y + h, x : x + w] = window
    return mask


def merge_groups(groups: tuple[Group, ...]) -> Group:
    """All groups as one (reading the whole image as one digit)."""
    x0 = min(g.box[0] for g in groups)
    y0 = min(g.box[1] for g in groups)
    x1 = max(g.box[0] + g.box[2] for g in groups)
    y1 = max(g.box[1] + g.box[3] for g in groups)
    return Group(tuple(label for g in groups for label in g.labels), (x0, y0, x1 - x0, y1 - y0))


def split_group(segmentation: Segmentation, group: Group, parts: int) -> tuple[Group, ...]:
    """Cut a group of touching digits into `parts` at the column-projection minima near even spacing.

    Each cut is searched within a third of a part's width of its even position, so a digit is never cut
    into slivers; the ink column count decides, the nearest column to the even position breaks ties.
    """
    mask = group_mask(segmentation, group)
    x, y, w, h = group.box
    profile = mask[y : y + h, x : x + w].sum(axis=0)  # (w,) ink per column
    step = w / parts
    cuts = [0]
    for index in range(1, parts):
        center = index * step
        low, high = max(cuts[-1] + 1, round(center - step / 3)), min(w - 1, round(center + step / 3))
        if low >= high:
            return (group,)
        window = np.arange(low, high + 1)
        cost = profile[window] + np.abs(window - center) / (4.0 * step)  # fewest ink pixels, then nearest
        cuts.append(int(window[np.argmin(cost)]))
    cuts.append(w)
    pieces = []
    for start, stop in itertools.pairwise(cuts):
        rows = np.nonzero(mask[y : y + h, x + start : x + stop].any(axis=1))[0]
        if rows.size == 0 or rows[-1] - rows[0] + 1 < MIN_DIGIT_HEIGHT * h:
            return (group,)  # a piece that is only a sliver (a line's tail, a ligature) is no digit
        box = (x + start, y + int(rows[0]), stop - start, int(rows[-1] - rows[0] + 1))
        pieces.append(Group(group.labels, box))  # the box's columns keep the piece to its own ink
    return tuple(pieces)

