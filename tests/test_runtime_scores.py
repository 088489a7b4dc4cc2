"""Scores from 10- and 11-output models: digit probabilities renormalised, not-a-digit, temperature."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from digitrec.bundle import ModelSource
from digitrec.runtime import KerasClassifier, classify, decision_thresholds, load_classifier, scores_from_outputs


def test_eleven_outputs_split_into_renormalised_digits_and_not_a_digit() -> None:
    outputs = np.array([[0.05] * 10 + [0.5], [0.0] * 9 + [0.9, 0.1]], np.float32)  # (2, 11)
    scores = scores_from_outputs(outputs)
    np.testing.assert_allclose(scores.probabilities.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(scores.probabilities[0], 0.1, atol=1e-6)
    assert scores.probabilities[1].argmax() == 9 and scores.probabilities[1, 9] == pytest.approx(1.0)
    np.testing.assert_allclose(scores.not_digit, [0.5, 0.1], atol=1e-6)


def test_ten_outputs_keep_their_probabilities_and_score_every_crop_as_a_digit() -> None:
    outputs = np.eye(10, dtype=np.float32)[[3, 7]] * 0.9 + 0.01
    scores = scores_from_outputs(outputs)
    np.testing.assert_allclose(scores.probabilities, outputs, atol=1e-6)
    assert (scores.not_digit == 0).all()
    with pytest.raises(ValueError, match=r"\(N, 10\) or \(N, 11\)"):
        scores_from_outputs(np.zeros((2, 12), np.float32))


def test_temperature_softens_without_changing_the_answer() -> None:
    outputs = np.array([[0.9] + [0.01] * 9 + [0.01]], np.float32)
    sharp, soft = scores_from_outputs(outputs), scores_from_outputs(outputs, temperature=2.0)
    assert soft.probabilities.argmax() == sharp.probabilities.argmax() == 0
    assert soft.probabilities.max() < sharp.probabilities.max()


@pytest.mark.parametrize("outputs", [10, 11], ids=["10-output", "11-output"])
def test_keras_models_of_either_width_give_scores_and_ten_probabilities(tmp_path: Path, outputs: int) -> None:
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(image)
    model = keras.Model(image, keras.layers.Dense(outputs, activation="softmax")(x))
    images = np.random.default_rng(0).random((64, 28, 28)).astype(np.float32)
    labels = np.arange(64) % outputs
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images[..., None], labels, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    metadata = {"calibration": {"temperature": 1.5, "not_digit_threshold": 0.7, "low_confidence_threshold": 0.8}}
    classifier = KerasClassifier(ModelSource(path, None, metadata, str(path)))
    scores = classify(classifier, images[:5])
    assert scores.probabilities.shape == (5, 10) and scores.not_digit.shape == (5,)
    np.testing.assert_allclose(scores.probabilities.sum(1), 1.0, atol=1e-5)
    assert classifier.predict_proba(images[:5]).shape == (5, 10)
    raw = classifier.predict_raw(images[:5])
    assert raw.shape == (5, outputs)
    if outputs == 11:
        assert (scores.not_digit > 0).all()
        expected = scores_from_outputs(raw, 1.5)
        np.testing.assert_allclose(scores.not_digit, expected.not_digit, atol=1e-6)
    else:
        assert (scores.not_digit == 0).all()
    assert decision_thresholds(classifier).not_digit == 0.7


def test_a_bundle_with_a_broken_temperature_is_refused(tmp_path: Path) -> None:
    from digitrec.bundle import default_bundle_dir

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("model.tflite", "model.json"):
        (bundle / name).write_bytes((default_bundle_dir() / name).read_bytes())
    metadata = json.loads((bundle / "model.json").read_text())
    metadata.setdefault("calibration", {})["temperature"] = -1
    (bundle / "model.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="temperature"):
        load_classifier(bundle)
