"""Finding the digits of a number: components, fragments merged, specks and ruled lines dropped, cuts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from digitrec.preprocess import find_ink
from digitrec.segment import is_border_strip, segment_ink, split_group


def groups_of(grey: np.ndarray):
    return segment_ink(find_ink(grey))


def test_digits_in_a_row_are_found_left_to_right(mnist_digits, number_page) -> None:
    images, _ = mnist_digits
    segmentation = groups_of(number_page([images[i] for i in range(4)]))
    assert len(segmentation.groups) == 4
    xs = [group.box[0] for group in segmentation.groups]
    assert xs == sorted(xs)


def test_detached_bar_of_a_five_is_merged() -> None:
    grey = np.full((100, 100), 0.9, np.float32)
    grey[20:26, 30:70] = 0.1  # the bar, detached
    grey[32:36, 30:36] = 0.1  # a bit of the stem
    grey[36:80, 30:70] = 0.9
    import cv2

    cv2.ellipse(grey, (50, 60), (18, 18), 0, -120, 160, 0.1, 5)  # the belly
    segmentation = groups_of(grey)
    assert len(segmentation.groups) == 1


def test_specks_are_dropped(mnist_digits, number_page) -> None:
    images, _ = mnist_digits
    grey = number_page([images[0]])
    rng = np.random.default_rng(0)
    for y, x in zip(rng.integers(0, grey.shape[0], 15), rng.integers(0, grey.shape[1], 15), strict=True):
        grey[y, x] = 0.1
    segmentation = groups_of(grey)
    assert len(segmentation.groups) == 1 and segmentation.specks_removed > 0


def test_faint_ruled_lines_are_removed(mnist_digits, number_page) -> None:
    images, _ = mnist_digits
    grey = number_page([images[0], images[1], images[2]])
    for row in range(10, grey.shape[0], 25):
        grey[row] = np.minimum(grey[row], 0.6)  # faint lines across the page, through the digits
    segmentation = groups_of(grey)
    assert segmentation.lines_removed >= 2
    assert len(segmentation.groups) == 3


def test_touching_digits_can_be_cut(mnist_digits, number_page) -> None:
    images, _ = mnist_digits
    grey = number_page([images[3], images[4]], gap=-4)
    segmentation = groups_of(grey)
    wide = max(segmentation.groups, key=lambda group: group.box[2])
    pieces = split_group(segmentation, wide, 2)
    assert len(pieces) == 2 and pieces[0].box[0] < pieces[1].box[0]


@pytest.mark.parametrize("value", [0.0, 1.0], ids=["all-black", "all-white"])
def test_blank_images_have_no_groups(value: float) -> None:
    assert groups_of(np.full((80, 120), value, np.float32)).groups == ()


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 80), st.integers(1, 80)), elements=st.floats(0, 1, width=32)))
def test_any_array_segments_without_error(grey: np.ndarray) -> None:
    segmentation = groups_of(grey)
    for group in segmentation.groups:
        x, y, w, h = group.box
        assert w > 0 and h > 0 and x + w <= segmentation.labels.shape[1] and y + h <= segmentation.labels.shape[0]


def test_squared_papers_columns_are_removed_but_not_a_lone_one() -> None:
    from digitrec.segment import remove_grid_columns

    mask = np.zeros((100, 160), bool)
    mask[:, 20:22] = mask[:, 60:62] = mask[:, 100:102] = mask[:, 140:142] = True  # the grid's columns
    ring = np.zeros((100, 160), np.uint8)
    cv2.circle(ring, (60, 50), 25, 1, 4)  # a 0 written across a column
    cleaned, removed = remove_grid_columns(mask | ring.astype(bool))
    assert removed == 4 and not cleaned[:, 140:142].any() and not cleaned[5:20, 60:62].any()
    assert cleaned[ring.astype(bool)].all()  # the 0 is whole, mended where it crossed the column
    one = np.zeros((100, 160), bool)
    one[5:95, 70:74] = True  # a single upright stroke: a 1, not a grid
    assert remove_grid_columns(one)[1] == 0 and remove_grid_columns(one)[0].sum() == one.sum()


def test_creases_and_shadow_edges_crossing_the_picture_are_not_writing() -> None:
    """Blank paper photographed without a margin: a crease from border to border, and the soft edge of a
    shadow or of the paper (the tone differs either side) are no digit; a bold 1 cropped tight against
    the top and bottom, and a digit beside a crease, are still found."""
    rng = np.random.default_rng(0)
    crease = np.full((160, 200), 0.85, np.float32) + rng.normal(0, 0.01, (160, 200)).astype(np.float32)
    cv2.line(crease, (60, 0), (95, 159), 0.6, 1)  # a fold: a faint one-pixel line, top to bottom
    assert groups_of(crease).groups == ()
    shadow = np.full((160, 200), 0.9, np.float32)
    shadow[:, 120:] = 0.45  # the table beyond the paper's edge, softened by the lens
    shadow = cv2.GaussianBlur(shadow, (0, 0), 2.0) + rng.normal(0, 0.01, (160, 200)).astype(np.float32)
    assert groups_of(shadow).groups == ()
    one = np.full((80, 40), 0.9, np.float32)
    one[:, 14:24] = 0.1  # a bold 1 cropped tight against the top and bottom
    assert len(groups_of(one).groups) == 1
    beside = crease.copy()
    cv2.polylines(beside, [np.array([[150, 50], [125, 100], [165, 100]]), np.array([[155, 70], [155, 125]])],
                  False, 0.1, 6)  # a 4 on the creased paper
    groups = groups_of(beside).groups
    assert len(groups) == 1 and groups[0].box[0] > 100


def test_the_table_beyond_the_paper_and_the_dark_side_of_a_shadow_are_not_writing() -> None:
    """Blank paper photographed with its edge in the frame: a strip of the table along one border (as wide
    as a bold stroke, the frame's last column a little lighter), and the dark side of a shadow's edge that
    the lighting estimate leaves as a band of "ink" (the same tone as the paper beyond it) are no digit;
    a bold digit against the border, with paper all round it, is still found."""
    rng = np.random.default_rng(1)
    table = np.full((102, 67), 0.9, np.float32)
    table[:, 58:] = 0.53  # the table beyond the paper's edge, along the right border
    table[:, -1] = 0.76
    table += rng.normal(0, 0.01, table.shape).astype(np.float32)
    assert groups_of(table).groups == ()
    shadow = np.full((158, 125), 1.0, np.float32)
    shadow[:, 80:] = 0.64  # a shadow (or a grey card) over the right of the picture, ending at a sharp edge
    shadow = np.clip(shadow + rng.normal(0, 0.005, shadow.shape).astype(np.float32), 0, 1)
    assert groups_of(shadow).groups == ()
    seven = np.full((90, 70), 0.9, np.float32)
    cv2.polylines(seven, [np.array([[10, 4], [55, 4], [25, 89]])], False, 0.15, 9)  # bold, cut by top and bottom
    seven += rng.normal(0, 0.01, seven.shape).astype(np.float32)
    assert len(groups_of(seven).groups) == 1


@pytest.mark.parametrize(("depth", "sigma"), [(0.2, 3.5), (0.14, 4.5)])
def test_a_faint_blurred_stroke_against_the_border_is_still_writing(depth: float, sigma: float) -> None:
    """A faint, blurred 1 in a tight, narrow crop (14-20% darker than the paper, a third of the picture
    wide): its halo is nearly as dark as its faint core, and the lighting estimate leaves only its outline
    as "ink", lighter than its own core; it is not the dark side of a shadow's edge."""
    one = np.ones((156, 28), np.float32)
    one[10:134] -= depth * np.exp(-0.5 * ((np.arange(28) - 11) / sigma) ** 2)[None, :]
    assert len(groups_of(cv2.GaussianBlur(one, (0, 0), 1.5)).groups) == 1


def strokes_mask(name: str) -> np.ndarray:
    """(80, w) bool ink of a few shapes a group can hold, drawn with 6 px strokes."""
    canvas = np.zeros((80, 70), np.uint8)
    if name == "11":  # two 1s touching at one point
        canvas[:, 10:16] = 1
        canvas[:, 34:40] = 1
        canvas[38:42, 16:34] = 1
    elif name == "14":  # a 1 against an open 4 (its stem and its bar), touching the 4's arm at one point
        canvas[:, 4:10] = 1
        cv2.line(canvas, (40, 0), (22, 48), 1, 6)
        canvas[46:52, 22:66] = 1
        canvas[:, 52:58] = 1
        canvas[20:24, 10:30] = 1
    elif name == "1":  # one 1 with a flag
        canvas[:, 30:36] = 1
        cv2.line(canvas, (30, 2), (18, 16), 1, 5)
    elif name == "0":  # a narrow 0: its sides stand apart in its middle rows only
        cv2.ellipse(canvas, (35, 40), (14, 37), 0, 0, 360, 1, 6)
    elif name == "4":  # a 4: its stem stands apart above its bar only (a bar written low, under 60% of the
        cv2.line(canvas, (30, 0), (10, 42), 1, 6)  # height, would pass: the model then keeps the 4 whole)
        canvas[38:44, 10:60] = 1
        canvas[:, 42:48] = 1
    return canvas > 0


@pytest.mark.parametrize(("name", "apart"), [("11", True), ("14", True), ("1", False), ("0", False), ("4", False)])
def test_a_straight_stroke_standing_apart_at_a_groups_end_is_found(name: str, apart: bool) -> None:
    from digitrec.split import upright_stroke_at_end

    assert upright_stroke_at_end(strokes_mask(name)) is apart


def test_a_group_too_small_to_judge_has_no_stroke_standing_apart() -> None:
    """Specks of grainy paper 9-19 px tall passed as "11"s and were cut into digits: under 20 px nothing is
    judged (the "11" shrunk to 16 px tall is left as it is)."""
    from digitrec.split import upright_stroke_at_end

    small = cv2.resize(strokes_mask("11").astype(np.uint8), (14, 16), interpolation=cv2.INTER_NEAREST) > 0
    assert not upright_stroke_at_end(small)
    large = cv2.resize(strokes_mask("11").astype(np.uint8), (35, 40), interpolation=cv2.INTER_NEAREST) > 0
    assert upright_stroke_at_end(large)


def test_rows_crossing_two_strokes_tell_two_ones_from_one() -> None:
    from digitrec.split import two_strokes_share

    assert two_strokes_share(strokes_mask("11")) > 0.9
    assert two_strokes_share(strokes_mask("1")) < 0.3
    assert two_strokes_share(np.zeros((10, 10), bool)) == 0.0


def strip_stats(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) bool with one piece -> (its stats row, the labels)."""
    _count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return stats[1], labels


def test_a_table_edge_a_few_pixels_inside_the_frame_is_a_border_strip() -> None:
    # The line along a table's wavy edge, full height, a few pixels inside the right border and reaching it
    # in only some rows (blank paper in benchmarks/trust.py, read as "1"): it lies along the border within
    # its own thickness. A 1 written near the border, meeting it at its foot, does not; nor a 1 lying
    # within its thickness of the border but stopping short of the picture's ends (a thin 1 in a narrow crop).
    edge = np.zeros((80, 160), bool)
    edge[:, 150:155] = True
    edge[::3, 155:] = True  # the wavy part reaching the frame in a third of the rows
    one = np.zeros((80, 160), bool)
    for row in range(10, 70):
        one[row, 150 + (row - 10) // 12 : 155 + (row - 10) // 12] = True  # leaning right, its foot at the border
    near = np.zeros((80, 160), bool)
    near[6:74, 152:157] = True
    near[6:74:4, 157:] = True
    for mask, expected in ((edge, True), (one, False), (near, False)):
        stats, labels = strip_stats(mask)
        assert is_border_strip(stats, labels, 1) == expected
