"""How much to trust a calibration figure: bootstrap intervals and the ECE noise floor."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..defaults import N_BINS, N_BOOT
from .binning import assign_bins, bin_edges
from .validation import MetricInputError


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    std: float
    alpha: float
    n_boot: int

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(metric: Callable[..., float], *arrays: np.ndarray, n_boot: int = N_BOOT,
                 alpha: float = 0.05, seed: int = 0, **kwargs) -> Interval:
    """Percentile bootstrap interval of `metric(*arrays, **kwargs)`, resampling items (rows).

    Every array is resampled with the same row indices, so `metric(probs, labels, mask=...)`
    works by passing the mask positionally or in `arrays`.
    """
    if not arrays:
        raise MetricInputError("bootstrap_ci needs at least one array")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise MetricInputError("all arrays given to bootstrap_ci must have the same number of rows")
    if not 0 < alpha < 1:
        raise MetricInputError(f"alpha must be in (0, 1), got {alpha}")
    estimate = float(metric(*arrays, **kwargs))
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        stats[b] = metric(*(a[idx] for a in arrays), **kwargs)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return Interval(estimate, float("nan"), float("nan"), float("nan"), alpha, n_boot)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return Interval(estimate, float(low), float(high), float(stats.std(ddof=1)) if stats.size > 1
                    else 0.0, alpha, n_boot)


@dataclass(frozen=True)
class NoiseFloor:
    """ECE that a perfectly calibrated model with these confidences shows on this many items."""

    mean: float
    std: float
    q05: float
    q95: float
    n_items: int
    n_sim: int

    def to_dict(self) -> dict:
        return asdict(self)


def ece_noise_floor(confidences: np.ndarray, n_bins: int = N_BINS, n_sim: int = 1000, seed: int = 0,
                    strategy: str = "uniform") -> NoiseFloor:
    """Simulate outcomes ~ Bernoulli(confidence) and measure the top-label ECE each time.

    Any ECE below `q95` is indistinguishable from perfect calibration on this many items.
    """
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    if conf.size == 0:
        raise MetricInputError("ece_noise_floor needs at least one confidence")
    if not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
        raise MetricInputError("confidences must be finite and in [0, 1]")
    n = conf.size
    edges = bin_edges(conf, n_bins, strategy)
    idx = assign_bins(conf, edges)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    rng = np.random.default_rng(seed)
    eces = np.empty(n_sim)
    chunk = max(1, int(2e7 // n))  # bound memory: chunk × n booleans at a time
    for start in range(0, n_sim, chunk):
        stop = min(n_sim, start + chunk)
        outcomes = rng.random((stop - start, n)) < conf  # Bernoulli(c_i)
        flat = (idx[None, :] + n_bins * np.arange(stop - start)[:, None]).ravel()
        sum_ok = np.bincount(flat, weights=outcomes.ravel(), minlength=n_bins * (stop - start))
        eces[start:stop] = np.abs(sum_ok.reshape(-1, n_bins) - sum_conf).sum(axis=1) / n
    return NoiseFloor(float(eces.mean()), float(eces.std(ddof=1)) if n_sim > 1 else 0.0,
                      float(np.quantile(eces, 0.05)), float(np.quantile(eces, 0.95)), n, n_sim)
