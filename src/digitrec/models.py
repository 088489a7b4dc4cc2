"""Model architectures: the seed's original CNN and our default, both Keras 3 functional models.

Every model takes `image`: (B, 28, 28, 1) float32 in [0, 1], white digit on black (MNIST format), and
returns `probabilities`: (B, 10) softmax. Augmentation is *not* part of these models: it wraps them only
while training (see `augment.py`), so the exported inference graph holds nothing random.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def make_seed_model() -> keras.Model:
    """The original system's CNN, layer for layer: 121,930 parameters, 99.07% after 5 epochs of Adam."""
    import keras
    from keras import layers

    image = keras.Input(INPUT_SHAPE, name="image")
    x = layers.Conv2D(32, 3, activation="relu")(image)  # (B, 26, 26, 32)
    x = layers.MaxPooling2D(2)(x)  # (B, 13, 13, 32)
    x = layers.Conv2D(64, 3, activation="relu")(x)  # (B, 11, 11, 64)
    x = layers.MaxPooling2D(2)(x)  # (B, 5, 5, 64)
    x = layers.Flatten()(x)  # (B, 1600)
    x = layers.Dense(64, activation="relu")(x)
    probabilities = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="seed")


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int, strides: int = 1,
             padding: str = "valid", momentum: float = 0.99) -> keras.KerasTensor:
    from keras import layers

    # No conv bias: batch norm's beta does the same job.
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=momentum)(x)
    return layers.ReLU()(x)


def make_bn_strided_cnn(width: int = 32, dropout: float = 0.4, classes: int = NUM_CLASSES) -> keras.Model:
    """Seven 3x3/5x5 convs with batch norm, strided 5x5 convs instead of pooling, dropout.

    The shape of the best-known simple single CNNs on MNIST (~99.7% with augmentation): downsampling by a
    learnt strided conv keeps more of the stroke geometry than max-pooling, and batch norm lets a high
    one-cycle learning rate converge in few epochs, which is what makes it cheap on a CPU.
    `classes=11` adds "not a digit" as an eleventh class (the bundled model, see `trust_scratch`).
    """
    import keras
    from keras import layers

    image = keras.Input(INPUT_SHAPE, name="image")
    x = _conv_bn(image, width, 3)  # (B, 26, 26, w)
    x = _conv_bn(x, width, 3)  # (B, 24, 24, w)
    x = _conv_bn(x, width, 5, strides=2, padding="same")  # (B, 12, 12, w)
    x = layers.Dropout(dropout)(x)
    x = _conv_bn(x, 2 * width, 3)  # (B, 10, 10, 2w)
    x = _conv_bn(x, 2 * width, 3)  # (B, 8, 8, 2w)
    x = _conv_bn(x, 2 * width, 5, strides=2, padding="same")  # (B, 4, 4, 2w)
    x = layers.Dropout(dropout)(x)
    x = _conv_bn(x, 4 * width, 4)  # (B, 1, 1, 4w)
    x = layers.Flatten()(x)  # (B, 4w)
    x = layers.Dropout(dropout)(x)
    probabilities = layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="bn_strided_cnn")


def make_bn_strided_cnn_fast(width: int = 16, dropout: float = 0.2) -> keras.Model:
    """Five 3x3 convs with batch norm, striding early: built for CPU seconds, not the last 0.2%.

    72,666 parameters, ~2.1M multiply-adds per image (the default has ~15M, the seed ~2.5M): one conv at
    full resolution with few channels, then a strided conv, so the wide layers run on 12x12 and 4x4 maps.
    Batch norm lets a short one-cycle schedule reach 99.0% in ~3 epochs, 99.4% in 6 (benchmarks/train_speed.py). Its
    moving statistics use momentum 0.9, not Keras's 0.99: at 0.99 they lag the fast-moving weights of a
    short run by hundreds of steps, and inference-mode accuracy measured mid-epoch fell to ~13%.
    """
    import keras
    from keras import layers

    image = keras.Input(INPUT_SHAPE, name="image")
    x = _conv_bn(image, width, 3, momentum=0.9)  # (B, 26, 26, w)
    x = _conv_bn(x, 2 * width, 3, strides=2, momentum=0.9)  # (B, 12, 12, 2w)
    x = _conv_bn(x, 2 * width, 3, momentum=0.9)  # (B, 10, 10, 2w)
    x = _conv_bn(x, 4 * width, 3, strides=2, momentum=0.9)  # (B, 4, 4, 4w)
    x = _conv_bn(x, 4 * width, 3, momentum=0.9)  # (B, 2, 2, 4w)
    x = layers.Flatten()(x)  # (B, 16w)
    x = layers.Dropout(dropout)(x)
    probabilities = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="bn_strided_cnn_fast")


def make_s2d_cnn_fast(width: int = 32, dense: int = 128, dropout: float = 0.2) -> keras.Model:
    """Space-to-depth, two convs with batch norm and max-pooling, a dense layer: `--recipe fast`'s network.

    Built for CPU seconds per image seen, since every recipe tried needed ~70-80k images (1.25-1.5
    epochs) to reach 99.0% on validation whatever its size. Each 2x2 block of pixels becomes 4 channels
    of one pixel of a 14x14 map (the same information, a quarter of the positions), so no conv runs at
    28x28 or 26x26, where bn-strided-cnn-fast spent most of its time; pooling then halves 14 -> 7 -> 3.
    95,498 parameters, ~1.2M multiply-adds per image. Momentum 0.9 as in bn-strided-cnn-fast.
    """
    import keras
    from keras import layers

    image = keras.Input(INPUT_SHAPE, name="image")
    x = layers.Reshape((14, 2, 14, 2))(image)  # (B, row, row parity, column, column parity)
    x = layers.Permute((1, 3, 2, 4))(x)
    x = layers.Reshape((14, 14, 4))(x)  # (B, 14, 14, 4)
    x = _conv_bn(x, width, 3, padding="same", momentum=0.9)  # (B, 14, 14, w)
    x = layers.MaxPooling2D(2)(x)  # (B, 7, 7, w)
    x = _conv_bn(x, 2 * width, 3, padding="same", momentum=0.9)  # (B, 7, 7, 2w)
    x = layers.MaxPooling2D(2)(x)  # (B, 3, 3, 2w)
    x = layers.Flatten()(x)  # (B, 18w)
    x = layers.Dense(dense, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dropout)(x)
    probabilities = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="s2d_cnn_fast")


# Name -> builder. The name is what `--arch` takes and what model.json records.
ARCHITECTURES: dict[str, Callable[[], keras.Model]] = {
    "seed": make_seed_model,
    "bn-strided-cnn": make_bn_strided_cnn,
    "bn-strided-cnn-small": lambda: make_bn_strided_cnn(width=16, dropout=0.25),
    "bn-strided-cnn-fast": make_bn_strided_cnn_fast,
    "s2d-cnn-fast": make_s2d_cnn_fast,
}
DEFAULT_ARCH = "bn-strided-cnn"


def make_model(arch: str) -> keras.Model:
    """Build an untrained model of the named architecture."""
    try:
        builder = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}") from None
    return builder()


def average_ensemble(members: list[keras.Model]) -> keras.Model:
    """One model whose output is the mean of the members' probabilities (one graph, one export)."""
    import keras
    from keras import layers

    image = keras.Input(INPUT_SHAPE, name="image")
    # Members share an architecture, hence a name, and one graph needs unique names: rewrap each.
    renamed = [keras.Model(member.input, member.output, name=f"member_{index}")
               for index, member in enumerate(members)]
    outputs = [member(image) for member in renamed]
    probabilities = layers.Average(name="probabilities")(outputs)
    return keras.Model(image, probabilities, name=f"ensemble_of_{len(members)}")
