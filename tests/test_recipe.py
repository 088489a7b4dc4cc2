"""`digitrec train --recipe`: the named recipes (fast, fast-accurate) train as named; explicit flags win."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from digitrec.bundle import METADATA_FILE
from digitrec.cli import main


@pytest.mark.parametrize("name", ["fast", "fast-accurate"])
def test_named_recipe_trains_its_architecture_and_flags_override_it(tmp_path: Path, mnist_dir: Path,
                                                                      name: str) -> None:
    from digitrec.recipes import NAMED_RECIPES

    named = NAMED_RECIPES[name]
    output = tmp_path / name
    code = main(["train", "--recipe", name, "--dry-run", "--batch-size", "64",
                 "--data-dir", str(mnist_dir), "--output", str(output)])
    assert code == 0
    meta = json.loads((output / METADATA_FILE).read_text())
    assert meta["architecture"] == named.arch
    config = meta["config"]
    # From the named recipe, not the architecture's own: --batch-size given, so it wins.
    recipe = named.recipe
    assert (config["schedule"], config["learning_rate"], config["augment"], config["keep"]) == (
        recipe.schedule, recipe.learning_rate, recipe.augment, recipe.keep)
    assert config["batch_size"] == 64
    assert config["epochs"] == 1 and config["limit"] == 2000  # --dry-run
    # One epoch on 2,000 images (31 steps, mostly learning-rate warm-up) learns something real: chance is 10%.
    assert meta["test_accuracy"] > 0.3


def test_named_recipes_differ_from_the_architectures_own() -> None:
    """'fast-accurate' is its own recipe, not a second name for one already reachable with --arch."""
    from digitrec.recipes import NAMED_RECIPES, RECIPES
    from digitrec.train import recipe_config

    named = NAMED_RECIPES["fast-accurate"]
    config = recipe_config("fast-accurate")
    assert (config.arch, config.epochs, config.augment) == (named.arch, named.recipe.epochs, named.recipe.augment)
    assert named.recipe != RECIPES[named.arch] or named.arch != NAMED_RECIPES["fast"].arch
    assert recipe_config("fast", epochs=3).epochs == 3  # an explicit value wins
    with pytest.raises(ValueError, match="unknown recipe 'quick'"):
        recipe_config("quick")


def test_explicit_arch_overrides_the_recipe(tmp_path: Path, mnist_dir: Path) -> None:
    output = tmp_path / "small"
    code = main(["train", "--recipe", "fast", "--arch", "bn-strided-cnn-small", "--limit", "300",
                 "--epochs", "1", "--data-dir", str(mnist_dir), "--output", str(output)])
    assert code == 0
    meta = json.loads((output / METADATA_FILE).read_text())
    assert meta["architecture"] == "bn-strided-cnn-small"
    assert meta["config"]["augment"] is True  # the small architecture's own recipe, not fast's


def test_epoch_batches_cover_every_image_once_per_pass_in_a_new_order() -> None:
    from digitrec.train import epoch_batches

    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    labels = np.arange(10)
    dataset, steps = epoch_batches(images, labels, 4, passes=3)
    assert steps == 3  # 4 + 4 + a partial batch of 2
    iterator = iter(dataset)
    orders = []
    for _ in range(3):  # three passes from the one endless iterator, as fit's epochs use it
        batch_images, batch_labels = zip(*(next(iterator) for _ in range(steps)), strict=True)
        assert [len(b) for b in batch_labels] == [4, 4, 2]
        order = np.concatenate([b.numpy() for b in batch_labels])
        assert sorted(order) == list(range(10))  # every image exactly once per pass
        assert np.array_equal(np.concatenate([b.numpy() for b in batch_images]).ravel(), order)  # pairs kept
        orders.append(tuple(order))
    assert len(set(orders)) > 1  # reshuffled between passes
    with pytest.raises(StopIteration):  # exactly `passes` passes: nothing left running after the last epoch
        next(iterator)


def test_help_states_the_recipes_and_defaults(capsys: pytest.CaptureFixture) -> None:
    from digitrec.recipes import NAMED_RECIPES

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--recipe {default,fast,fast-accurate}" in text
    fast = NAMED_RECIPES["fast"].recipe
    assert f"'fast': {NAMED_RECIPES['fast'].arch}, {fast.epochs} epochs, batch {fast.batch_size}" in text
    assert "Flags given explicitly override the recipe (default: default)" in text


@pytest.mark.parametrize("arch", ["s2d-cnn-fast", "bn-strided-cnn-fast"])
def test_fused_batch_norm_trains_as_keras_batch_norm_and_saves_as_plain_keras(arch: str, tmp_path: Path) -> None:
    """train.fuse_batch_norm: same loss, gradients and moving statistics as Keras's own layer, one op each
    way; the saved model.keras still holds plain BatchNormalization layers and loads without digitrec."""
    import keras
    import tensorflow as tf

    from digitrec.models import make_model
    from digitrec.train import fuse_batch_norm

    keras.utils.set_random_seed(0)
    plain, fused = make_model(arch), make_model(arch)
    fused.set_weights(plain.get_weights())
    image_norms = sum(isinstance(layer, keras.layers.BatchNormalization) and len(layer.input.shape) == 4
                      for layer in plain.layers)
    assert fuse_batch_norm(fused) == image_norms > 0  # the dense layer's batch norm keeps Keras's call
    for model in (plain, fused):  # dropout draws differ between two models: take it out of the comparison
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
    images = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    labels = np.arange(16) % 10

    def step(model: keras.Model) -> tuple[float, list[np.ndarray]]:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, model(images, training=True)))
        return float(loss), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]

    before = plain.get_weights()
    (plain_loss, plain_grads), (fused_loss, fused_grads) = step(plain), step(fused)
    assert abs(plain_loss - fused_loss) < 1e-4
    for a, b in zip(plain_grads, fused_grads, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * np.abs(a).max())  # float round-off
    moved = [np.abs(a - b).max() for a, b in zip(plain.get_weights(), before, strict=True)]
    assert max(moved) > 1e-3  # the moving statistics did move ...
    for a, b in zip(plain.get_weights(), fused.get_weights(), strict=True):  # ... by the same amounts
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(
        tf.TensorSpec((16, 28, 28, 1), tf.float32)).graph
    assert sum(op.type.startswith("FusedBatchNorm") for op in graph.get_operations()) == image_norms
    fused.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert all(type(layer).call is layer.call.__func__ for layer in loaded.layers)  # nothing patched
    np.testing.assert_allclose(loaded(images, training=False), fused(images, training=False), atol=1e-6)
