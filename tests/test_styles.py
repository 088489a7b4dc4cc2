"""Writing-style generators: each style's crops carry the right digit and differ from plain digits."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec import styles


@pytest.fixture(scope="module")
def real_digits() -> tuple[np.ndarray, np.ndarray]:
    """Tiny stand-ins for MNIST: a 0 (ring), a 1 (bar) and a 7 (bar and diagonal), 28x28 ink."""
    import cv2

    zero, one, seven = (np.zeros((28, 28), np.float32) for _ in range(3))
    cv2.ellipse(zero, (14, 14), (6, 9), 0, 0, 360, 1.0, 3)
    cv2.line(one, (14, 5), (13, 23), 1.0, 3)
    cv2.line(seven, (8, 5), (20, 5), 1.0, 3)
    cv2.line(seven, (20, 5), (12, 23), 1.0, 3)
    return np.stack([zero, one, seven]), np.array([0, 1, 7])


@pytest.mark.parametrize("style", styles.STYLES)
def test_each_style_gives_labelled_pipeline_crops(style: str, real_digits: tuple[np.ndarray, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    digits, labels = real_digits
    crops, truths = styles.style_crops(style, 3, rng, digits=digits, labels=labels)
    assert crops.shape == (3, 28, 28) and crops.dtype == np.float32 and crops.max() <= 1.0
    if style in styles.TEMPLATES:
        assert (truths == styles.TEMPLATES[style][0]).all()
    else:
        assert set(truths) <= {0, 1, 7}
    held, _ = styles.style_crops(style, 2, np.random.default_rng(1), held_out=True, digits=digits, labels=labels)
    assert held.shape == (2, 28, 28)


def test_edits_add_the_style_to_real_digits(real_digits: tuple[np.ndarray, np.ndarray]) -> None:
    digits, _ = real_digits
    rng = np.random.default_rng(3)
    one = styles.edit_digit(digits[1], 1, rng)
    assert one is not None
    # The flag (and base) make the 1 much wider than the bare stroke it was.
    bare = styles.tight(styles.cv2.resize(digits[1], (84, 84), interpolation=styles.cv2.INTER_CUBIC).clip(0, 1))
    assert one.shape[1] >= bare.shape[1] + 6 and one.sum() > 1.1 * bare.sum()
    slashed = styles.edit_digit(digits[0], 0, rng)
    assert slashed is not None and slashed.sum() > 1.05 * styles.upscale_ink_sum(digits[0], slashed.shape[0])
    assert styles.edit_digit(digits[0], 5, rng) is None  # no edit for other digits


def test_held_out_templates_differ_from_the_training_ones() -> None:
    for style, (_, variants, held_out) in styles.TEMPLATES.items():
        assert held_out not in variants, style
