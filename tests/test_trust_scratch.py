"""trust_scratch end to end on a tiny slice: fit two 11-output networks, bundle their average, read it back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitrec.bundle import read_metadata
from digitrec.data import DataConfig, load_split
from digitrec.runtime import classify, decision_thresholds, load_classifier
from digitrec.trust_scratch import NOT_A_DIGIT


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """What `pack` writes, in small: MNIST digits plus "negatives" that are plain filled blocks."""
    train = load_split("train", DataConfig(data_dir=mnist_dir))
    rng = np.random.default_rng(0)
    blocks = np.zeros((300, 28, 28), np.uint8)
    for block in blocks:
        top, left = rng.integers(2, 8, 2)
        block[top: top + rng.integers(12, 20), left: left + rng.integers(12, 20)] = 255
    def split(digits: slice, negatives: slice) -> dict[str, np.ndarray]:
        x = np.concatenate([train.images[digits], blocks[negatives]])
        y = np.concatenate([train.labels[digits], np.full(len(blocks[negatives]), NOT_A_DIGIT)]).astype(np.int8)
        sources = np.array(["mnist"] * len(train.labels[digits]) + ["negative: block"] * len(blocks[negatives]))
        return {"x": x, "y": y, "s": sources}
    fit_part, val_part = split(slice(0, 1200), slice(0, 240)), split(slice(1200, 1500), slice(240, 300))
    path = tmp_path_factory.mktemp("scratch") / "data.npz"
    np.savez_compressed(path, **{f"{k}_train": v for k, v in fit_part.items()},
                        **{f"{k}_val": v for k, v in val_part.items()})
    return path


def test_fit_then_bundle_an_average_of_two(packed: Path, mnist_dir: Path, tmp_path: Path) -> None:
    records = []
    for seed in (1, 2):
        done = subprocess.run(
            [sys.executable, "-m", "digitrec.trust_scratch", "fit", "--data", str(packed), "--output",
             str(tmp_path / "weights"), "--width", "4", "--dropout", "0.1", "--seed", str(seed),
             "--epochs", "4", "--batch-size", "32", "--budget", "600"], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
        record = json.loads(line.removeprefix("RESULT "))
        assert record["epochs"] == record["epochs_run"] == 4 and not record["stopped_at_budget"]
        assert record["train_n"] == 1440 and record["val_n"] == 360
        (tmp_path / f"{seed}.json").write_text(json.dumps(record))
        records.append(record)
    weights = [str(tmp_path / "weights" / f"w4-s{seed}.weights.h5") for seed in (1, 2)]
    done = subprocess.run(
        [sys.executable, "-m", "digitrec.trust_scratch", "bundle", "--weights", *weights,
         "--record", str(tmp_path / "1.json"), str(tmp_path / "2.json"), "--data", str(packed),
         "--data-dir", str(mnist_dir), "--output", str(tmp_path / "bundle")],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    metadata = read_metadata(tmp_path / "bundle")
    assert metadata["ensemble_size"] == 2 and metadata["output"]["shape"] == [11]
    assert [m["seed"] for m in metadata["training"]["members"]] == [1, 2]
    assert 0.5 <= metadata["calibration"]["not_digit_threshold"] <= 0.99
    assert metadata["test_accuracy"] > 0.3  # 4 epochs on 1,200 digits: far from chance, far from good

    classifier = load_classifier(tmp_path / "bundle")
    block = np.zeros((1, 28, 28), np.float32)
    block[0, 6:22, 6:22] = 1.0
    scores = classify(classifier, block)
    assert scores.probabilities.shape == (1, 10)
    assert scores.not_digit[0] >= decision_thresholds(classifier).not_digit  # it learnt the blocks


def test_extra_crops_then_refine_a_bundle(packed: Path, mnist_dir: Path, tmp_path: Path) -> None:
    """`extra` adds each named style's crops to both splits; `refine` trains a one-network bundle on from
    its weights, and records what it added and how."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "digitrec.trust_scratch", *args],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    more = tmp_path / "more.npz"
    run("extra", "--data", str(packed), "--output", str(more), "--count", "20", "--data-dir", str(mnist_dir))
    with np.load(packed) as before, np.load(more) as after:
        for split, count in (("train", 20), ("val", 2)):
            added = after[f"s_{split}"][len(before[f"s_{split}"]):]
            assert sorted(set(added)) == ["bolder border cropped", "cut from touching", "squared slashed 0",
                                          "touching digits"]
            assert all(np.sum(added == name) == count for name in set(added))
            assert np.array_equal(after[f"x_{split}"][: len(before[f"x_{split}"])], before[f"x_{split}"])
            labels = after[f"y_{split}"][len(before[f"y_{split}"]):]
            assert set(labels[added == "squared slashed 0"]) == {0}  # labels travel with the crops
            assert set(labels[added == "touching digits"]) == {10}  # two digits read whole: not a digit
            assert set(labels[added == "cut from touching"]) <= set(range(10)) - {1}  # one digit, with a sliver

    done = run("fit", "--data", str(packed), "--output", str(tmp_path / "w"), "--width", "4", "--dropout", "0.1",
               "--epochs", "2", "--batch-size", "32", "--budget", "600")
    (tmp_path / "fit.json").write_text(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
    run("bundle", "--weights", str(tmp_path / "w" / "w4-s1.weights.h5"), "--record", str(tmp_path / "fit.json"),
        "--data", str(packed), "--data-dir", str(mnist_dir), "--output", str(tmp_path / "base"))
    done = run("refine", "--data", str(more), "--init", str(tmp_path / "base"), "--output", str(tmp_path / "r"),
               "--epochs", "1", "--batch-size", "32")
    record = json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert record["name"] == "w4-s1-refined" and record["width"] == 4
    assert record["refined"]["added_crops"] == {"bolder border cropped": 20, "cut from touching": 20,
                                                "squared slashed 0": 20, "touching digits": 20}
    assert record["refined"]["train_n"] == 1440 + 80 and record["refined"]["epochs"] == 1
    assert "earlier" not in record["refined"]
    import keras

    from digitrec.trust_scratch import build
    base = keras.models.load_model(tmp_path / "base" / "model.keras", compile=False)
    refined = build(4, 0.1)
    refined.load_weights(tmp_path / "r" / "w4-s1-refined.weights.h5")
    assert any(not np.allclose(a, b) for a, b in zip(base.get_weights(), refined.get_weights(), strict=True))

    (tmp_path / "r.json").write_text(json.dumps(record))
    run("bundle", "--weights", str(tmp_path / "r" / "w4-s1-refined.weights.h5"), "--record",
        str(tmp_path / "r.json"), "--data", str(more), "--data-dir", str(mnist_dir), "--output", str(tmp_path / "b"))
    metadata = read_metadata(tmp_path / "b")
    assert "refined" in metadata["training"]["what"] and "refine --epochs 1" in metadata["command"]
    assert metadata["training"]["data"]["synthetic"]["squared slashed 0"] == 20

    # refined again: the first refinement's record is kept, and the command names both
    done = run("refine", "--data", str(more), "--init", str(tmp_path / "b"), "--output", str(tmp_path / "r2"),
               "--epochs", "1", "--batch-size", "32", "--seed", "5")
    again = json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert again["name"] == "w4-s1-refined-refined" and again["refined"]["seed"] == 5
    assert [step["seed"] for step in again["refined"]["earlier"]] == [1]
    assert again["refined"]["earlier"][0]["fit_seconds"] == record["refined"]["fit_seconds"]
