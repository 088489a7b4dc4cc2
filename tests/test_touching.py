"""Touching-digit crops for training: a whole row of them (a negative) and one digit cut out of it."""

from __future__ import annotations

import itertools

import numpy as np

from digitrec import touching


def test_a_row_of_touching_digits_keeps_each_digit_where_it_says(mnist_digits) -> None:
    images, labels = mnist_digits
    digits = images.astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        canvas, spans, truths = touching.touching_row(rng, digits, labels, 3, one=True)
        assert len(spans) == len(truths) == 3 and 1 in truths
        for (x0, x1), (n0, n1) in itertools.pairwise(spans):
            assert n0 <= x1 + round(0.02 * touching.HEIGHT)  # touching or overlapping, never apart
            # overlapping by at most 12% of the height, and by at most MAX_OVERLAP of the narrower one
            assert x1 - n0 <= min(0.12 * touching.HEIGHT, touching.MAX_OVERLAP * min(x1 - x0, n1 - n0)) + 1
        assert canvas[:, spans[-1][1] :].max() == 0.0  # nothing beyond the last digit


def test_a_digit_cut_out_of_a_pair_keeps_only_a_sliver_of_its_neighbour(mnist_digits) -> None:
    images, labels = mnist_digits
    digits = images.astype(np.float32) / 255.0
    rng = np.random.default_rng(1)
    cut = 0
    for _ in range(60):
        twin = np.random.default_rng()
        twin.bit_generator.state = rng.bit_generator.state  # the same draw: the pair it cuts from
        _, spans, truths = touching.touching_row(twin, digits, labels, 2)
        drawn = touching.cut_digit(rng, digits, labels)
        if drawn is None:
            continue
        cut += 1
        ink, label = drawn
        assert label in truths and 1 not in truths  # a 1's sliver would be the whole 1
        # the digit, and of its neighbour at most MAX_SLIVER of its width (what overlaps the digit included)
        fits = [(x1 - x0) - 1 <= ink.shape[1] <= (x1 - x0) + touching.MAX_SLIVER * (n1 - n0) + 1
                for kept, ((x0, x1), (n0, n1)) in enumerate((spans, spans[::-1])) if truths[kept] == label]
        assert any(fits)
    assert cut >= 20
    crops, truths = touching.cut_digit_crops(8, rng, digits, labels)
    assert crops.shape == (8, 28, 28) and truths.shape == (8,) and set(truths.tolist()) <= set(range(10)) - {1}
    assert (crops.reshape(8, -1).max(axis=1) > 0.5).all()
