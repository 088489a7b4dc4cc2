"""Train a model (or an ensemble) on MNIST, resumably, and write a verified bundle.

The data path: MNIST (data.py) -> model (models.py) behind augmentation (augment.py) -> fit with a
checkpoint every epoch (checkpoint.py) -> pick each member's best epoch on the *validation* split ->
test accuracy, once, for the record -> bundle (`model.keras`, `model.tflite`, `model.json`) written whole
or not at all. The test set never chooses anything.

A training-only module: it imports Keras (TensorFlow).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from digitrec import __version__
from digitrec.atomic import OutputError, atomic_directory, check_folder_target
from digitrec.augment import AugmentConfig, wrap_for_training
from digitrec.bundle import INPUT_FORMAT, KERAS_FILE, METADATA_FILE, TFLITE_FILE, write_metadata
from digitrec.checkpoint import RunState, TrainingCheckpoint, checkpoint_dir_for
from digitrec.data import DataConfig, Split, load_split, to_model_input
from digitrec.evaluate import Metrics, compute_metrics
from digitrec.export import check_agreement, export_tflite
from digitrec.keras_files import save_model
from digitrec.models import DEFAULT_ARCH, average_ensemble, make_model
from digitrec.recipes import NAMED_RECIPES, RECIPES

log = logging.getLogger(__name__)

VALIDATION_SIZE = 5000  # held out of the 60,000 training images; MNIST's own test set stays untouched
AGREEMENT_IMAGES = 2000  # test images on which the .tflite must reproduce Keras


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; recorded in the bundle and in the resume state."""

    arch: str = DEFAULT_ARCH
    epochs: int | None = None  # None: the architecture's recipe
    batch_size: int | None = None  # None: the architecture's recipe
    learning_rate: float | None = None  # None: the architecture's recipe
    schedule: str | None = None  # None: the architecture's recipe
    augment: bool | None = None  # None: the architecture's recipe
    keep: str | None = None  # None: the architecture's recipe ("best" validation epoch, or "last")
    seed: int = 0  # member i of an ensemble uses seed + i
    ensemble: int = 1  # number of members whose probabilities are averaged
    patience: int | None = 8  # early stopping: epochs without a validation gain (None: never stop)
    limit: int | None = None  # train on only the first N training images (smoke runs, tests)
    validation_size: int = VALIDATION_SIZE
    data: DataConfig = field(default_factory=DataConfig)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)

    def resolved(self) -> TrainConfig:
        """A copy with every None filled in from the architecture's recipe."""
        recipe = RECIPES.get(self.arch, RECIPES[DEFAULT_ARCH])
        return dataclasses.replace(
            self,
            epochs=self.epochs if self.epochs is not None else recipe.epochs,
            batch_size=self.batch_size if self.batch_size is not None else recipe.batch_size,
            learning_rate=self.learning_rate if self.learning_rate is not None else recipe.learning_rate,
            schedule=self.schedule if self.schedule is not None else recipe.schedule,
            augment=self.augment if self.augment is not None else recipe.augment,
            keep=self.keep if self.keep is not None else recipe.keep,
        )


def recipe_config(name: str, **flags: Any) -> TrainConfig:
    """The TrainConfig of `--recipe name`, resolved; flags that are not None override it.

    An explicit `arch` other than the recipe's takes that architecture's own recipe instead: a recipe's
    epochs and learning rate are tuned to its architecture and mean little for another.
    """
    try:
        named = NAMED_RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(NAMED_RECIPES)}") from None
    arch = flags.pop("arch", None) or named.arch
    config = TrainConfig(arch=arch, **flags)
    if arch != named.arch:
        return config.resolved()
    recipe = dataclasses.asdict(named.recipe)
    return dataclasses.replace(config, **{key: value if getattr(config, key) is None else getattr(config, key)
                                          for key, value in recipe.items()})


@dataclass(frozen=True)
class TrainResult:
    output: Path
    metadata: dict[str, Any]


def split_validation(train: Split, size: int, limit: int | None) -> tuple[Split, Split]:
    """Hold out `size` images for validation by a fixed shuffle, the same for every seed and member."""
    order = np.random.default_rng(12345).permutation(len(train.labels))
    validation_index, train_index = order[:size], order[size:]
    if limit is not None:
        train_index = train_index[:limit]
        validation_index = validation_index[: max(min(size, limit // 5), 1)]
    return (Split(train.images[train_index], train.labels[train_index]),
            Split(train.images[validation_index], train.labels[validation_index]))


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam with the configured schedule; its step counter is saved with checkpoints, so is the schedule."""
    assert config.learning_rate is not None and config.epochs is not None
    if config.schedule == "constant":
        return keras.optimizers.Adam(config.learning_rate)
    if config.schedule != "one-cycle":
        raise ValueError(f"unknown schedule {config.schedule!r}; choose 'constant' or 'one-cycle'")
    return keras.optimizers.Adam(one_cycle_schedule(config.learning_rate, config.epochs * steps_per_epoch))


def one_cycle_schedule(peak: float, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Warm up from peak/10 to `peak` over the first fifth of the steps, then cosine-decay to peak/1000."""
    total = max(total_steps, 2)
    warmup = max(total // 5, 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10, decay_steps=total - warmup, alpha=1e-3,
        warmup_target=peak, warmup_steps=warmup,
    )


def build_trainable(config: TrainConfig, seed: int, steps_per_epoch: int) -> tuple[keras.Model, keras.Model]:
    """(inference model, compiled training model): the second wraps the first with augmentation."""
    keras.utils.set_random_seed(seed)
    model = make_model(config.arch)
    if keras.backend.backend() == "tensorflow":
        fuse_batch_norm(model)
    trainable = wrap_for_training(model, config.augmentation, seed) if config.augment else model
    trainable.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        # XLA measured 2.5x slower for these small convnets on CPU; other backends always compile.
        jit_compile=False if keras.backend.backend() == "tensorflow" else "auto",
    )
    return model, trainable


def fuse_batch_norm(model: keras.Model) -> int:
    """Make each image BatchNormalization of `model` train as TensorFlow's one fused op; return how many.

    Keras 3 normalizes a batch with separate element-wise ops (moments, subtract, multiply, broadcast ...)
    and as many again in the gradient: in a profile of bn-strided-cnn-fast's training step they took a
    third of the op time, more than the forward convolutions (benchmarks/train_speed.py, README). The
    fused op computes the same thing in one pass each way. Only the training-mode call is replaced, on
    these layer objects, so inference, the saved model.keras (plain BatchNormalization layers) and the
    .tflite are as before. Other cases (a mask, renorm, inference, a frozen layer, not float32 NHWC)
    keep Keras's own call. TensorFlow backend only.
    """
    import types

    import tensorflow as tf

    def fused_call(self: Any, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not (training and self.trainable) or mask is not None or inputs.dtype != tf.float32:
            return type(self).call(self, inputs, training=training, mask=mask)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma.value, self.beta.value, epsilon=self.epsilon, is_training=True,
            data_format="NHWC")
        # The fused op returns the unbiased batch variance; Keras's moving average takes the biased one.
        count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean.value * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance.value * self.momentum + variance * (1.0 - self.momentum))
        return outputs

    fused = 0
    for layer in all_layers(model):
        if (isinstance(layer, keras.layers.BatchNormalization) and _input_rank(layer) == 4
                and layer.axis in (-1, 3) and layer.scale and layer.center
                and not getattr(layer, "renorm", False) and not getattr(layer, "synchronized", False)):
            layer.call = types.MethodType(fused_call, layer)
            fused += 1
    return fused


def _input_rank(layer: keras.layers.Layer) -> int | None:
    try:
        return len(layer.input.shape)
    except (AttributeError, ValueError):  # never called, or called on several inputs: leave it alone
        return None


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer, including those inside nested models (the bundled 11-output model nests two)."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(all_layers(layer))
    return found


def epoch_batches(images: np.ndarray, labels: np.ndarray, batch_size: int,
                  passes: int | None = None) -> tuple[Any, int]:
    """(tf.data dataset of `passes` shuffled passes, batches per pass) for `fit(..., steps_per_epoch=)`.

    Why not `fit(x, y, shuffle=True)`: Keras then makes a new tf.data iterator at every epoch start and
    drops the previous one, and the old iterator's destructor blocks until its background threads stop
    (tf.data's autotuning model thread among them): that wait stalled the fast recipe 5-45 s at epoch
    starts on a loaded machine (benchmarks/train_speed.py, README). Here one iterator serves every epoch
    (Keras keeps it when steps_per_epoch is given), and autotuning is off (fixed parallelism, no model
    thread). Each pass is a fresh permutation with a partial last batch, as fit's own shuffle does.
    `passes` should be the epochs fit will run: an endless iterator alive at interpreter exit can hang it.
    """
    import tensorflow as tf

    count = len(labels)
    steps = -(-count // batch_size)

    def one_pass(_: Any) -> Any:
        return tf.data.Dataset.from_tensor_slices(tf.random.shuffle(tf.range(count))).batch(batch_size)

    data = tf.data.Dataset.from_tensors((images, labels)).repeat()  # one in-memory copy, indexed by gather
    batches = tf.data.Dataset.range(passes if passes is not None else 2**62).flat_map(one_pass)
    dataset = tf.data.Dataset.zip((batches, data)).map(
        lambda index, pair: (tf.gather(pair[0], index), tf.gather(pair[1], index)),
        num_parallel_calls=2, deterministic=True,
    ).prefetch(2)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options), steps


def train_member(config: TrainConfig, member: int, run_dir: Path, train: Split, validation: Split,
                 callbacks: Sequence[keras.callbacks.Callback]) -> tuple[keras.Model, dict[str, Any]]:
    """Train (or resume, or reload when finished) one member; return it at its best validation epoch."""
    assert config.epochs is not None and config.batch_size is not None
    directory = run_dir / f"member-{member}"
    steps_per_epoch = -(-len(train.labels) // config.batch_size)
    model, trainable = build_trainable(config, config.seed + member, steps_per_epoch)
    checkpoint = TrainingCheckpoint(directory, trainable, model, patience=config.patience)
    state = checkpoint.restore()  # loads weights + optimizer state when there is a checkpoint
    if not state.finished:
        log.info("member %d: epochs %d..%d", member, state.epochs_done + 1, config.epochs)
        batches, steps = epoch_batches(to_model_input(train.images), train.labels, config.batch_size,
                                       passes=config.epochs - state.epochs_done)
        trainable.fit(
            batches, steps_per_epoch=steps,
            validation_data=(to_model_input(validation.images), validation.labels),
            epochs=config.epochs, initial_epoch=state.epochs_done,
            verbose=0, callbacks=[checkpoint, *callbacks],
        )
        state = checkpoint.finish()
    if config.keep == "best":
        checkpoint.load_best()
    return model, {**state.summary(), "kept_epoch": state.best_epoch if config.keep == "best" else state.epochs_done}


def train(config: TrainConfig, output: Path, *, command: str,
          callbacks: Sequence[keras.callbacks.Callback] = (), resume: bool = False) -> TrainResult:
    """Train per `config` and write the bundle folder `output` (checkpoints go to `output`.checkpoints)."""
    config = config.resolved()
    output = Path(output)
    check_output(output)  # now, not after hours of training
    run_dir = checkpoint_dir_for(output)
    started = time.perf_counter()
    if resume:
        run_state = RunState.load(run_dir)
        config, command = config_from_dict(run_state.config).resolved(), run_state.command
    full_train = load_split("train", config.data)
    test = load_split("test", config.data)
    if not resume:  # only once the data is known good: a failed start must not leave a run to resume
        run_state = RunState.start(run_dir, _jsonable(dataclasses.asdict(config)), command)

    train_split, validation = split_validation(full_train, config.validation_size, config.limit)
    log.info("training on %d images, validating on %d", len(train_split.labels), len(validation.labels))

    members: list[keras.Model] = []
    summaries: list[dict[str, Any]] = []
    for member in range(config.ensemble):
        model, summary = train_member(config, member, run_dir, train_split, validation, callbacks)
        members.append(model)
        summaries.append(summary)
    final = members[0] if len(members) == 1 else average_ensemble(members)

    x_test = to_model_input(test.images)
    for model, summary in zip(members, summaries, strict=True):
        summary["test_accuracy"] = compute_metrics(test.labels, model.predict(x_test, 512, verbose=0)).accuracy
    metrics = compute_metrics(test.labels, final.predict(x_test, 512, verbose=0))
    metadata = describe(config, command, metrics, summaries, time.perf_counter() - started + run_state.seconds,
                        mnist_md5={**full_train.md5, **test.md5})
    write_bundle(final, output, metadata, x_test[:AGREEMENT_IMAGES])
    shutil.rmtree(run_dir, ignore_errors=True)
    return TrainResult(output=output, metadata=metadata)


def check_output(output: Path) -> None:
    """Raise OutputError if the bundle (and legacy `.h5`) could not be written at `output`.

    Refused: a name that is no folder name ('', '.', '/'), an existing file or device (/dev/null) where the
    folder goes, a folder that cannot be written or whose parent cannot, and an existing folder that is
    not a bundle (a bundle replaces its folder whole: `--output ~/Documents` must not delete it).
    """
    legacy_h5 = output if output.suffix == ".h5" else None
    folder = output.with_suffix("") if legacy_h5 else output
    check_folder_target(folder)
    if folder.is_dir() and any(folder.iterdir()) and not any(
            (folder / name).exists() for name in (KERAS_FILE, TFLITE_FILE, METADATA_FILE)):
        raise OutputError(f"cannot write {folder}: it exists and is not a model bundle (no {METADATA_FILE});"
                          " the bundle would replace the whole folder, so choose another --output")
    if legacy_h5 is not None and (legacy_h5.is_symlink() or (legacy_h5.exists() and not legacy_h5.is_file())):
        raise OutputError(f"cannot write {legacy_h5}: it exists and is not a regular file")


def write_bundle(model: keras.Model, output: Path, metadata: dict[str, Any], check_images: np.ndarray) -> None:
    """Write model.keras, model.tflite (verified against Keras) and model.json as one atomic folder swap.

    `output` ending in `.h5` writes the bundle to the folder of the same stem and the legacy HDF5 file
    the seed wrote at `output` itself.
    """
    legacy_h5 = output if output.suffix == ".h5" else None
    folder = output.with_suffix("") if legacy_h5 else output
    with atomic_directory(folder) as staging:
        save_model(model, staging / KERAS_FILE)
        if keras.backend.backend() == "tensorflow":
            export_tflite(model, staging / TFLITE_FILE)
            metadata["litert_max_probability_difference"] = check_agreement(
                model, staging / TFLITE_FILE, check_images)
        else:  # LiteRT conversion needs TensorFlow; `digitrec export` finishes the bundle where it is installed
            log.warning("Keras backend %s: model.tflite not written; run `digitrec export %s`",
                        keras.backend.backend(), folder)
        write_metadata(staging, metadata)
    if legacy_h5:
        save_model(model, legacy_h5)  # atomic: OutputError, and the previous file kept, on failure


def describe(config: TrainConfig, command: str, metrics: Metrics, members: list[dict[str, Any]],
             seconds: float, mnist_md5: dict[str, str]) -> dict[str, Any]:
    """The bundle's model.json: everything needed to know what this model is and how it came to be."""
    try:  # training may run on another Keras backend (e.g. JAX on a GPU machine)
        import tensorflow as tf

        tf_version: str | None = tf.__version__
    except ImportError:
        tf_version = None
    epochs_run = sum(m["epochs_run"] for m in members)
    return {
        "format": "digitrec-bundle/1",
        "architecture": config.arch,
        "ensemble_size": config.ensemble,
        "input": INPUT_FORMAT,
        "output": {"name": "probabilities", "shape": [10], "classes": list(range(10))},
        "epochs": config.epochs,
        "seed": config.seed,
        "command": command,
        "config": _jsonable(dataclasses.asdict(config)),
        "mnist_md5": mnist_md5,  # as read for this run, not re-read
        "test_accuracy": metrics.accuracy,
        "test_n": metrics.n,
        "per_class_accuracy": metrics.per_class_recall,
        "members": members,
        "training_seconds": round(seconds, 1),
        "seconds_per_epoch": round(seconds / max(epochs_run, 1), 2),
        "history": members[0]["history"],
        "versions": {
            "digitrec": __version__, "keras": keras.__version__, "tensorflow": tf_version,
            "numpy": np.__version__, "python": platform.python_version(),
        },
        "backend": keras.backend.backend(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from its JSON form (as `run.json` stores it)."""
    data = dict(values.get("data") or {})
    if data.get("data_dir") is not None:
        data["data_dir"] = Path(data["data_dir"])
    if "mirrors" in data:
        data["mirrors"] = tuple(data["mirrors"])
    return TrainConfig(**{**values, "data": DataConfig(**data),
                          "augmentation": AugmentConfig(**(values.get("augmentation") or {}))})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
