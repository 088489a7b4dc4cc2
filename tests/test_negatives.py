"""Non-digit generators: what they draw reaches the model as the pipeline's 28x28 crops, varied."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec import negatives
from digitrec.synth import Pen, draw_strokes, on_paper, pipeline_crops, random_paper


@pytest.fixture(scope="module")
def source() -> negatives.Source:
    rng = np.random.default_rng(0)
    digits = np.zeros((4, 28, 28), np.float32)
    for index, digit in enumerate(digits):  # rough strokes: enough for fragments to cut
        digit[4:24, 8 + index : 11 + index] = 1.0
        digit[4:7, 8:20] = 1.0
        digit[14:17, 6:22] = rng.uniform(0.5, 1.0)
    return negatives.Source(negatives.font_files(held_out=False), negatives.HERSHEY_TRAIN, digits)


def test_negative_crops_are_pipeline_renderings_of_every_family(source: negatives.Source) -> None:
    rng = np.random.default_rng(1)
    crops, kinds = negatives.negative_crops(28, rng, source)
    assert crops.shape == (28, 28, 28) and crops.dtype == np.float32
    assert crops.min() >= 0.0 and crops.max() <= 1.0
    assert (crops.reshape(28, -1).max(1) > 0.5).all()  # every crop holds ink
    assert len(set(kinds)) >= 4  # several families drawn
    # Varied: no two crops alike, and the pipeline's centring by mass holds for each.
    flat = crops.reshape(28, -1)
    distances = np.abs(flat[:, None] - flat[None]).sum(-1) + np.eye(28) * 1e9
    assert distances.min() > 5.0
    for crop in crops:
        rows, cols = np.nonzero(crop)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 >= 18  # scaled so the longer side is ~20 px, as MNIST


def test_a_smiley_reaches_the_model_at_full_size() -> None:
    rng = np.random.default_rng(2)
    strokes, curved = negatives.SYMBOLS["smiley"](rng)
    ink = draw_strokes(strokes, 80, Pen(width=0.06), rng, curved=curved)
    crops = pipeline_crops(on_paper(ink, random_paper(rng), rng))
    assert len(crops) == 1
    rows, cols = np.nonzero(crops[0] > 0.3)
    assert np.ptp(rows) >= 17 and np.ptp(cols) >= 17  # a face 20 px across, eyes and mouth inside
    assert crops[0][10:18, 10:18].max() > 0.5


def test_digit_like_shapes_are_never_negatives() -> None:
    bar = np.zeros((28, 28), np.float32)
    bar[4:24, 12:16] = 1.0
    disc = np.zeros((28, 28), np.float32)
    yy, xx = np.mgrid[:28, :28]
    disc[(yy - 14) ** 2 + (xx - 14) ** 2 < 100] = 1.0
    assert negatives.looks_like_a_one(bar) and not negatives.looks_like_a_one(disc)
    for letter in "OoQDlIijJSsZzBbgqGy0123456789":
        assert letter not in negatives.NEGATIVE_LETTERS


def test_held_out_fonts_and_symbols_are_kept_out_of_training() -> None:
    training, held_out = set(negatives.font_files(False)), set(negatives.font_files(True))
    assert not training & held_out
    assert not set(negatives.HERSHEY_TRAIN) & set(negatives.HERSHEY_HELD_OUT)
    assert not set(negatives.HELD_OUT_SYMBOLS) & set(negatives.TRAINING_MIX)
    assert "symbol" in negatives.TRAINING_MIX


def test_touching_digits_are_negatives_only_read_whole(source: negatives.Source) -> None:
    """Two or three whole digits written touching, read as one crop: each crop holds every digit's upright
    (the fixture's digits are an upright with two bars), and a 1 is among them as often as asked."""
    labelled = negatives.Source(source.fonts, source.hershey, source.digits, np.array([1, 7, 4, 2]))
    rng = np.random.default_rng(3)
    crops, kinds = negatives.negative_crops(12, rng, labelled, mix={"touching digits": 1})
    assert kinds == ["touching digits"] * 12 and crops.shape == (12, 28, 28)
    for crop in crops:
        rows = np.nonzero(crop.max(axis=1) > 0.3)[0]
        low = crop[rows[0] + int(0.7 * np.ptp(rows)) : rows[-1]] > 0.3  # rows under the bars: only the uprights
        uprights = int(np.max(low[:, 0].astype(int) + np.sum(low[:, 1:] & ~low[:, :-1], axis=1)))
        assert uprights >= 2, "a touching-digits negative must hold two digits or more"
    with pytest.raises(AssertionError, match="labelled digits"):
        negatives.touching_digits(rng, source)  # no labels: it cannot tell which are 1s


def test_drawing_gives_up_on_a_generator_that_never_succeeds() -> None:
    from digitrec.synth import draw_until

    calls = iter(range(1000))
    assert draw_until(3, lambda: (n if (n := next(calls)) % 2 else None), "never") == [1, 3, 5]  # Nones drawn again
    with pytest.raises(RuntimeError, match="nothing drawn"):
        draw_until(2, lambda: None, "nothing drawn")  # 20 x 2 + 100 tries, then a clear error, not a hang
