"""Calibration math: temperature scaling, expected calibration error, risk-coverage."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec.calibration import (
    apply_temperature,
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    risk_coverage,
)


def overconfident(n: int = 4000, classes: int = 11, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs whose logits are 3x too sharp: right ~80% of the time, claiming ~99%."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), labels] += 2.0
    # For unit Gaussian noise around a shift of 2 on the true class, softmax(2 z) is the exact posterior:
    # calibrated. Three times sharper is overconfident, and T = 3 undoes it.
    sharp = 3.0 * 2.0 * logits
    probabilities = np.exp(sharp - sharp.max(1, keepdims=True))
    return probabilities / probabilities.sum(1, keepdims=True), labels


def test_temperature_fitting_reduces_nll_and_ece_on_an_overconfident_set() -> None:
    probabilities, labels = overconfident()
    temperature = fit_temperature(probabilities, labels)
    assert temperature == pytest.approx(3.0, rel=0.15)  # it undoes the sharpening
    calibrated = apply_temperature(probabilities, temperature)
    assert negative_log_likelihood(calibrated, labels) < 0.8 * negative_log_likelihood(probabilities, labels)
    before = expected_calibration_error(probabilities.max(1), probabilities.argmax(1) == labels)
    after = expected_calibration_error(calibrated.max(1), calibrated.argmax(1) == labels)
    assert after < 0.3 * before and after < 0.03
    # Temperature changes no prediction.
    assert (calibrated.argmax(1) == probabilities.argmax(1)).all()
    np.testing.assert_allclose(calibrated.sum(1), 1.0, atol=1e-5)


def test_temperature_one_is_the_identity_and_ece_of_a_perfect_scorer_is_zero() -> None:
    probabilities, _ = overconfident(100)
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities, atol=1e-6)
    assert expected_calibration_error(np.ones(50), np.ones(50, bool)) == 0.0
    assert expected_calibration_error(np.full(50, 0.9), np.zeros(50, bool)) == pytest.approx(0.9)


def test_risk_coverage_counts_answered_and_wrong() -> None:
    confidence = np.array([0.1, 0.2, 0.6, 0.8, 0.95, 0.99])
    correct = np.array([False, False, True, False, True, True])
    curve = risk_coverage(confidence, correct, thresholds=np.array([0.0, 0.5, 0.9]))
    np.testing.assert_allclose(curve.coverage, [1.0, 4 / 6, 2 / 6])
    np.testing.assert_allclose(curve.risk, [3 / 6, 1 / 4, 0.0])
    assert curve.at(0.5) == (pytest.approx(4 / 6), pytest.approx(0.25))
    # The lowest threshold with no errors among the answered, answering at least a third.
    assert choose_threshold(curve, max_risk=0.0, min_coverage=0.3) == 0.9
    # No threshold meets the risk at 60% coverage: the least risky one that still answers 60%.
    assert choose_threshold(curve, max_risk=0.0, min_coverage=0.6) == 0.5
