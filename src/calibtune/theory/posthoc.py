"""What post-hoc recalibration achieves in-domain, measured honestly: cross-fitted.

The items are cut in two halves by a seeded permutation; a recaliber fitted on one half
transforms the other, and the reverse, so every item's recalibrated probabilities come from a
fit that never saw it. The ECE of these out-of-fold probabilities is what the recalibration
achieves on new items of the same distribution (not out of domain). The fitting itself is passed
in (`fit`): theory sits below the calibrators in the package's layers, and diagnose's workflow
passes `calibrators.TemperatureScaling`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..defaults import N_BINS
from ..metrics.binning import bin_edges, bin_statistics, calibration_error_from_table
from ..metrics.uncertainty import ece_noise_floor
from ..metrics.validation import top_label

#: fit(probs, labels, mask) → (transform(probs, mask) → probs, fitted parameters)
Fit = Callable[[np.ndarray, np.ndarray, np.ndarray],
               tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict]]


@dataclass(frozen=True)
class CrossFit:
    """ECE and accuracy of the same items before and after out-of-fold recalibration."""

    method: str
    seed: int
    n_halves: tuple[int, int]
    parameters: tuple[dict, dict]   # fitted on half 0, on half 1
    ece_before: float
    ece_after: float
    accuracy_before: float
    accuracy_after: float
    noise_q95_after: float          # noise-floor q95 of the recalibrated confidences

    def to_dict(self) -> dict:
        return asdict(self)


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index sets covering 0…n−1, sizes ⌈n/2⌉ and ⌊n/2⌋, fixed by `seed`."""
    order = np.random.default_rng(seed).permutation(n)
    cut = (n + 1) // 2
    return np.sort(order[:cut]), np.sort(order[cut:])


def _ece(p: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[float, float, np.ndarray]:
    conf, correct = top_label(p, y)
    table = bin_statistics(conf, correct, bin_edges(conf, n_bins, "uniform"))
    return calibration_error_from_table(table, "l1"), float(correct.mean()), conf


def cross_fit(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, fit: Fit, *,
              method: str = "temperature", n_bins: int = N_BINS, seed: int = 0,
              n_sim: int = 1000) -> CrossFit:
    """Fit on one half, apply to the other, and the reverse; ECE of the pooled result."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    m = np.asarray(mask, dtype=bool)
    a, b = halves(len(y), seed)
    out = np.zeros_like(p)
    params = []
    for fit_on, apply_to in ((a, b), (b, a)):
        transform, fitted = fit(p[fit_on], y[fit_on], m[fit_on])
        out[apply_to] = transform(p[apply_to], m[apply_to])
        params.append(fitted)
    e0, acc0, _ = _ece(p, y, n_bins)
    e1, acc1, conf1 = _ece(out, y, n_bins)
    q95 = ece_noise_floor(conf1, n_bins, n_sim=n_sim, seed=seed).q95
    return CrossFit(method=method, seed=seed, n_halves=(len(a), len(b)),
                    parameters=(params[0], params[1]), ece_before=e0, ece_after=e1,
                    accuracy_before=acc0, accuracy_after=acc1, noise_q95_after=q95)
