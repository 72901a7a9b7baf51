"""A calibration error with reduced bias, and an interval for the population error itself.

The plug-in ECE is biased upwards: even a perfectly calibrated model shows a positive binned
error on finitely many items, and a percentile bootstrap of it is centred on the estimator's
expected value at this n (bias included), not on the model's calibration error.

Here, following Kumar, Liang & Ma ("Verified Uncertainty Calibration", NeurIPS 2019,
https://arxiv.org/abs/1909.10155), the *squared* binned ℓ2 error

    S = Σ_b P(C ∈ B_b) · (E[Y − C | C ∈ B_b])²

is estimated without the noise term: Ŝ = Σ_b (n_b/n)·[(ȳ_b − c̄_b)² − ȳ_b(1 − ȳ_b)/(n_b − 1)]
(bins with fewer than two items contribute 0). Ŝ can be negative; its sampling distribution is
centred near S, so an interval for S built around Ŝ stays honest down to S = 0, where the
plug-in's is not. The interval maps to the ℓ2 error by √max(0, ·). For the ℓ1 binned ECE we give a
bracket (calibtune's construction, not Kumar et al.'s) from |E[Y − C]| ≤ ECE_binned ≤ ℓ2 binned
error (triangle inequality, Jensen), each side allowed α/2: the upper side is the ℓ2 interval's
upper end, the lower side |d̄| − z_{1−α/4}·se on d = correct − conf. The lower side needs the
1 − α/4 quantile because |d̄| exceeds |μ| + z·se when d̄ − μ > z·se *or* μ − d̄ > z·se: two tails,
each (asymptotically) 1 − Φ(z), so z_{1−α/4} keeps it at α/2 (reached at μ = 0), and with the
upper side's α/2 the union bound gives coverage ≥ 1 − α. With z_{1−α/2} the lower side alone
misses with probability up to α, and the bracket is only guaranteed 1 − 1.5α.
Coverage of the population errors is measured by simulation in experiments/ece_coverage.py.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm as _normal

from ..defaults import N_BINS, N_BOOT
from .binning import assign_bins, bin_edges
from .validation import MetricInputError, check_inputs, top_label


def squared_ce_from_sums(count: np.ndarray, sum_y: np.ndarray, sum_c: np.ndarray, n: int
                         ) -> np.ndarray:
    """Ŝ from per-bin counts and sums (last axis = bins; leading axes are batches)."""
    count = np.asarray(count, dtype=np.float64)
    ok = count >= 2
    safe = np.where(ok, count, 2.0)
    ybar, cbar = sum_y / safe, sum_c / safe
    term = (ybar - cbar) ** 2 - ybar * (1.0 - ybar) / (safe - 1.0)
    return np.sum(np.where(ok, count / n * term, 0.0), axis=-1)


def _sums(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.bincount(idx, minlength=n_bins).astype(np.float64),
            np.bincount(idx, weights=correct, minlength=n_bins),
            np.bincount(idx, weights=conf, minlength=n_bins))


def resampled_sums(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int,
                   n_boot: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin count, Σ correct and Σ confidence for `n_boot` item resamples: arrays [n_boot, M]."""
    n = len(conf)
    out = [np.empty((n_boot, n_bins)) for _ in range(3)]
    chunk = max(1, int(2e6 // n))  # bound memory: chunk × n indices at a time
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        pick = rng.integers(0, n, size=(stop - start, n))
        flat = (idx[pick] + n_bins * np.arange(stop - start)[:, None]).ravel()
        size = n_bins * (stop - start)
        out[0][start:stop] = np.bincount(flat, minlength=size).reshape(-1, n_bins)
        out[1][start:stop] = np.bincount(flat, weights=correct[pick].ravel(),
                                         minlength=size).reshape(-1, n_bins)
        out[2][start:stop] = np.bincount(flat, weights=conf[pick].ravel(),
                                         minlength=size).reshape(-1, n_bins)
    return out[0], out[1], out[2]


def debiased_squared_ce(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """Ŝ on top-label confidences and 0/1 correctness, equal-width bins [k/M, (k+1)/M)."""
    conf, correct = _check_pair(conf, correct)
    idx = assign_bins(conf, bin_edges(None, n_bins, "uniform"))
    return float(squared_ce_from_sums(*_sums(conf, correct, idx, n_bins), len(conf)))


def debiased_rms_ce(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS,
                    mask: np.ndarray | None = None, *, from_logits: bool = False) -> float:
    """Top-label binned ℓ2 calibration error with the noise term removed: √max(0, Ŝ)."""
    p, y, _ = check_inputs(probs, labels, mask, from_logits=from_logits)
    conf, correct = top_label(p, y)
    return float(np.sqrt(max(0.0, debiased_squared_ce(conf, correct, n_bins))))


@dataclass(frozen=True)
class DebiasedCE:
    """Debiased binned ℓ2 error with an interval for the population binned error.

    `squared` is Ŝ (may be negative), `squared_std` its standard deviation over item resamples;
    `estimate` = √max(0, Ŝ). [`low`, `high`] is a 1 − α interval for the population binned ℓ2
    error; [`ece_low`, `ece_high`] brackets the population binned ℓ1 ECE with coverage ≥ 1 − α
    (asymptotically, by the union bound): each side may miss with probability at most α/2, the
    lower side through z at 1 − α/4 (it is a bound on |mean|, which has two tails).
    """

    estimate: float
    squared: float
    squared_std: float
    low: float
    high: float
    ece_low: float
    ece_high: float
    alpha: float
    n_boot: int
    n_bins: int

    def to_dict(self) -> dict:
        return asdict(self)


def debiased_ce_interval(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS, *,
                         n_boot: int = N_BOOT, alpha: float = 0.05, seed: int = 0) -> DebiasedCE:
    """Ŝ with an interval centred on it: Ŝ ± z·sd, sd the bootstrap standard deviation of Ŝ.

    Centred on Ŝ, not on the bootstrap's quantiles: the resamples' own binned error is the
    plug-in one, larger than S, so a percentile interval of Ŝ over resamples is shifted up by the
    noise term again. The interval for S maps to the ℓ2 error by √max(0, ·). The ℓ1 bracket's
    lower side is a normal lower bound on |mean(correct − conf)|, |d̄| − z_{1−α/4}·se (α/2 in
    all, split over d̄'s two tails), its upper side the ℓ2 interval's upper end (the ℓ1 binned
    error never exceeds the ℓ2 one), a one-sided α/2 bound.
    """
    conf, correct = _check_pair(conf, correct)
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise MetricInputError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not 0 < alpha < 1:
        raise MetricInputError(f"alpha must be in (0, 1), got {alpha}")
    idx = assign_bins(conf, bin_edges(None, n_bins, "uniform"))
    sums = _sums(conf, correct, idx, n_bins)
    boot = resampled_sums(conf, correct, idx, n_bins, n_boot, np.random.default_rng(seed))
    return interval_from_sums(sums, boot, conf, correct, alpha)


def interval_from_sums(sums: tuple, boot: tuple, conf: np.ndarray, correct: np.ndarray,
                       alpha: float = 0.05) -> DebiasedCE:
    """`debiased_ce_interval` from per-bin sums of the data and of its resamples ([B, M] each)."""
    n, n_bins, n_boot = len(conf), len(sums[0]), len(boot[0])
    z = float(_normal.ppf(1 - alpha / 2))  # S ± z·sd; its upper end misses with prob. α/2
    z_abs = float(_normal.ppf(1 - alpha / 4))  # |d̄| − z_abs·se > |μ|: two tails of α/4 each
    s_hat = float(squared_ce_from_sums(*sums, n))
    sd = float(np.std(squared_ce_from_sums(*boot, n), ddof=1))
    d = correct - conf
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    ece_low = max(0.0, abs(float(d.mean())) - z_abs * se)
    root = lambda v: float(np.sqrt(max(0.0, v)))  # noqa: E731
    high = root(s_hat + z * sd)
    return DebiasedCE(root(s_hat), s_hat, sd, root(s_hat - z * sd), high, min(ece_low, high),
                      high, alpha, int(n_boot), int(n_bins))


def _check_pair(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(conf, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if conf.size == 0:
        raise MetricInputError("no items: the debiased calibration error needs at least one")
    if conf.shape != correct.shape:
        raise MetricInputError(f"confidences ({conf.size}) and outcomes ({correct.size}) differ "
                               "in length")
    if not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
        raise MetricInputError("confidences must be finite and in [0, 1]")
    if not np.all((correct == 0) | (correct == 1)):
        raise MetricInputError("outcomes must be 0 or 1 (correct or not)")
    return conf, correct
