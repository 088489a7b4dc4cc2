"""Model architectures: shapes, softmax outputs, parameter counts."""

from __future__ import annotations

import numpy as np

from digitrec.models import ARCHITECTURES, make_model


def built_classifier(name: str, parameters: int):
    """`make_model(name)` after checking it: (B, 28, 28, 1) -> (B, 10) softmax, `parameters` parameters,
    input "image", output "probabilities"; returns (model, the 3 random images it was checked on)."""
    assert name in ARCHITECTURES
    model = make_model(name)
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    probabilities = np.asarray(model(images, training=False))
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert model.count_params() == parameters
    assert model.input.name == "image" and model.layers[-1].name == "probabilities"
    return model, images


def test_bn_strided_cnn_fast_outputs_probabilities() -> None:
    """bn-strided-cnn-fast: (B, 28, 28, 1) -> (B, 10) softmax, 72,666 parameters (~2.1M MACs per image)."""
    built_classifier("bn-strided-cnn-fast", 72_666)


def test_s2d_cnn_fast_outputs_probabilities_and_sees_every_pixel() -> None:
    """s2d-cnn-fast: (B, 28, 28, 1) -> (B, 10) softmax, 95,498 parameters; its space-to-depth keeps all 784
    pixels (a changed pixel anywhere changes the output) and puts each 2x2 block in one position's channels."""
    import keras

    model, images = built_classifier("s2d-cnn-fast", 95_498)
    to_depth = keras.Model(model.input, model.layers[3].output)  # image -> the (14, 14, 4) map
    blocks = np.asarray(to_depth(images))
    assert blocks.shape == (3, 14, 14, 4)
    expected = images[:, :, :, 0].reshape(3, 14, 2, 14, 2).transpose(0, 1, 3, 2, 4).reshape(3, 14, 14, 4)
    np.testing.assert_array_equal(blocks, expected)
    assert blocks[0, 5, 6].tolist() == [images[0, 10, 12, 0], images[0, 10, 13, 0], images[0, 11, 12, 0],
                                        images[0, 11, 13, 0]]
