"""Shortcuts the reading takes for small, simple images give what the general code gives: `segment.has_label`
is np.isin, one component is one row (`find_rows`), and `smallarrays` is numpy's median, percentile and odd
padding."""

from __future__ import annotations

import cv2
import numpy as np

from digitrec.segment import find_rows, has_label
from digitrec.smallarrays import median, pad_odd_reflect, percentile


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


def random_values(rng: np.random.Generator, trial: int, max_size: int) -> np.ndarray:
    """Float32 or float64 values for trial `trial`: uniform, a few repeated integers (ties) or wide normals,
    now and then with a NaN."""
    size = int(rng.integers(1, max_size))
    dtype = np.float32 if trial % 3 else np.float64
    values = [rng.random(size), rng.integers(0, 4, size), rng.normal(size=size) * 1e3][trial % 3].astype(dtype)
    if trial % 50 == 0:
        values[int(rng.integers(0, size))] = np.nan
    return values


def test_median_is_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    for trial in range(3000):
        values = random_values(rng, trial, 200)
        size = values.size
        if trial % 7 == 0:
            values = values[: size - size % 2].reshape(2, -1) if size > 1 else values  # 2-D: all axes, as numpy
        expected, got = np.median(values), median(values)
        assert type(got) is type(expected) and np.array_equal(expected, got, equal_nan=True)
    assert median(np.arange(7)) == np.median(np.arange(7))  # integers: numpy's own rules (a float)
    assert type(median(np.arange(7))) is type(np.median(np.arange(7)))


def test_pad_odd_reflect_is_numpys() -> None:
    rng = np.random.default_rng(2)
    for _ in range(1000):
        image = (rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) * 2 - 0.5).astype(np.float32)
        width = int(rng.integers(0, 12))
        assert np.array_equal(pad_odd_reflect(image, width), np.pad(image, width, mode="reflect", reflect_type="odd"))


def test_percentile_is_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    for trial in range(3000):
        values = random_values(rng, trial, 300)
        q = (90, 20, 80, 50, 0, 100, 99.5, 12.3)[trial % 8]
        expected, got = np.percentile(values, q), percentile(values, q)
        assert type(got) is type(expected) and np.array_equal(expected, got, equal_nan=True)
