"""Model architectures: shapes, softmax outputs, parameter counts."""

from __future__ import annotations

import numpy as np

from digitrec.models import ARCHITECTURES, make_model


def test_bn_strided_cnn_fast_outputs_probabilities() -> None:
    """bn-strided-cnn-fast: (B, 28, 28, 1) -> (B, 10) softmax, 72,666 parameters (~2.1M MACs per image)."""
    assert "bn-strided-cnn-fast" in ARCHITECTURES
    model = make_model("bn-strided-cnn-fast")
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    probabilities = np.asarray(model(images, training=False))
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert model.count_params() == 72_666
    assert model.input.name == "image" and model.layers[-1].name == "probabilities"
