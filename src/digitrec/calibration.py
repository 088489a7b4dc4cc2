"""Confidence that means what it says: temperature scaling, calibration error, risk-coverage.

A network trained to near-zero loss is overconfident: its 0.99 is right less than 99% of the time on
inputs unlike its training set. Temperature scaling (Guo et al., 2017) divides the logits by one
number T fitted to minimise the negative log-likelihood on held-out data; it changes no prediction, only
how sure each one claims to be. The logits are recovered from the softmax output as log p (softmax is
shift-invariant), so an exported model needs no change: the runtime applies T to what it returns.

Pure numpy; no Keras.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPSILON = 1e-12


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) softmax outputs -> (N, C) softmax(log p / T) (float32, rows summing to 1)."""
    probabilities = np.asarray(probabilities, np.float64)
    if temperature == 1.0:
        return probabilities.astype(np.float32)
    logits = np.log(np.maximum(probabilities, EPSILON)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class) of (N, C) probabilities against (N,) integer labels."""
    chosen = np.asarray(probabilities, np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.maximum(chosen, EPSILON))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The T in [low, high] minimising the NLL of softmax(log p / T) on held-out (N, C) probabilities.

    The NLL is convex in 1/T, so a coarse grid then a golden-section search on log T finds the minimum.
    """
    def loss(log_t: float) -> float:
        return negative_log_likelihood(apply_temperature(probabilities, float(np.exp(log_t))), labels)

    grid = np.linspace(np.log(low), np.log(high), 41)
    best = int(np.argmin([loss(g) for g in grid]))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if loss(c) < loss(d):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2))


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: |accuracy - mean confidence| averaged over equal-width confidence bins, weighted by bin size."""
    confidences = np.asarray(confidences, np.float64)
    correct = np.asarray(correct, bool)
    if confidences.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidences, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for bin_ in range(bins):
        members = index == bin_
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidences[members].mean())
    return float(error)


@dataclass(frozen=True)
class RiskCoverage:
    """Answer only when confidence >= threshold: how many are answered, and how many of those are wrong."""

    thresholds: np.ndarray  # (K,) ascending
    coverage: np.ndarray  # (K,) share of inputs answered
    risk: np.ndarray  # (K,) error rate among the answered (0 where none are)

    def at(self, threshold: float) -> tuple[float, float]:
        """(coverage, risk) at the first tabulated threshold >= `threshold`."""
        index = min(int(np.searchsorted(self.thresholds, threshold)), len(self.thresholds) - 1)
        return float(self.coverage[index]), float(self.risk[index])


def risk_coverage(confidences: np.ndarray, correct: np.ndarray,
                  thresholds: np.ndarray | None = None) -> RiskCoverage:
    """The risk-coverage curve of a confidence score over `thresholds` (default: 0 to 0.999, 1000 steps)."""
    confidences = np.asarray(confidences, np.float64)
    correct = np.asarray(correct, bool)
    thresholds = np.linspace(0.0, 0.999, 1000) if thresholds is None else np.sort(np.asarray(thresholds, np.float64))
    order = np.argsort(confidences)
    sorted_conf, sorted_wrong = confidences[order], ~correct[order]
    # Answered at threshold t: the confidences >= t, a suffix of the sorted order.
    starts = np.searchsorted(sorted_conf, thresholds, side="left")
    wrong_suffix = np.concatenate([np.cumsum(sorted_wrong[::-1])[::-1], [0]])
    answered = len(confidences) - starts
    coverage = answered / max(len(confidences), 1)
    risk = np.where(answered > 0, wrong_suffix[starts] / np.maximum(answered, 1), 0.0)
    return RiskCoverage(thresholds, coverage, risk)


def choose_threshold(curve: RiskCoverage, max_risk: float, min_coverage: float) -> float:
    """The lowest threshold whose risk is at most `max_risk` (most coverage for that risk); when none
    reaches it at `min_coverage` or more, the threshold with the least risk at `min_coverage`."""
    meets = (curve.risk <= max_risk) & (curve.coverage >= min_coverage)
    if meets.any():
        return float(curve.thresholds[np.argmax(meets)])
    allowed = np.flatnonzero(curve.coverage >= min_coverage)
    if allowed.size == 0:
        return float(curve.thresholds[0])
    return float(curve.thresholds[allowed[np.argmin(curve.risk[allowed])]])
