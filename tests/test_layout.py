"""Rows, touching digits, rejection and the answer's flags (`reason`, `lines`, `truncated`, `low_confidence`).

Real MNIST test digits laid out as people write them, read by the bundled model where the answer depends
on the model, by stand-ins where a test needs a model's score fixed (not-a-digit, thresholds).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from digitrec.bundle import ModelSource
from digitrec.preprocess import find_ink
from digitrec.recognize import MAX_DIGITS, recognize
from digitrec.runtime import Scores, load_classifier
from digitrec.segment import segment_ink
from digitrec.server.api import to_response
from digitrec.split import Piece, best_readings, cut_paths, lattice_pieces

REPO = Path(__file__).resolve().parents[1]
MODES = ["auto", "digit", "number"]


@pytest.fixture(scope="module")
def bundled():
    return load_classifier()


class FixedScores:
    """A stand-in model that says every crop is a 3 with 0.95 and not a digit with `not_digit`."""

    def __init__(self, not_digit: float, calibration: dict | None = None) -> None:
        self.not_digit = not_digit
        self.source = ModelSource(None, None, {"calibration": calibration or {}}, "stand-in")

    def predict_scores(self, images: np.ndarray) -> Scores:
        probabilities = np.full((len(images), 10), 0.05 / 9, np.float32)
        probabilities[:, 3] = 0.95
        return Scores(probabilities, np.full(len(images), self.not_digit, np.float32))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.predict_scores(images).probabilities


def by_label(mnist_digits, *wanted: int) -> list[np.ndarray]:
    """The first MNIST test digit of each wanted label that the bundled model reads right."""
    images, labels = mnist_digits
    return [images[int(np.nonzero(labels == label)[0][0])] for label in wanted]


def stacked(*pages: np.ndarray, gap: int = 20) -> np.ndarray:
    """Pages (H, w_i) one above the other, left-aligned, on the same paper -> (sum H + gaps, max w)."""
    width = max(page.shape[1] for page in pages)
    rows = [np.pad(page, ((0, gap), (0, width - page.shape[1])), constant_values=0.92) for page in pages]
    return np.concatenate(rows)


def png(grey: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.clip(grey, 0, 1) * 255).round().astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


# --- rows ------------------------------------------------------------------------------------------------


def test_two_rows_are_read_as_two_lines(mnist_digits, number_page, bundled) -> None:
    one, two, three, four = by_label(mnist_digits, 1, 2, 3, 4)
    page = stacked(number_page([one, two]), number_page([three, four]))
    segmentation = segment_ink(find_ink(page))
    assert [len(row) for row in segmentation.rows] == [2, 2]
    result = recognize(png(page), bundled)
    assert [line.text for line in result.lines] == ["12", "34"]
    assert result.number is None and result.digit is None and result.reason == "several_lines"
    assert [list(line.digits) for line in result.lines] == [[0, 1], [2, 3]]
    top, bottom = (line.box for line in result.lines)
    assert top[1] + top[3] <= bottom[1]  # the first line's box is above the second's
    data = json.loads(json.dumps(result.to_json()))
    assert data["lines"][1] == {"text": "34", "digits": [2, 3], "box": list(bottom)}


def test_a_digit_above_another_is_never_merged_into_one(mnist_digits, number_page) -> None:
    one, three = by_label(mnist_digits, 1, 3)
    segmentation = segment_ink(find_ink(stacked(number_page([one]), number_page([three]), gap=12)))
    assert [len(row) for row in segmentation.rows] == [1, 1]


def test_a_broken_digit_stays_one_row() -> None:
    grey = np.full((100, 80), 0.92, np.float32)
    cv2.line(grey, (20, 20), (60, 20), 0.1, 5)  # a 7's bar ...
    cv2.line(grey, (58, 26), (35, 85), 0.1, 5)  # ... and its stem, broken off just under it
    segmentation = segment_ink(find_ink(grey))
    assert len(segmentation.rows) == 1 and len(segmentation.groups) == 1


# --- touching digits -------------------------------------------------------------------------------------


def test_cut_paths_find_the_valley_between_two_touching_rings() -> None:
    mask = np.zeros((60, 100), np.uint8)
    cv2.circle(mask, (27, 30), 22, 1, 4)
    cv2.circle(mask, (71, 30), 22, 1, 4)  # touching the first at x ~ 49
    cuts = cut_paths(mask.astype(bool))
    assert any(abs(float(cut.mean()) - 49) <= 4 for cut in cuts)
    from digitrec.segment import Group

    pieces = lattice_pieces(mask.astype(bool), Group((1,), (0, 0, 100, 60)), cuts)
    assert any(piece.start == 0 and piece.stop == len(cuts) + 1 for piece in pieces)  # the whole, always
    halves = [piece for piece in pieces if piece.group.box[2] < 60]
    assert halves and all(piece.group.bounds is not None for piece in halves)


def test_a_thin_one_touching_its_neighbour_is_a_piece_of_its_own() -> None:
    # A handwritten 1 is often a single stroke under a tenth of its height wide; touching a 4 or a 7 it is
    # absorbed ("41" read as 4) unless the lattice offers it alone (pieces were at least 0.12 x height).
    mask = np.zeros((60, 80), np.uint8)
    cv2.line(mask, (4, 2), (4, 57), 1, 3)  # the 1: 3 px wide, 0.05 of the height
    cv2.circle(mask, (34, 30), 26, 1, 4)  # a 0 it touches at x ~ 6
    from digitrec.segment import Group

    cuts = cut_paths(mask.astype(bool))
    pieces = lattice_pieces(mask.astype(bool), Group((1,), (0, 0, 80, 60)), cuts)
    ones = [piece for piece in pieces if piece.start == 0 and piece.group.box[2] <= 6 and piece.group.box[3] >= 50]
    rest = [piece for piece in pieces if piece.start == ones[0].stop and piece.stop == len(cuts) + 1] if ones else []
    assert ones and rest, [(piece.start, piece.stop, piece.group.box) for piece in pieces]


def test_a_crop_wider_than_its_digit_is_written_pays_for_it() -> None:
    # A touching "42" read whole as a sure 4 is 1.5 x its height wide, wider than 99% of written 4s; a 2
    # that wide is ordinary. (Before, every class paid from 1.45 x the height: a tenth as much here.)
    from digitrec.recognize import piece_scores
    from digitrec.segment import Group

    probabilities = np.full((3, 10), 0.01 / 9, np.float32)
    probabilities[[0, 1], 4] = 0.99
    probabilities[2, 2] = 0.99
    crops = [Group((1,), (0, 0, 75, 50)), Group((1,), (0, 0, 50, 50)), Group((1,), (0, 0, 75, 50))]
    four_wide, four, two_wide = piece_scores(crops, [50, 50, 50], probabilities, np.zeros(3, np.float32))
    assert four_wide < four - 0.4 and two_wide > four_wide + 0.3


def test_best_readings_takes_the_best_path_and_reports_the_second() -> None:
    from digitrec.segment import Group

    group = Group((1,), (0, 0, 10, 10))
    pieces = [Piece(0, 2, group), Piece(0, 1, group), Piece(1, 2, group)]
    taken, best, second = best_readings(pieces, np.array([-1.0, -0.1, -0.2]), 3, 0.3)
    assert taken == [1, 2] and best == pytest.approx(-0.6) and second == pytest.approx(-1.0)
    taken, best, second = best_readings(pieces, np.array([-0.1, -0.1, -0.2]), 3, 0.3)
    assert taken == [0] and second == pytest.approx(-0.6)


def touching_pairs(mnist_digits, count: int) -> list[tuple[np.ndarray, str]]:
    """Pairs of MNIST test digits pasted so they overlap by 4-8 px at 60 px high (most touch)."""
    images, labels = mnist_digits
    rng = np.random.default_rng(7)
    pairs = []
    for _ in range(count):
        first, second = (int(i) for i in rng.integers(len(images), size=2))
        page = _overlapping(images[first], images[second], int(rng.integers(4, 9)))
        pairs.append((page, f"{labels[first]}{labels[second]}"))
    return pairs


def _overlapping(left: np.ndarray, right: np.ndarray, overlap: int) -> np.ndarray:
    inks = []
    for digit in (left, right):
        ink = cv2.resize(digit.astype(np.float32) / 255, (60, 60))
        columns = np.nonzero(ink.max(axis=0) > 0.05)[0]
        inks.append(ink[:, columns[0] : columns[-1] + 1])
    width = inks[0].shape[1] + inks[1].shape[1] - overlap
    alpha = np.zeros((100, width + 48), np.float32)
    alpha[20:80, 24 : 24 + inks[0].shape[1]] = inks[0]
    x = 24 + inks[0].shape[1] - overlap
    alpha[20:80, x : x + inks[1].shape[1]] = np.maximum(alpha[20:80, x : x + inks[1].shape[1]], inks[1])
    return (0.92 - 0.8 * alpha.clip(0, 1)).astype(np.float32)


def test_touching_mnist_digits_are_split(mnist_digits, bundled) -> None:
    pairs = touching_pairs(mnist_digits, 40)
    touching = [page for page, _ in pairs if len(segment_ink(find_ink(page)).groups) == 1]
    assert len(touching) >= 30  # the pasting really makes most pairs one blob of ink
    right = sum(recognize(png(page), bundled, "number").number == truth for page, truth in pairs)
    # The even-spacing column cuts of before read 15 of these 40 (37.5%) with the same model; the cut
    # lattice reads 18. Far from the 90%: a 10-class model reads two touching digits as one with
    # confidence, which a not-a-digit output trained on digit pairs is there to stop.
    assert right >= 16


# --- rejection and degenerate inputs ---------------------------------------------------------------------


def canvas_inputs() -> dict[str, np.ndarray]:
    """What people give the page that holds no digit: a tap, a filled canvas, noise."""
    rng = np.random.default_rng(0)
    tap = np.full((360, 600), 255, np.uint8)
    cv2.circle(tap, (300, 180), 12, 0, -1)
    filled = np.full((360, 600), 255, np.uint8)
    filled[:, 6:-5] = 0  # the two white edges become "ink" once the polarity flips
    noise = np.clip(200 + rng.normal(0, 40, (360, 600)), 0, 255).astype(np.uint8)
    salt = np.where(rng.random((360, 600)) < 0.05, 0, 255).astype(np.uint8)
    return {"tap": tap, "filled": filled, "noise": noise, "salt-and-pepper": salt}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(canvas_inputs()))
def test_no_digit_inputs_give_no_digits(name: str, mode: str, bundled) -> None:
    result = recognize(png(canvas_inputs()[name] / 255.0), bundled, mode)
    assert result.digits == () and result.number is None and result.digit is None
    assert result.reason in ("no_ink", "not_a_digit") and result.low_confidence and result.lines == ()


@pytest.mark.parametrize("mode", MODES)
def test_what_the_model_says_is_not_a_digit_is_rejected(mnist_digits, number_page, mode: str) -> None:
    page = number_page(by_label(mnist_digits, 4, 2))
    result = recognize(page, FixedScores(not_digit=0.8), mode)
    assert result.digits == () and result.number is None and result.digit is None
    assert result.reason == "not_a_digit" and result.low_confidence and result.confidence is None
    data = result.to_json()
    assert data["digits"] == [] and data["reason"] == "not_a_digit" and data["lines"] == []


def test_the_not_digit_threshold_comes_from_the_model(mnist_digits, number_page) -> None:
    page = number_page(by_label(mnist_digits, 4, 2))
    # 0.4 each: kept under the model's 0.9 (and a reading of several averaging under half of it), while
    # under the default 0.5 the pair would be too doubtful to be a number (`mostly_not_digits`).
    lenient = FixedScores(not_digit=0.4, calibration={"not_digit_threshold": 0.9, "low_confidence_threshold": 0.99})
    result = recognize(page, lenient, "number")
    assert result.number == "33" and [d.not_digit for d in result.digits] == pytest.approx([0.4, 0.4])
    assert recognize(page, FixedScores(not_digit=0.4), "number").reason == "not_a_digit"
    assert all(d.low_confidence for d in result.digits) and result.reason == "unsure"  # 0.95 < 0.99


def test_no_ink_is_said_so() -> None:
    result = recognize(np.full((60, 80), 0.9, np.float32), FixedScores(0.0))
    assert result.reason == "no_ink" and result.low_confidence and result.digits == ()


# --- modes, flags, JSON ----------------------------------------------------------------------------------


def test_digit_mode_on_several_digits_answers_flagged(mnist_digits, number_page, bundled) -> None:
    result = recognize(number_page(by_label(mnist_digits, 4, 2)), bundled, "digit")
    assert len(result.digits) == 1 and result.digit is not None
    assert result.low_confidence and result.reason == "several_digits"
    single = recognize(number_page(by_label(mnist_digits, 4)), bundled, "digit")
    assert single.digit == 4 and single.reason is None and not single.low_confidence


def test_a_reading_cut_at_the_digit_limit_says_so(mnist_digits, number_page) -> None:
    images, _ = mnist_digits
    page = number_page([images[i % 20] for i in range(MAX_DIGITS + 8)], gap=16, height=40)
    result = recognize(page, FixedScores(0.0), "number")
    assert len(result.digits) == MAX_DIGITS and result.truncated
    assert not recognize(number_page([images[0], images[1]]), FixedScores(0.0)).truncated


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_every_field(mnist_digits, number_page, bundled, mode: str) -> None:
    result = recognize(number_page(by_label(mnist_digits, 7, 5)), bundled, mode)
    data = json.loads(json.dumps(result.to_json()))
    assert {"digit", "number", "confidence", "digits", "mode", "reason", "lines", "truncated",
            "low_confidence"} <= set(data)
    assert all(0 <= digit["not_digit"] <= 1 for digit in data["digits"])
    assert data["confidence"] <= np.prod([digit["confidence"] for digit in data["digits"]]) + 1e-9
    response = to_response(result, with_images=False)
    assert response.reason == result.reason and response.truncated == result.truncated
    assert [line.text for line in response.lines] == [line.text for line in result.lines]
    assert response.low_confidence == result.low_confidence
    if mode != "digit":
        assert result.number == "75" and [line.text for line in result.lines] == ["75"]


def test_the_ruled_ballpoint_example_reads_without_the_line(bundled) -> None:
    result = recognize((REPO / "docs" / "examples" / "ruled-ballpoint-number.jpg").read_bytes(), bundled)
    assert result.number == "053" and result.steps["lines_removed"] >= 1
