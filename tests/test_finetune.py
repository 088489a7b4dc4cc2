"""digitrec finetune: learns planted corrections behind the gate, refuses a damaging run, says when there is
too little to learn from. The bundled model, small MNIST slices (--limit, --test-limit, --replay)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from digitrec.cli import main
from digitrec.data import DataConfig, load_split
from digitrec.registry import Registry
from digitrec.runtime import load_classifier
from digitrec.store import NewCorrection, is_held_out, open_store


def boxed(images: np.ndarray) -> np.ndarray:
    """A writer who draws every digit inside a box (as on a form): the bundled model misreads ~1 in 10."""
    out = images.copy()  # (N, 28, 28) uint8
    out[:, 1, 1:27] = out[:, 26, 1:27] = 255
    out[:, 1:27, 1] = out[:, 1:27, 26] = 255
    return out


def narrow(images: np.ndarray) -> np.ndarray:
    """A writer whose digits are narrow (0.4 of the width) and slanted forward: the bundled model misreads ~1 in 5."""
    import cv2

    out = np.empty_like(images)  # (N, 28, 28) uint8
    matrix = np.array([[0.4, 0.35, 14 - 0.4 * 14 - 0.35 * 14], [0, 1, 0]], np.float32)  # x' = 0.4 x + 0.35 y
    for i, image in enumerate(images):
        out[i] = cv2.warpAffine(image, matrix, (28, 28), flags=cv2.INTER_LINEAR)
    return out


def plant(store_path: Path, images: np.ndarray, labels: list[str]) -> None:
    with open_store(str(store_path)) as store:
        for image, label in zip(images, labels, strict=True):
            inputs = image[None]  # (1, 28, 28): one crop per correction
            store.add(NewCorrection(label=label, source="cli", image=b"planted", image_size=7,
                                    image_sha256="0" * 64, image_reduced=False, inputs=inputs, answer={}))


@pytest.fixture(scope="module")
def mnist_tail(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST training images the --limit runs never replay (the last 2,000 of the file)."""
    train = load_split("train", DataConfig(data_dir=mnist_dir))
    return train.images[-2000:], train.labels[-2000:]


def run_finetune(tmp_path: Path, mnist_dir: Path, *extra: str) -> int:
    return main(["finetune", "--store", str(tmp_path / "store.db"), "--models-dir", str(tmp_path / "models"),
                 "--output", str(tmp_path / "tuned"), "--data-dir", str(mnist_dir), "--limit", "3000",
                 "--test-limit", "1000", "--replay", "600", "--json", *extra])


def test_finetune_learns_planted_corrections_and_promotes(tmp_path: Path, mnist_dir: Path, mnist_tail,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = mnist_tail
    plant(tmp_path / "store.db", narrow(images[:250]), [str(label) for label in labels[:250]])
    plant(tmp_path / "store.db", images[250:253], ["none"] * 3)  # this base has no not-a-digit output
    assert run_finetune(tmp_path, mnist_dir, "--epochs", "2", "--promote") == 0
    out = capsys.readouterr().out
    figures = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert figures["held_out_n"] == 50  # every 5th id held out
    # "none" trains the not-a-digit output of a base that has one; a 10-output base skips and counts them.
    has_reject_output = load_classifier(None).predict_raw(np.zeros((1, 28, 28), np.float32)).shape[1] == 11
    assert figures["skipped_none"] == (0 if has_reject_output else 3)
    assert figures["held_out_after"] > figures["held_out_before"]
    assert figures["mnist_drop_points"] <= 0.10
    # a normal bundle with its lineage, served by LiteRT, and now the active version
    metadata = json.loads((tmp_path / "tuned" / "model.json").read_text())
    lineage = metadata["lineage"]
    assert lineage["corrections"] == (253 if has_reject_output else 250) and lineage["base_version"] is None
    assert lineage["store_snapshot"].startswith("253-253-")
    assert metadata["test_accuracy"] == figures["mnist_test_after"]
    # its own temperature, refitted on validation data (never MNIST test); the base's thresholds kept
    calibration = metadata["calibration"]
    base_calibration = (load_classifier(None).source.metadata or {}).get("calibration", {})
    assert calibration["temperature"] == figures["temperature"] > 0
    assert calibration["base_temperature"] == base_calibration.get("temperature")
    assert "MNIST validation" in calibration["temperature_fitted_on"] and calibration["validation_n"] > 50
    for threshold in ("not_digit_threshold", "low_confidence_threshold"):
        assert calibration.get(threshold) == base_calibration.get(threshold)
    assert load_classifier(tmp_path / "tuned").temperature == pytest.approx(figures["temperature"])
    held_out = np.array([i for i in range(250) if is_held_out(i + 1)])  # ids start at 1
    test_digits = narrow(images[held_out]).astype(np.float32) / 255
    base_hits = np.mean(load_classifier(None).predict_proba(test_digits).argmax(1) == labels[held_out])
    tuned_hits = np.mean(load_classifier(tmp_path / "tuned").predict_proba(test_digits).argmax(1) == labels[held_out])
    assert tuned_hits > base_hits
    assert Registry(tmp_path / "models").pointer().version == "v1"


def test_the_gate_refuses_a_damaging_finetune(tmp_path: Path, mnist_dir: Path, mnist_tail,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = mnist_tail
    # A "writer" whose labels are all off by one: learning them must wreck MNIST.
    plant(tmp_path / "store.db", images[:150], [str((label + 1) % 10) for label in labels[:150]])
    code = run_finetune(tmp_path, mnist_dir, "--epochs", "2", "--learning-rate", "3e-3", "--promote")
    captured = capsys.readouterr()
    assert code == 2
    assert "gate refused" in captured.err and "MNIST test accuracy fell" in captured.err
    figures = json.loads(captured.out[captured.out.index("{"): captured.out.rindex("}") + 1])
    assert figures["mnist_drop_points"] > 0.10
    assert not (tmp_path / "tuned").exists()  # nothing written
    assert Registry(tmp_path / "models").versions() == []  # nothing promoted


def test_no_corrections_is_said(tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    open_store(str(tmp_path / "store.db")).close()
    assert run_finetune(tmp_path, mnist_dir) == 1
    assert "no corrections" in capsys.readouterr().err


def test_too_few_corrections_is_said(tmp_path: Path, mnist_dir: Path, mnist_tail,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = mnist_tail
    plant(tmp_path / "store.db", images[:12], [str(label) for label in labels[:12]])
    assert run_finetune(tmp_path, mnist_dir) == 1
    error = capsys.readouterr().err
    assert "too few corrections" in error and "2 held out (need 5" in error
    assert not (tmp_path / "tuned").exists()


def test_none_corrections_train_the_not_a_digit_output(tmp_path: Path, mnist_dir: Path, mnist_tail) -> None:
    """An 11-output base (digits + "not a digit"): "none" corrections teach class 10; digits stay digits."""
    import keras

    from digitrec.data import to_model_input
    from digitrec.finetune import FinetuneConfig, default_config, finetune

    images, labels = mnist_tail
    keras.utils.set_random_seed(0)
    image = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(image)
    x = keras.layers.Flatten()(x)
    base = keras.Model(image, keras.layers.Dense(11, activation="softmax", name="probabilities")(x))
    base.compile("adam", "sparse_categorical_crossentropy")
    base.fit(to_model_input(images[:1500]), labels[:1500], epochs=2, verbose=0)  # never saw a non-digit
    base.save(tmp_path / "base.keras")

    # The writer's "not a digit" marks: a filled square, which the base can only call a digit.
    marks = np.zeros((60, 28, 28), np.uint8)
    for i, mark in enumerate(marks):
        size = 8 + i % 10
        mark[14 - size // 2: 14 + size // 2, 14 - size // 2: 14 + size // 2] = 255
    plant(tmp_path / "store.db", marks, ["none"] * 60)
    plant(tmp_path / "store.db", images[1500:1560], [str(label) for label in labels[1500:1560]])
    config = default_config(epochs=3, limit=2000, data=DataConfig(data_dir=mnist_dir), test_limit=500,
                            learning_rate=3e-3, replay=600)
    config = FinetuneConfig(**{**config.__dict__, "negative_replay": 40, "max_mnist_drop": 1.0,
                               "correction_share": 0.4})
    with open_store(str(tmp_path / "store.db")) as store:
        result = finetune(store, tmp_path / "tuned", config, base=tmp_path / "base.keras")
    assert result.figures["skipped_none"] == 0
    assert result.figures["held_out_after"] > result.figures["held_out_before"]
    def rejected(path: Path) -> float:
        scores = load_classifier(path).predict_scores(marks.astype(np.float32) / 255)  # type: ignore[attr-defined]
        return float(np.mean(scores.not_digit > 0.5))

    assert rejected(tmp_path / "base.keras") < 0.2
    assert rejected(tmp_path / "tuned") >= 0.7  # the served (LiteRT) model now says "not a digit" to them


def test_recalibrate_scales_the_base_temperature_by_how_much_sharper_tuning_made_the_outputs() -> None:
    from digitrec.finetune import recalibrate

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 11))
    labels = np.array([rng.choice(11, p=np.exp(row) / np.exp(row).sum()) for row in logits])  # calibrated at T=1

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    sharper = recalibrate(1.5, softmax(logits), softmax(2 * logits), labels)  # tuning doubled the logits
    assert sharper["temperature"] == pytest.approx(3.0, rel=0.1)
    assert sharper["fitted_here"]["base"] == pytest.approx(1.0, rel=0.1)
    consistent = recalibrate(1.0, softmax(logits), softmax(2 * logits), labels)  # a base calibrated on this data
    assert consistent["temperature"] == pytest.approx(2.0, rel=0.1)
    nll = consistent["validation_nll_tuned"]
    assert nll["new_temperature"] < nll["base_temperature"]  # keeping the base's T would be overconfident
    unchanged = recalibrate(1.5, softmax(logits), softmax(logits), labels)
    assert unchanged["temperature"] == pytest.approx(1.5, rel=1e-3)
    uncalibrated = recalibrate(None, softmax(logits), softmax(0.5 * logits), labels)  # a base with no T
    assert uncalibrated["temperature"] == pytest.approx(0.5, rel=0.1)


def test_the_run_mix_oversamples_corrections_and_replays_non_digits_every_epoch() -> None:
    from digitrec.finetune import NOT_A_DIGIT, CorrectionData, FinetuneConfig, run_mix

    corrections = np.full((20, 28, 28), 7, np.uint8)
    data = CorrectionData(corrections, np.full(20, 3), corrections[:5], np.full(5, 3), 25, 0, 0, "s")
    replay = (np.full((1000, 28, 28), 1, np.uint8), np.full(1000, 1))
    negatives = np.full((50, 28, 28), 9, np.uint8)
    config = FinetuneConfig(replay=400, correction_share=0.5, max_oversample=100)
    images, labels, repeats, from_corrections = run_mix(data, replay, negatives, config, 3,
                                                        np.random.default_rng(0))
    assert repeats == 22  # 0.5 share of an epoch beside 400 MNIST + 50 non-digits: 450 / 20 inputs
    assert len(labels) == 3 * (20 * repeats + 400 + 50)
    assert np.sum(labels == 3) == 3 * 20 * repeats and np.sum(labels == NOT_A_DIGIT) == 3 * 50
    assert np.all(images[labels == NOT_A_DIGIT] == 9) and np.all(images[labels == 3] == 7)
    assert len(set(labels[:50].tolist())) == 3  # shuffled, not laid out in blocks
    assert np.array_equal(from_corrections, labels == 3)  # which rows are corrections, through the shuffle
    capped = run_mix(data, replay, negatives, FinetuneConfig(replay=400, correction_share=0.5, max_oversample=5),
                     1, np.random.default_rng(0))
    assert capped[2] == 5


def test_freeze_keeps_the_first_convolutions_of_each_nested_network() -> None:
    import keras

    from digitrec.finetune import FinetuneConfig, freeze

    def network(name: str) -> keras.Model:
        image = keras.Input((28, 28, 1))
        x = keras.layers.Conv2D(4, 3, name="first")(image)
        x = keras.layers.BatchNormalization(name="norm")(x)
        x = keras.layers.Conv2D(4, 3, name="second")(x)
        x = keras.layers.Conv2D(4, 3, name="third")(x)
        return keras.Model(image, keras.layers.Dense(10)(keras.layers.Flatten()(x)), name=name)

    image = keras.Input((28, 28, 1))
    digits, rejector = network("digits"), network("rejector")
    model = keras.Model(image, keras.layers.Concatenate()([digits(image), rejector(image)]))
    frozen = freeze(model, FinetuneConfig(frozen_convs=2))
    assert frozen == ["digits/first", "digits/second", "rejector/first", "rejector/second"]
    for net in (digits, rejector):
        assert [layer.trainable for layer in net.layers if layer.name in ("first", "norm", "second", "third")] == [
            False, False, False, True]


def test_a_ten_output_base_without_calibration(tmp_path: Path, mnist_dir: Path, mnist_tail) -> None:
    """A plain 10-output model (no not-a-digit output, no temperature): no non-digits are replayed, "none"
    corrections are skipped and counted, and the tuned bundle gets the temperature fitted for it."""
    import keras

    from digitrec.data import to_model_input
    from digitrec.finetune import FinetuneConfig, default_config, finetune

    images, labels = mnist_tail
    keras.utils.set_random_seed(0)
    image = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, strides=2, activation="relu")(image))
    base = keras.Model(image, keras.layers.Dense(10, activation="softmax", name="probabilities")(x))
    base.compile("adam", "sparse_categorical_crossentropy")
    base.fit(to_model_input(images[:1500]), labels[:1500], epochs=2, verbose=0)
    base.save(tmp_path / "base.keras")
    plant(tmp_path / "store.db", boxed(images[1500:1600]), [str(label) for label in labels[1500:1600]])
    plant(tmp_path / "store.db", images[1600:1604], ["none"] * 4)
    config = default_config(epochs=2, limit=2000, data=DataConfig(data_dir=mnist_dir), test_limit=500,
                            learning_rate=1e-3, replay=600)
    config = FinetuneConfig(**{**config.__dict__, "max_mnist_drop": 1.0})
    with open_store(str(tmp_path / "store.db")) as store:
        result = finetune(store, tmp_path / "tuned", config, base=tmp_path / "base.keras")
    assert result.figures["skipped_none"] == 4 and result.figures["corrections"] == 100
    calibration = result.metadata["calibration"]
    assert calibration["base_temperature"] is None
    assert calibration["temperature"] == pytest.approx(calibration["fitted_here"]["tuned"], abs=1e-3)
    assert "T fitted for the tuned model" in calibration["temperature_fitted_on"]
    assert "non-digits" not in calibration["temperature_fitted_on"]
    assert load_classifier(tmp_path / "tuned").predict_proba(np.zeros((2, 28, 28), np.float32)).shape == (2, 10)


def test_gather_counts_corrections_whose_reading_found_nothing_to_classify() -> None:
    """A digit label on an image where the reading found no ink has no input: skipped, and said why; a
    two-digit label on one crop is a mismatch; the rest train or are held out by id."""
    import datetime as dt

    from digitrec.finetune import gather
    from digitrec.store import Correction

    def correction(id_: int, label: str, inputs: int) -> Correction:
        return Correction(id=id_, created_at=dt.datetime(2026, 1, 1), source="api", label=label, mode="digit",
                          model_version=None, answer={}, image_size=1, image_sha256="0", image_reduced=False,
                          n_inputs=inputs, inputs=np.full((inputs, 28, 28), id_, np.uint8))

    rows = [correction(1, "7", 1), correction(2, "4", 0), correction(3, "12", 1), correction(4, "3", 0),
            correction(5, "8", 1), correction(6, "none", 1)]
    data = gather(rows, classes=11)
    assert data.skipped_misaligned == 3 and data.skipped_no_input == 2  # ids 2, 3, 4; of them 2 and 4 no ink
    assert data.train_labels.tolist() == [7, 10] and data.held_out_labels.tolist() == [8]  # id 5 held out
    assert data.corrections == 3


def test_replayed_inputs_learn_part_of_their_target_from_the_base() -> None:
    from digitrec.finetune import targets

    labels = np.array([3, 1, 10])
    from_corrections = np.array([True, False, False])
    base = np.full((3, 11), 0.0, np.float32)
    base[:, 7] = 1.0  # the base answers 7 for every input
    mixed = targets(labels, from_corrections, base, 0.25)
    assert mixed.shape == (3, 11) and np.allclose(mixed.sum(axis=1), 1)
    assert mixed[0, 3] == 1 and mixed[0, 7] == 0  # a correction: its label only
    assert mixed[1, 1] == pytest.approx(0.75) and mixed[1, 7] == pytest.approx(0.25)
    assert mixed[2, 10] == pytest.approx(0.75)


def test_step_back_moves_float_weights_part_of_the_way_and_keeps_counters() -> None:
    from digitrec.finetune import step_back

    base = [np.zeros(3, np.float32), np.array([5], np.int64)]
    trained = [np.array([1.0, -2.0, 4.0], np.float32), np.array([9], np.int64)]
    stepped = step_back(base, trained, 0.75)
    assert np.allclose(stepped[0], [0.75, -1.5, 3.0]) and stepped[0].dtype == np.float32
    assert stepped[1].tolist() == [9]
