"""Reading a digit or a number from an image, end to end (decode -> ink -> segment -> classify)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from digitrec.imageio import ImageTooLargeError, NotAnImageError
from digitrec.recognize import LOW_CONFIDENCE, MAX_DIGITS, Recognition, recognize
from digitrec.runtime import load_classifier


class RecordingClassifier:
    """A stand-in classifier: counts calls, keeps what it was shown, always answers 'mostly a 3'."""

    source = None

    def __init__(self, top: float = 0.82) -> None:
        self.top = top
        self.calls = 0
        self.seen: list[np.ndarray] = []

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.seen.extend(np.asarray(images))
        probabilities = np.full((len(images), 10), (1 - self.top) / 9, np.float32)
        probabilities[:, 3] = self.top
        return probabilities


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["auto", "digit"])
def test_mnist_pngs_score_as_the_arrays_do(number_page, mnist_digits, seed_classifier, mode: str) -> None:
    images, labels = mnist_digits
    # The bundled model reads (a stand-in's ties would let auto mode cut a wide 0 in two at random).
    reader = load_classifier()
    seen, cut = [], 0
    for image in images:
        result = recognize(png_bytes(image), reader, mode)
        assert result.mode == ("number" if len(result.digits) > 1 and mode == "auto" else "digit")
        cut += len(result.digits) != 1
        seen.append(result.digits[0].image if len(result.digits) == 1 else np.zeros((28, 28), np.float32))
    # Auto mode may cut a very wide single digit in two (touching digits look like that), and a blot may
    # be rejected as not a digit: rarely.
    assert cut <= 5
    seen = np.stack(seen)
    via_png = (seed_classifier.predict_proba(seen).argmax(axis=1) == labels).mean()
    arrays_ = (seed_classifier.predict_proba(images / 255.0).argmax(axis=1) == labels).mean()
    assert abs(via_png - arrays_) <= 0.001 + 1e-9 + cut / len(images)  # the issue: within 0.1%


def test_a_number_is_read_left_to_right(number_page, mnist_digits, seed_classifier) -> None:
    images, labels = mnist_digits
    picks = [0, 1, 2, 3]
    result = recognize(number_page([images[i] for i in picks]), seed_classifier)
    assert result.mode == "number" and result.digit is None
    assert result.number == "".join(str(labels[i]) for i in picks)
    assert result.confidence == pytest.approx(np.prod([d.confidence for d in result.digits]))
    boxes = [d.box for d in result.digits]
    assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)


def test_one_digit_in_auto_mode_is_a_digit(number_page, mnist_digits, seed_classifier) -> None:
    images, labels = mnist_digits
    result = recognize(number_page([images[0]]), seed_classifier)
    assert result.mode == "digit" and result.digit == labels[0] and result.number == str(labels[0])


def test_digit_mode_reads_everything_as_one_digit(number_page, mnist_digits) -> None:
    images, _ = mnist_digits
    result = recognize(number_page([images[0], images[1]]), RecordingClassifier(), "digit")
    assert len(result.digits) == 1 and result.mode == "digit"


def test_all_crops_of_an_image_go_in_one_batch(number_page, mnist_digits) -> None:
    images, _ = mnist_digits
    recorder = RecordingClassifier()
    recognize(number_page([images[i] for i in range(5)]), recorder)
    assert recorder.calls == 1 and len(recorder.seen) >= 5


def test_digits_per_image_are_capped(number_page, mnist_digits) -> None:
    images, _ = mnist_digits
    page = number_page([images[i % 20] for i in range(40)], gap=16, height=40)
    result = recognize(page, RecordingClassifier(), "number")
    assert len(result.digits) == MAX_DIGITS


@pytest.mark.parametrize(
    "image",
    [np.ones((50, 50), np.float32), np.zeros((50, 50), np.float32),
     np.random.default_rng(0).random((300, 300), dtype=np.float32), np.ones((1, 1), np.float32)],
    ids=["all-white", "all-black", "pure-noise", "1x1"],
)
def test_no_digit(image: np.ndarray) -> None:
    result = recognize(image, RecordingClassifier())
    assert result.digits == () and result.digit is None and result.number is None and result.confidence is None
    json.dumps(result.to_json())


def test_bad_bytes_raise_image_errors(png_bomb) -> None:
    with pytest.raises(NotAnImageError):
        recognize(b"definitely not an image", RecordingClassifier())
    with pytest.raises(ImageTooLargeError):
        recognize(png_bomb(20_000, 20_000), RecordingClassifier())


def test_result_json_and_low_confidence(number_page, mnist_digits) -> None:
    images, _ = mnist_digits
    result = recognize(number_page([images[0], images[1]]), RecordingClassifier(top=LOW_CONFIDENCE - 0.1))
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) >= {"digit", "number", "confidence", "digits", "mode", "steps"}
    digit = data["digits"][0]
    assert set(digit) == {"digit", "confidence", "box", "probabilities", "low_confidence", "not_digit"}
    assert len(digit["probabilities"]) == 10 and len(digit["box"]) == 4
    assert all(d.image.shape == (28, 28) for d in result.digits)
    assert result.digits[0].low_confidence
    assert not recognize(number_page([images[0]]), RecordingClassifier(top=0.99)).digits[0].low_confidence
    assert isinstance(result, Recognition)


def test_rgba_and_uint8_arrays_are_accepted(number_page, mnist_digits) -> None:
    images, _ = mnist_digits
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = images[0]  # white-on-transparent strokes... drawn black
    result = recognize(rgba, RecordingClassifier())
    assert len(result.digits) == 1
    with pytest.raises(ValueError, match="mode"):
        recognize(rgba, RecordingClassifier(), "paragraph")


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 64), st.integers(1, 64)), elements=st.floats(0, 1, width=32)),
       st.sampled_from(["auto", "digit", "number"]))
def test_any_array_gives_a_consistent_recognition(grey: np.ndarray, mode: str) -> None:
    result = recognize(grey, RecordingClassifier(), mode)
    assert (result.lines == ()) == (result.digits == ())
    assert (result.number is None) == (len(result.lines) != 1)  # none, or several rows (read `lines`)
    assert result.low_confidence or result.reason is None
    assert result.digit is None or len(result.digits) == 1
    for digit in result.digits:
        x, y, w, h = digit.box
        assert x >= 0 and y >= 0 and x + w <= grey.shape[1] and y + h <= grey.shape[0]


def scores_of(rows: list[tuple[int, float, float]]):
    """[(digit, its probability, not_digit)] -> `runtime.Scores` (the rest of each row spread evenly)."""
    from digitrec.runtime import Scores

    probabilities = np.array([[(1 - top) / 9] * 10 for _, top, _ in rows], np.float32)
    for row, (digit, top, _) in enumerate(rows):
        probabilities[row, digit] = top
    return Scores(probabilities, np.array([nd for _, _, nd in rows], np.float32))


@pytest.mark.parametrize(
    ("width", "whole_not_digit", "pieces", "rejected"),
    [(50, 0.95, [(4, 0.85, 0.1), (1, 0.99, 0.05)], True),  # a star: its arms read as unsure digits
     (50, 0.95, [(4, 0.99, 0.05), (1, 0.99, 0.60)], True),  # a piece the model half doubts is a digit
     (50, 0.95, [(1, 0.99, 0.05), (1, 0.99, 0.05)], False),  # "11" written close: each piece a sure digit
     (50, 0.30, [(4, 0.85, 0.1), (1, 0.85, 0.1)], False),  # the whole could be digits: the cut reading stands
     (90, 0.95, [(4, 0.85, 0.1), (1, 0.85, 0.1)], False)],  # wider than one digit: a number's whole says nothing
    ids=["unsure-pieces", "doubted-piece", "sure-pieces", "whole-not-rejected", "too-wide"],
)
def test_pieces_do_not_outvote_a_non_digit_whole(width: int, whole_not_digit: float, pieces: list,
                                                 rejected: bool) -> None:
    from digitrec.recognize import outvoting
    from digitrec.runtime import Thresholds
    from digitrec.segment import Group

    scores = scores_of([(0, 0.5, whole_not_digit), *pieces])
    thresholds = Thresholds(not_digit=0.79, low_confidence=0.92)
    assert outvoting(Group((1,), (0, 0, width, 50)), scores, 0, [1, 2], thresholds) is rejected


@pytest.mark.parametrize(
    ("pieces", "crossed", "rejected"),
    [([(5, 0.94, 0.01), (1, 0.999, 0.01)], [1], False),  # a shaky "51" touching at one stroke: read
     ([(5, 0.94, 0.01), (1, 0.999, 0.01)], [2], True),  # the cut crosses two strokes: a sign's middle
     ([(5, 0.94, 0.01), (1, 0.999, 0.01)], None, True),  # strokes unknown: the pieces must be sure
     ([(5, 0.70, 0.01), (1, 0.999, 0.01)], [1], True),  # a guess is no digit beside its neighbour
     ([(5, 0.94, 0.60), (1, 0.999, 0.01)], [1], True)],  # nor a piece the model half doubts is a digit
    ids=["touching", "two-strokes", "unknown", "guess", "doubted"],
)
def test_pieces_met_at_one_stroke_need_only_be_likely_digits(pieces: list, crossed: list | None,
                                                             rejected: bool) -> None:
    from digitrec.recognize import outvoting
    from digitrec.runtime import Thresholds
    from digitrec.segment import Group

    scores = scores_of([(0, 0.5, 0.99), *pieces])
    thresholds = Thresholds(not_digit=0.77, low_confidence=0.954)
    assert outvoting(Group((1,), (0, 0, 50, 50)), scores, 0, [1, 2], thresholds, crossed) is rejected


@pytest.mark.parametrize(
    ("kept", "rejected", "doubtful"),
    [([(1, 0.99, 0.53)], 2, True),  # a word: two letters rejected, the third read as an unsure 1
     ([(7, 1.00, 0.05)], 1, False),  # a sure digit beside a smudge the model rejects
     ([(7, 1.00, 0.05), (2, 0.99, 0.10)], 1, False),  # a number with a stray mark: more digits than marks
     ([(2, 0.60, 0.70), (1, 0.99, 0.60), (1, 0.99, 0.40)], 0, True),  # all kept, none a convincing digit
     ([(2, 0.99, 0.05), (0, 0.99, 0.70), (2, 0.99, 0.05)], 0, False),  # one doubted digit in a sure number
     ([(9, 0.24, 0.39), (9, 0.39, 0.26), (9, 0.21, 0.37), (8, 0.62, 0.32), (9, 0.33, 0.38)], 0, True),  # specks
     ([(2, 0.99, 0.05), (0, 0.45, 0.10), (1, 0.30, 0.05), (7, 0.98, 0.05)], 0, False)],  # two guesses of four
    ids=["word", "digit-and-smudge", "number-and-mark", "doubtful-pieces", "one-doubt", "specks", "two-guesses"],
)
def test_a_reading_of_mostly_non_digits_is_rejected(kept: list, rejected: int, doubtful: bool) -> None:
    from digitrec.recognize import mostly_not_digits
    from digitrec.runtime import Thresholds

    scores = scores_of(kept)
    thresholds = Thresholds(not_digit=0.79, low_confidence=0.92)
    assert mostly_not_digits(list(range(len(kept))), rejected, scores, thresholds) is doubtful


class ScriptedClassifier:
    """A stand-in classifier with a not-a-digit output (default thresholds: 0.5, 0.90): crop i of a batch
    reads as a sure 1 with not_digit[i]."""

    source = None

    def __init__(self, not_digit: list[float]) -> None:
        self.not_digit = not_digit

    def predict_scores(self, images: np.ndarray):
        from digitrec.runtime import Scores

        probabilities = np.full((len(images), 10), 0.01 / 9, np.float32)
        probabilities[:, 1] = 0.99
        return Scores(probabilities, np.array(self.not_digit[: len(images)], np.float32))


def test_a_word_whose_letters_are_mostly_rejected_is_not_a_number() -> None:
    """Three strokes, two of which the model rejects: the third is not answered on its own ("1"), the
    reading is rejected as a whole (it was answered before the rule)."""
    page = np.full((80, 120), 255, np.uint8)
    for left in (30, 52, 74):
        page[20:60, left : left + 3] = 0
    result = recognize(png_bytes(page), ScriptedClassifier([0.9, 0.9, 0.45, 0.9]), "auto")
    assert result.digits == () and result.reason == "not_a_digit" and result.number is None
    sure = recognize(png_bytes(page), ScriptedClassifier([0.05, 0.05, 0.05, 0.9]), "auto")
    assert sure.number == "111"


def test_a_lone_confident_digit_is_one_crop(mnist_digits) -> None:
    """A single digit a bit wider than tall that the model reads surely is not put through the cut search
    (one crop, one batch): the cut search and its crops were most of the cost of reading one digit."""
    from digitrec.runtime import classify

    class Counting:
        def __init__(self, inner) -> None:
            self.inner, self.source, self.batches = inner, inner.source, []

        def predict_scores(self, images: np.ndarray):
            self.batches.append(len(images))
            return classify(self.inner, images)

    images, labels = mnist_digits
    model = load_classifier()
    wide = [i for i in range(400) if 0.75 < aspect(images[i]) <= 1.0][:12]  # would be cut search candidates
    assert len(wide) >= 6
    single = 0
    for index in wide:
        counting = Counting(model)
        result = recognize(images[index], counting, "auto")
        assert result.number == str(labels[index])
        single += counting.batches == [1]
    assert single >= len(wide) - 2


def aspect(image: np.ndarray) -> float:
    rows, cols = np.nonzero(image > 64)
    return (cols.max() - cols.min() + 1) / (rows.max() - rows.min() + 1)


@pytest.mark.parametrize(
    ("left", "strokes", "whole_absorbed"),
    [((1, 0.99, 0.05), 1, True),  # "10" touching at one point, read whole as 0: the 1 was swallowed
     ((1, 0.60, 0.05), 1, False),  # the left piece is no sure digit: nothing to explain away
     ((1, 0.99, 0.60), 1, False),  # ... nor a piece the model half doubts is a digit
     ((1, 0.99, 0.05), 2, False),  # the cut crosses two strokes: it took the edge off one digit
     ((0, 0.99, 0.05), 1, False),  # both pieces read as the whole's digit: not a digit beside it
     ((6, 0.99, 0.05), 1, False)],  # the rest is no 1: a digit's edge read as a 6 beside its 0
    ids=["touching-1", "unsure-piece", "doubted-piece", "two-strokes", "same-digits", "not-a-1"],
)
def test_a_crop_that_swallowed_a_touching_digit_is_marked(left: tuple, strokes: int, whole_absorbed: bool) -> None:
    from digitrec.recognize import absorbed
    from digitrec.runtime import Thresholds
    from digitrec.segment import Group
    from digitrec.split import Piece

    pieces = [Piece(0, 1, Group((1,), (0, 0, 10, 50))), Piece(1, 2, Group((1,), (10, 0, 30, 50))),
              Piece(0, 2, Group((1,), (0, 0, 40, 50)))]
    scores = scores_of([left, (0, 0.99, 0.05), (0, 0.99, 0.05)])
    score = np.log(scores.probabilities.max(axis=1)) + np.log(1 - scores.not_digit)
    thresholds = Thresholds(not_digit=0.79, low_confidence=0.94)
    marked = absorbed(pieces, scores.probabilities, scores.not_digit, score, thresholds, [0, strokes, 0])
    assert marked.tolist() == [False, False, whole_absorbed]


@pytest.mark.parametrize(
    ("whole_not_digit", "pieces", "rejected"),
    [(0.95, [(1, 0.99, 0.05)] * 4, True),  # a zigzag scribble cut at its joints: "1111"
     (0.95, [(1, 0.99, 0.05), (1, 0.99, 0.05), (7, 0.97, 0.05)], True),  # a W: "117"
     (0.95, [(1, 0.99, 0.05), (1, 0.90, 0.05), (7, 1.00, 0.01)], True),  # ... its strokes not all sure 1s
     (0.95, [(5, 1.00, 0.01), (1, 0.99, 0.05), (1, 0.97, 0.20)], False),  # "511" written touching
     (0.30, [(1, 0.99, 0.05)] * 4, False),  # the whole may be digits: "1111" written touching
     (0.95, [(1, 0.99, 0.05), (4, 0.99, 0.05), (7, 0.99, 0.05)], False),  # "147": a number, not strokes
     (0.95, [(1, 0.99, 0.05), (1, 0.99, 0.05)], False)],  # "11": two pieces are left to the other rules
    ids=["zigzag", "w", "w-unsure-ones", "touching-511", "whole-digits", "number", "two-pieces"],
)
def test_a_non_digit_cut_into_ones_is_strokes(whole_not_digit: float, pieces: list, rejected: bool) -> None:
    from digitrec.recognize import strokes_read_as_ones
    from digitrec.runtime import Thresholds

    scores = scores_of([(0, 0.5, whole_not_digit), *pieces])
    thresholds = Thresholds(not_digit=0.79, low_confidence=0.94)
    assert strokes_read_as_ones(scores, 0, list(range(1, len(pieces) + 1)), thresholds) is rejected


def test_a_row_that_lost_a_digit_sized_piece_says_so() -> None:
    from digitrec.recognize import dropped_a_digit
    from digitrec.segment import Group

    kept = [Group((1,), (0, 0, 30, 50)), Group((2,), (70, 2, 30, 48))]
    assert dropped_a_digit(kept, [Group((3,), (35, 4, 30, 45))])  # "375" read "35": the 7 was rejected
    assert not dropped_a_digit(kept, [Group((3,), (35, 30, 8, 12))])  # a speck beside the number
    assert not dropped_a_digit([], [Group((3,), (35, 4, 30, 45))])  # nothing read: no number to flag


@pytest.mark.parametrize(
    ("confidence", "not_digit", "row_size", "kept"),
    [(0.99, 0.95, 3, True),  # the 6 of "3653" cut with a sliver of the 5: the model doubts it, sure it is a 6
     (0.80, 0.95, 3, False),  # unsure which digit: dropped, as any crop the model rejects
     (0.99, 0.95, 1, False)],  # alone in its row: nothing to be one digit of a number with
    ids=["sure-digit-in-a-number", "unsure", "alone"],
)
def test_a_digit_cut_out_of_touching_ones_is_kept_when_sure(confidence: float, not_digit: float, row_size: int,
                                                             kept: bool) -> None:
    from digitrec.recognize import cut_digit_kept
    from digitrec.runtime import Thresholds

    scores = scores_of([(6, confidence, not_digit)])
    assert cut_digit_kept(scores, 0, row_size, Thresholds(not_digit=0.68, low_confidence=0.925)) is kept


@pytest.mark.parametrize(
    ("whole_not_digit", "pieces", "rejected"),
    [(0.95, [(7, 0.99, 0.04), (4, 0.99, 0.99)], True),  # a heart cut into a sure 7 and a rejected loop
     (0.95, [(2, 1.00, 0.37), (0, 1.00, 0.13), (5, 0.57, 0.99)], True),  # "#" cut into "20" and a rest
     (0.95, [(6, 1.00, 0.02), (5, 1.00, 0.01)], False),  # "65" written touching: the join is rejected whole
     (0.30, [(7, 0.99, 0.04), (4, 0.99, 0.99)], False),  # the whole may be a digit: the other rules decide
     (0.95, [(7, 0.99, 0.04)], False),  # one piece: nothing was cut off
     (0.95, [(3, 1.00, 0.01), (6, 0.99, 0.82), (5, 1.00, 0.01), (3, 1.00, 0.0)], False),  # "3653": the 6 keeps
     # a sliver of the 5, which the model doubts; a number of sure readings all the same
     (0.95, [(3, 1.00, 0.01), (6, 0.80, 0.82), (5, 1.00, 0.01)], True)],  # ... but not when it is unsure
    ids=["heart", "hash", "touching-digits", "whole-digit", "one-piece", "number-with-a-sliver", "unsure-sliver"],
)
def test_a_non_digit_is_not_read_from_its_digit_like_part(whole_not_digit: float, pieces: list,
                                                          rejected: bool) -> None:
    from digitrec.recognize import partly_rejected
    from digitrec.runtime import Thresholds

    scores = scores_of([(0, 0.5, whole_not_digit), *pieces])
    thresholds = Thresholds(not_digit=0.77, low_confidence=0.954)
    assert partly_rejected(scores, 0, list(range(1, len(pieces) + 1)), thresholds) is rejected


@pytest.mark.parametrize(
    ("whole_not_digit", "pieces", "crossed", "rejected"),
    [(0.95, [(7, 1.00, 0.01), (4, 1.00, 0.17)], [2], True),  # "#" cut between its uprights: both bars crossed
     (0.95, [(6, 0.97, 0.03), (2, 1.00, 0.07), (0, 0.87, 0.19)], [2, 2], True),  # an infinity sign's loops
     (0.95, [(7, 1.00, 0.01), (4, 1.00, 0.17)], [1], False),  # a touching "74": they meet at one stroke
     (0.95, [(9, 1.00, 0.00), (8, 0.99, 0.00)], [2], False),  # a touching "98", each piece very sure
     (0.30, [(7, 1.00, 0.01), (4, 1.00, 0.17)], [2], False)],  # the whole may be digits
    ids=["hash", "infinity", "one-stroke", "very-sure", "whole-digits"],
)
def test_a_non_digit_cut_across_its_strokes_is_not_read(whole_not_digit: float, pieces: list, crossed: list,
                                                        rejected: bool) -> None:
    from digitrec.recognize import crossing_cuts
    from digitrec.runtime import Thresholds

    scores = scores_of([(0, 0.5, whole_not_digit), *pieces])
    thresholds = Thresholds(not_digit=0.77, low_confidence=0.954)
    assert crossing_cuts(scores, 0, list(range(1, len(pieces) + 1)), crossed, thresholds) is rejected


class BarClassifier:
    """A stand-in classifier with a not-a-digit output: a crop whose ink is one upright bar (its columns
    span under 5 of 28) is a sure 1; anything else is not a digit."""

    source = None
    bar = 5  # columns (of 28) a bar spans at most

    def predict_scores(self, images: np.ndarray):
        from digitrec.runtime import Scores

        probabilities = np.full((len(images), 10), 0.1, np.float32)
        not_digit = np.ones(len(images), np.float32)
        for index, image in enumerate(images):
            columns = np.flatnonzero((image > 0.3).any(axis=0))
            if columns.size and columns[-1] - columns[0] < self.bar:
                probabilities[index] = 0.001
                probabilities[index, 1] = 0.991
                not_digit[index] = 0.0
        return Scores(probabilities, not_digit)


def touching_ones(second: int, bridge: int) -> np.ndarray:
    """Two 1s (6 px bars, 80 px tall) on white, the second at column `second`, joined by a 4 px bar at row
    `bridge`: "11" written touching."""
    page = np.full((120, 120), 255, np.uint8)
    page[20:100, 50:56] = 0
    page[20:100, second : second + 6] = 0
    page[bridge : bridge + 4, 56:second] = 0
    return page


def test_two_ones_touching_in_a_narrow_group_are_cut_when_rejected_whole() -> None:
    """"11" written touching is narrower than most single digits (under SPLIT_ASPECT x its height), so it
    was never cut; read whole it is not a digit, and the answer was "not a digit". Cut after all: "11"."""
    page = touching_ones(second=72, bridge=55)
    result = recognize(png_bytes(page), BarClassifier(), "auto")
    assert result.number == "11" and len(result.digits) == 2
    word = page.copy()
    word[20:26, 56:72] = 0  # an "H"-like mark, rejected whole, whose cut pieces are not sure 1s: stays rejected
    word[94:100, 30:100] = 0
    assert recognize(png_bytes(word), BarClassifier(), "auto").digits == ()


@pytest.mark.parametrize(
    ("whole_not_digit", "boxes", "digits", "rejected"),
    [(0.95, [(0, 0, 24, 18), (22, 0, 26, 20)], [0, 0], True),  # an infinity sign's flat loops: "00"
     (0.95, [(0, 0, 16, 22), (15, 0, 17, 22)], [0, 0], False),  # "00" written touching: taller than wide
     (0.30, [(0, 0, 24, 18), (22, 0, 26, 20)], [0, 0], False),  # the whole may be digits
     (0.95, [(0, 0, 24, 18), (22, 0, 26, 20)], [0, 7], False)],  # not all 0s
    ids=["infinity", "touching-00", "whole-digits", "not-zeros"],
)
def test_a_non_digit_cut_into_flat_zeros_is_loops(whole_not_digit: float, boxes: list, digits: list,
                                                  rejected: bool) -> None:
    from digitrec.recognize import loops_read_as_zeros
    from digitrec.runtime import Thresholds
    from digitrec.segment import Group

    scores = scores_of([(0, 0.5, whole_not_digit), *[(digit, 0.99, 0.05) for digit in digits]])
    thresholds = Thresholds(not_digit=0.79, low_confidence=0.94)
    pieces = [Group((1,), box) for box in boxes]
    assert loops_read_as_zeros(scores, 0, [1, 2], pieces, thresholds) is rejected


class PairClassifier(BarClassifier):
    """As BarClassifier, but a crop wider than a bar reads as a sure 4 the model half doubts is a digit
    (not_digit 0.2: under half the default threshold of 0.5, over a tenth of it)."""

    bar = 9

    def predict_scores(self, images: np.ndarray):
        scores = super().predict_scores(images)
        wide = scores.not_digit == 1.0
        scores.probabilities[wide] = 0.001
        scores.probabilities[wide, 4] = 0.991
        scores.not_digit[wide] = 0.2
        return scores


def test_a_lone_narrow_pair_read_whole_with_doubt_is_still_cut() -> None:
    """Two digits touching in a group no wider than tall, read whole as a confident digit the model
    somewhat doubts is one ("41" as 4, not_digit 0.28), were never cut; now only a whole with almost no
    such doubt skips the cut search."""
    page = np.full((120, 120), 255, np.uint8)
    page[20:100, 30:38] = 0
    page[20:100, 72:80] = 0
    page[58:62, 38:72] = 0  # the two 1s touch
    assert recognize(png_bytes(page), PairClassifier(), "auto").number == "11"


def test_a_bold_one_filling_a_tight_crop_is_read_in_the_other_polarity() -> None:
    """A bold 1 cropped tight, over half the picture: the polarity vote took the paper left either side of
    it for the ink (read in the other polarity after those strips were dropped); the picture is two clear
    tones, and the paper is the one along the frame: a tight crop, read in the right polarity at once."""
    rng = np.random.default_rng(0)
    page = np.full((90, 30), 0.9, np.float32)
    page[:, 7:23] = 0.12
    page = cv2.GaussianBlur(page, (0, 0), 1.2) + rng.normal(0, 0.01, page.shape).astype(np.float32)
    result = recognize(png_bytes((np.clip(page, 0, 1) * 255).astype(np.uint8)), BarClassifier(), "auto")
    assert result.number == "1" and result.steps.get("tight_crop") and result.steps["polarity"].startswith("dark")


@pytest.mark.parametrize("name", ["bold-one-tight-crop-15.png", "bold-one-tight-crop-44.png",
                                  "bold-one-tight-crop-291.png"])
def test_bold_one_wider_than_the_lighting_window_is_read(name: str) -> None:
    # A marker 1 cropped tight (USPS digits rendered by benchmarks/trust.py's "bold, against the border"
    # style, seed 7), its stroke most of the picture's width: wider than the lighting estimate's window, so
    # in the dark polarity the stroke was "paper" and little ink was left, and the light polarity found only
    # the paper along the frame (dropped as strips). Before: "not a digit". A tight crop (two clear tones)
    # is now read against a plane fitted to its paper's pixels, not the lighting estimate.
    data = (Path(__file__).parent / "data" / name).read_bytes()
    result = recognize(data, load_classifier())
    assert result.digit == 1 and result.reason is None and result.steps.get("tight_crop")


class SureOneClassifier(BarClassifier):
    """As BarClassifier, with wider bars: a crop whose ink spans under 9 of 28 columns is a sure 1 (so two
    1s touching, read whole, are one sure 1, as the bundled model reads them); a crop whose ink encloses
    paper (a loop) is a sure 0 with no doubt that it is a digit (a "10" read whole as a 0)."""

    bar = 9

    def predict_scores(self, images: np.ndarray):
        scores = super().predict_scores(images)
        for index, image in enumerate(images):
            paper = np.pad((image <= 0.3).astype(np.uint8), 1, constant_values=1)  # (30, 30)
            cv2.floodFill(paper, None, (0, 0), 0)  # the paper reached from outside
            if scores.not_digit[index] == 1.0 and paper.any():  # some paper is enclosed: a loop
                scores.probabilities[index] = 0.001
                scores.probabilities[index, 0] = 0.991
                scores.not_digit[index] = 0.0
        return scores


def test_two_ones_touching_read_whole_as_a_sure_one_are_cut() -> None:
    """A "11" written touching, narrower than most single digits, read whole as a sure 1, was never cut:
    answered "1" with full confidence. A straight stroke stands apart at its end (`stroke_apart`), so it
    is cut, and a 1 whose rows cross two strokes, cut into two 1s that meet at a point, is two 1s."""
    result = recognize(png_bytes(touching_ones(second=70, bridge=58)), SureOneClassifier(), "auto")
    assert result.number == "11" and len(result.digits) == 2


def test_a_one_touching_a_digit_read_whole_as_that_digit_is_cut() -> None:
    """A lone "10" no wider than tall, read whole as a sure 0 with no doubt, took the one-crop shortcut and
    answered "0"; its 1 stands apart at its left end, so it is cut, and the 0 that swallowed it is marked."""
    page = np.full((120, 140), 255, np.uint8)
    page[20:100, 30:36] = 0  # the 1
    cv2.ellipse(page, (75, 60), (22, 37), 0, 0, 360, 0, 6)  # the 0
    page[58:62, 36:52] = 0  # the 1 touches the 0
    result = recognize(png_bytes(page), SureOneClassifier(), "auto")
    assert result.number == "10"
    alone = page.copy()
    alone[:, :45] = 255  # the 0 alone: one crop, read as it is
    assert recognize(png_bytes(alone), SureOneClassifier(), "auto").number == "0"


@pytest.mark.parametrize(("inked", "whole_absorbed"), [(0.1, True), (0.9, False)], ids=["at-a-point", "lengthwise"])
def test_two_ones_read_as_one_are_marked_where_the_cut_meets_them_at_a_point(inked: float,
                                                                            whole_absorbed: bool) -> None:
    from digitrec.recognize import absorbed
    from digitrec.runtime import Thresholds
    from digitrec.segment import Group
    from digitrec.split import Piece

    pieces = [Piece(0, 1, Group((1,), (0, 0, 10, 50))), Piece(1, 2, Group((1,), (10, 0, 10, 50))),
              Piece(0, 2, Group((1,), (0, 0, 20, 50)))]
    scores = scores_of([(1, 0.99, 0.05)] * 3)
    score = np.log(scores.probabilities.max(axis=1)) + np.log(1 - scores.not_digit)
    thresholds = Thresholds(not_digit=0.79, low_confidence=0.94)
    marked = absorbed(pieces, scores.probabilities, scores.not_digit, score, thresholds, [0, 1, 0],
                      [0.0, inked, 0.0])
    assert marked.tolist() == [False, False, whole_absorbed]


@pytest.mark.parametrize(
    ("whole", "kept_whole"),
    [((0, 0.99, 0.001), True),  # a narrow 0 open at its top, cut into ")(" read as "11": a 0's sides
     ((1, 0.99, 0.001), False),  # "11" read whole as one 1: two 1s
     ((4, 0.99, 0.28), False)],  # "11" read whole as a 4 the model doubts is a digit: two 1s
    ids=["zero", "one", "doubted"],
)
def test_a_digits_sides_cut_into_ones_stay_one_digit(whole: tuple, kept_whole: bool) -> None:
    from digitrec.recognize import ones_from_a_digit
    from digitrec.runtime import Thresholds
    from digitrec.segment import Group
    from digitrec.split import Piece

    pieces = [Piece(0, 1, Group((1,), (0, 0, 10, 50))), Piece(1, 2, Group((1,), (10, 0, 10, 50))),
              Piece(0, 2, Group((1,), (0, 0, 20, 50)))]
    scores = scores_of([(1, 0.99, 0.01), (1, 0.99, 0.01), whole])
    thresholds = Thresholds(not_digit=0.5, low_confidence=0.94)
    assert ones_from_a_digit(scores, 0, pieces, 3, [0, 1], thresholds) is kept_whole
