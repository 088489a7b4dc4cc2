"""Shortcuts the reading takes for small, simple images give what the general code gives: `segment.has_label`
is np.isin, and one component is one row (`find_rows`)."""

from __future__ import annotations

import cv2
import numpy as np

from digitrec.segment import find_rows, has_label


def test_has_label_is_isin() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (30, 40)).astype(np.int32)
    for members in ([3], (3,), [0], [2, 5], (1, 4, 5), [7]):
        assert np.array_equal(has_label(labels, members), np.isin(labels, members))


def test_one_component_is_one_row() -> None:
    mask = np.zeros((40, 60), np.uint8)
    cv2.line(mask, (20, 5), (30, 35), 1, 3)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    assert find_rows(stats, [1]) == [[1]]
    assert find_rows(stats, []) == []
    # Two components side by side still go through the general rule: one row, both in it.
    cv2.line(mask, (45, 5), (50, 35), 1, 3)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    assert sorted(map(sorted, find_rows(stats, [1, 2]))) == [[1, 2]]
