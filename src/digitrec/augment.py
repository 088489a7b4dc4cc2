"""In-graph training augmentation: the variation real handwriting has and MNIST lacks.

Real users' digits are tilted, sheared (slanted), a little off-size and off-centre, and written with
thinner or thicker pens than MNIST's. One random affine warp per image (rotation, scale, shear, shift in
one resampling, cheaper than four layers) and a random stroke-width change put those inputs in
distribution. Layers are active only in training; `wrap_for_training` puts them in front of a model.
A training-only module: it imports Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
from keras import ops


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random changes; each is drawn uniformly in [-x, x] per image."""

    rotation_deg: float = 12.0  # MNIST digits are deslanted; people's are not
    scale: float = 0.12  # relative size change
    shear: float = 0.25  # horizontal shear factor (italic handwriting)
    shift_px: float = 2.5  # translation in pixels (our preprocessing centres by mass, so small)
    stroke_probability: float = 0.3  # share of images whose strokes get thinner or thicker


@keras.saving.register_keras_serializable(package="digitrec")
class RandomAffine(keras.layers.Layer):
    """Rotate, scale, shear and shift each image by a random affine map (training only)."""

    def __init__(self, rotation_deg: float, scale: float, shear: float, shift_px: float,
                 seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rotation = math.radians(rotation_deg)
        self.scale, self.shear, self.shift = scale, shear, shift_px
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.config = {"rotation_deg": rotation_deg, "scale": scale, "shear": shear,
                       "shift_px": shift_px, "seed": seed}

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training:
            return images
        batch = ops.shape(images)[0]

        def uniform(limit: float) -> Any:
            return keras.random.uniform((batch,), -limit, limit, seed=self.seed_generator)

        angle, shear = uniform(self.rotation), uniform(self.shear)
        zoom = 1.0 + uniform(self.scale)
        dx, dy = uniform(self.shift), uniform(self.shift)
        # Output pixel p samples the input at A (p - c) + c + shift, with A = R(angle) Shear(shear) / zoom.
        cos, sin = ops.cos(angle) / zoom, ops.sin(angle) / zoom
        a0, a1 = cos, cos * shear - sin
        b0, b1 = sin, sin * shear + cos
        centre = 13.5
        a2 = centre - a0 * centre - a1 * centre + dx
        b2 = centre - b0 * centre - b1 * centre + dy
        zeros = ops.zeros_like(a0)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)  # (B, 8)
        return ops.image.affine_transform(images, transform, interpolation="bilinear",
                                          fill_mode="constant", fill_value=0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.config}


@keras.saving.register_keras_serializable(package="digitrec")
class RandomStrokeWidth(keras.layers.Layer):
    """Thicken (grey dilation) or thin (grey erosion) the strokes of a random share of images."""

    def __init__(self, probability: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.probability = probability
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training:
            return images
        batch = ops.shape(images)[0]
        # 2x2 grey morphology changes the width by about one pixel, as MNIST's writers' pens differ.
        thick = ops.max_pool(images, 2, strides=1, padding="same")
        thin = -ops.max_pool(-images, 2, strides=1, padding="same")
        choice = keras.random.uniform((batch, 1, 1, 1), 0.0, 1.0, seed=self.seed_generator)
        half = self.probability / 2
        return ops.where(choice < half, thick, ops.where(choice < self.probability, thin, images))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "probability": self.probability, "seed": self.seed}


def wrap_for_training(model: keras.Model, config: AugmentConfig, seed: int) -> keras.Model:
    """`model` behind the augmentation layers; shares its weights, so training it trains `model`."""
    image = keras.Input(model.input_shape[1:], name="image")
    x = RandomStrokeWidth(config.stroke_probability, seed=seed, name="random_stroke_width")(image)
    x = RandomAffine(config.rotation_deg, config.scale, config.shear, config.shift_px, seed=seed + 1,
                      name="random_affine")(x)
    return keras.Model(image, model(x), name=f"{model.name}_augmented")
