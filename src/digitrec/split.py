"""Cut touching digits apart: candidate cuts through a group, the pieces between them, and the best reading.

A group of touching digits is over-segmented, then the classifier chooses:

1. `cut_paths`: candidate cuts, each a column per row from top to bottom. Straight cuts at the ink's
   thinnest columns (column-projection minima), and curved ones: minimum-cost paths from top to bottom
   (and bottom to top) that cross as little ink as they can, so a cut can follow the valley between two
   digits that lean into each other or touch at one point (the idea of drop-fall and contour-valley
   cutting, found by dynamic programming rather than by rules);
2. `lattice_pieces`: every run between two cuts (or a group edge) as wide as a digit can be is a piece;
3. `best_readings`: the recogniser scores each piece (how sure the classifier is, how digit-like, how
   digit-shaped) and the best and second-best ways through the lattice are found; their margin is the
   segmentation's own doubt.

Pure numpy on analysis-resolution masks; no model here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from digitrec.segment import Group

DIAGONAL_COST = 0.25  # a cut path's sideways step costs a quarter of an ink pixel crossed: straight is preferred
MIN_PIECE = 0.06  # a piece narrower than this (x the group's height) is a sliver, not a digit
MAX_PIECE = 1.3  # ... and one wider than this is more than one digit
MIN_CUT_SPACING = 0.07  # cuts closer than this (x height) are the same cut
MAX_PATH_HEIGHT = 96  # paths are searched on the group shrunk to at most this many rows (speed)


def column_minima(profile: np.ndarray, radius: int) -> list[int]:
    """Columns where the ink count is the lowest within `radius` either side (a plateau's centre once)."""
    width = len(profile)
    padded = np.pad(profile.astype(np.float64), radius, constant_values=np.inf)
    window_min = np.min(np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1), axis=1)  # (w,)
    minima = np.nonzero(profile <= window_min)[0]
    out: list[int] = []
    run: list[int] = []
    for column in minima:
        if run and column != run[-1] + 1:
            out.append(run[len(run) // 2])
            run = []
        run.append(int(column))
    if run:
        out.append(run[len(run) // 2])
    return [column for column in out if 0 < column < width]


def banded_paths(cost: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest top-to-bottom path from each top column, staying within `reach` columns of it.

    cost: (h, w) per pixel. A path goes down one row at a time, straight or one column sideways
    (DIAGONAL_COST extra). Returns (each start column's path cost (w,), paths (w, h) columns).
    All start columns are searched at once: the state is (start column, offset from it).
    """
    height, width = cost.shape
    offsets = np.arange(-reach, reach + 1)  # (k,)
    columns = np.arange(width)[:, None] + offsets[None, :]  # (w, k) the column each state stands on
    outside = (columns < 0) | (columns >= width)
    clipped = columns.clip(0, width - 1)
    step_cost = np.where(outside[None], np.inf, cost[:, clipped])  # (h, w, k): one gather, not one per row
    total = np.where(offsets[None, :] != 0, np.inf, step_cost[0])  # (w, k): start at offset 0
    steps = np.zeros((height, width, len(offsets)), np.int8)
    # The three ways into each state, in one buffer made once (a row's loop was mostly np.pad's overhead):
    # [0] from the state one column to the left, [1] straight down, [2] from the right; inf at the band's edges.
    choices = np.full((3, width, len(offsets)), np.inf)
    for row in range(1, height):
        np.add(total[:, :-1], DIAGONAL_COST, out=choices[0, :, 1:])
        choices[1] = total
        np.add(total[:, 1:], DIAGONAL_COST, out=choices[2, :, :-1])
        choice = np.argmin(choices, axis=0)  # (w, k)
        total = choices.min(axis=0) + step_cost[row]
        steps[row] = choice - 1
    best = np.argmin(total, axis=1)  # (w,) the offset each start's path ends at
    starts = np.arange(width)
    paths = np.empty((width, height), np.int64)
    state = best.copy()
    for row in range(height - 1, -1, -1):
        paths[:, row] = starts + offsets[state]
        state = state + steps[row, starts, state]
    return total[starts, best], paths


def cut_paths(mask: np.ndarray, max_cuts: int = 40) -> list[np.ndarray]:
    """(h, w) bool ink of one group -> candidate cuts, left to right: (h,) int column per row each.

    A cut at column c separates columns < c from columns >= c in its row.
    """
    height, width = mask.shape
    if width < 3 or height < 3:
        return []
    spacing = max(2.0, MIN_CUT_SPACING * height)
    candidates: list[tuple[float, np.ndarray]] = []
    # 1. straight cuts at the thinnest columns
    profile = mask.sum(axis=0)
    for column in column_minima(profile, max(1, round(spacing))):
        candidates.append((float(profile[column]), np.full(height, column, np.int64)))
    # 2. curved cuts: from each column of the top (and of the bottom), the cheapest path down (up) that
    # strays at most a third of the height sideways; the locally cheapest of them. Tall groups shrunk first.
    shrink = max(1, math.ceil(height / MAX_PATH_HEIGHT))
    small = mask[::shrink].astype(np.float64)  # (h / shrink, w): rows dropped, columns kept
    reach = max(1, round(small.shape[0] / 3))
    for flipped in (False, True):
        totals, paths = banded_paths(small[::-1] if flipped else small, reach)
        for start in column_minima(totals, max(1, round(spacing))):
            path = paths[start][::-1] if flipped else paths[start]
            candidates.append((float(totals[start]) * shrink, np.repeat(path, shrink)[:height]))
    # 3. the cheapest cut first; one cut per place; none at the very edges
    candidates.sort(key=lambda item: item[0])
    kept: list[np.ndarray] = []
    centres: list[float] = []
    for _, path in candidates:
        centre = float(path.mean())
        if centre < MIN_PIECE * height or centre > width - MIN_PIECE * height:
            continue
        if any(abs(centre - other) < spacing for other in centres):
            continue
        kept.append(path)
        centres.append(centre)
        if len(kept) >= max_cuts:
            break
    return [path for _, path in sorted(zip(centres, kept, strict=True), key=lambda item: item[0])]


@dataclass(frozen=True)
class Piece:
    """One run of a group between two cuts (or its edges): nodes `start` < `stop` of the lattice."""

    start: int
    stop: int
    group: Group  # the piece as a group of its own (its box, and the columns it owns per row)


def lattice_pieces(mask: np.ndarray, group: Group, cuts: list[np.ndarray]) -> list[Piece]:
    """All pieces between cuts i < j of one group (node 0: the left edge, node len(cuts)+1: the right).

    mask: (h, w) bool, the group's ink inside its box. A piece must be a digit's width (MIN_PIECE to
    MAX_PIECE x the group's height, measured between its cuts) and hold ink at least a third of the
    group's height; the whole group is always a piece, so there is always a reading.
    """
    x, y, width, height = group.box
    left, right = np.zeros(height, np.int64), np.full(height, width, np.int64)
    nodes = [left, *cuts, right]
    columns = np.arange(width)
    ink_total = max(1, int(mask.sum()))
    pieces = []
    for start in range(len(nodes) - 1):
        for stop in range(start + 1, len(nodes)):
            whole = start == 0 and stop == len(nodes) - 1
            span = float((nodes[stop] - nodes[start]).mean())
            if not whole and (not MIN_PIECE * height <= span <= MAX_PIECE * height
                              or (nodes[stop] < nodes[start]).any()):
                continue
            own = mask & (columns[None, :] >= nodes[start][:, None]) & (columns[None, :] < nodes[stop][:, None])
            rows, cols = np.nonzero(own)
            if not whole and (rows.size < 0.04 * ink_total or rows.max() - rows.min() + 1 < height / 3):
                continue
            if rows.size == 0:
                continue
            box = (x + int(cols.min()), y + int(rows.min()), int(cols.max() - cols.min() + 1),
                   int(rows.max() - rows.min() + 1))
            bounds = None if whole else (y, tuple(int(c) + x for c in nodes[start]),
                                         tuple(int(c) + x for c in nodes[stop]))
            pieces.append(Piece(start, stop, Group(group.labels, box, bounds)))
    return pieces


def best_readings(pieces: list[Piece], scores: np.ndarray, nodes: int,
                  extra_digit: float) -> tuple[list[int], float, float]:
    """The best way from node 0 to node `nodes - 1` through the pieces (higher is better).

    scores: (len(pieces),) each piece's log-confidence. A reading of k pieces is worth the sum of its
    pieces' scores (the log of the product of their confidences), less `extra_digit` per piece beyond
    the first: each cut must earn its keep. (The mean, a geometric mean of confidences, was tried: it
    cut 2% of single MNIST digits in two.)
    Returns (indices of the pieces taken, left to right; the best worth; the second-best worth, -inf when
    there is no other way).
    """
    # best[node][k]: up to two (total, piece index, rank of the predecessor's entry) with k pieces
    best: list[dict[int, list[tuple[float, int, int]]]] = [{} for _ in range(nodes)]
    best[0][0] = [(0.0, -1, -1)]
    arriving: list[list[int]] = [[] for _ in range(nodes)]
    for index, piece in enumerate(pieces):
        arriving[piece.stop].append(index)
    for node in range(1, nodes):
        options: dict[int, list[tuple[float, int, int]]] = {}
        for index in arriving[node]:
            for count, entries in best[pieces[index].start].items():
                for rank, (total, _, _) in enumerate(entries):
                    options.setdefault(count + 1, []).append((total + float(scores[index]), index, rank))
        best[node] = {count: sorted(entries, key=lambda entry: -entry[0])[:2] for count, entries in options.items()}
    worths = sorted(((total - extra_digit * (count - 1), count, rank)
                     for count, entries in best[-1].items() for rank, (total, _, _) in enumerate(entries)),
                    reverse=True)
    if not worths:
        return [], -math.inf, -math.inf
    _, count, rank = worths[0]
    taken: list[int] = []
    node = nodes - 1
    while node > 0:
        _, index, previous_rank = best[node][count][rank]
        taken.append(index)
        node, count, rank = pieces[index].start, count - 1, previous_rank
    second = worths[1][0] if len(worths) > 1 else -math.inf
    return taken[::-1], worths[0][0], second


END_STROKE_ROWS = 0.6  # an end stroke stands apart from the rest of the ink in this share of the middle rows ...
END_STROKE_BEND = 0.06  # ... and is straight: its centre strays at most this much (x height) from a line ...
# A group shorter than this (analysis px) is too small to judge: a pixel's noise is a tenth of its height, and
# specks of grainy paper (9-19 px) passed. Touching digits' groups measured 24 px tall or more.
END_STROKE_HEIGHT = 20
END_STROKE_WIDTH = 0.35  # ... and it is a stroke, no wider than this (x height), not a loop's side


def upright_stroke_at_end(mask: np.ndarray) -> bool:
    """(h, w) bool ink of one group -> whether a straight stroke stands apart at its left or right end
    over most of its height: a 1 written against a neighbour ("14", "81", "11", a "16" whose join leaves
    it one group), or the stem of a second digit ("44", "47"). Cheap (one pass over the rows, no model):
    it decides whether a group no wider than one digit is worth cutting. A single digit's own strokes
    seldom stand apart that long: a 4's stem only above its bar, a 9's below its loop is its only ink;
    a 0's sides, apart in its middle rows, meet at its top and at its bottom (a loop, not two strokes).
    """
    height, width = mask.shape
    if height < END_STROKE_HEIGHT or width < 3:
        return False
    padded = np.pad(mask.astype(np.int8), ((0, 0), (1, 1)))
    steps = np.diff(padded, axis=1)  # (h, w + 1): +1 where a run starts, -1 one past where it ends
    apart = np.count_nonzero(steps == 1, axis=1) >= 2  # (h,) rows with two runs or more
    edge = max(1, height // 20)
    if not (apart[:edge].any() or apart[-edge:].any()):
        return False  # closed at the top and at the bottom: one loop (a 0), not two strokes
    margin = max(1, height // 10)
    middle = apart[margin : height - margin]
    rows = np.flatnonzero(middle) + margin
    if len(rows) < END_STROKE_ROWS * len(middle):
        return False
    starts, ends = steps[rows] == 1, steps[rows] == -1  # (k, w + 1)
    first_start, first_end = starts.argmax(axis=1), ends.argmax(axis=1)  # (k,) the leftmost run
    last_start = width - starts[:, ::-1].argmax(axis=1)  # (k,) the rightmost run: the last start and end
    last_end = width - ends[:, ::-1].argmax(axis=1)
    for run_start, run_end in ((first_start, first_end), (last_start, last_end)):
        # Where the stroke stands apart, it is a stroke's width; where it meets its neighbour, the rows hold
        # the join (wider) and do not count.
        run_width = run_end - run_start  # (k,)
        typical = float(np.median(run_width))
        if typical > END_STROKE_WIDTH * height:
            continue
        thin = run_width <= 1.5 * typical + 1  # (k,)
        if np.count_nonzero(thin) < END_STROKE_ROWS * len(middle):
            continue
        centre = (run_start[thin] + run_end[thin]) / 2.0  # (k',)
        along = rows[thin] - rows[thin].mean()  # a least-squares line, in closed form (np.polyfit: ~50 us)
        slope = float(along @ (centre - centre.mean())) / max(float(along @ along), 1e-9)
        if float(np.abs(centre - centre.mean() - slope * along).max()) <= END_STROKE_BEND * height + 1.0:
            return True
    return False


def ink_runs(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool -> (h,) the number of runs of ink (strokes crossed) in each row."""
    padded = np.pad(mask.astype(np.int8), ((0, 0), (1, 0)))
    return np.count_nonzero(np.diff(padded, axis=1) == 1, axis=1)


def two_strokes_share(mask: np.ndarray) -> float:
    """(h, w) bool ink of one piece -> the share of its inked rows that cross two strokes or more. A 1 is
    one stroke (its flag or base adds a few such rows); two 1s touching, "11", cross two in most rows."""
    runs = ink_runs(mask)  # (h,)
    inked = np.count_nonzero(runs)
    return float(np.count_nonzero(runs >= 2)) / inked if inked else 0.0
