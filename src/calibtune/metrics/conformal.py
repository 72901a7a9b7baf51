"""Split-conformal prediction sets on the option distribution (LAC and APS).

Calibration says whether a confidence of 0.8 means 80 % right; a conformal set turns the same
probabilities into a set of options that holds the gold answer with probability ≥ 1 − α, on
any model, calibrated or not. What a miscalibrated model pays is set size, so mean set size
and coverage per set size are read next to ECE.

Method: a seeded share of the items calibrates a threshold q̂, the finite-sample quantile of
their conformity scores (the ⌈(n+1)(1 − α)⌉-th smallest of n); every other item gets the set
{j unmasked : s(x, j) ≤ q̂}. When ⌈(n+1)(1 − α)⌉ > n no finite threshold guarantees coverage:
q̂ = +inf and every set is the item's full option list (`full_sets=True`). Under
exchangeability the expected test coverage is ≥ 1 − α, and ≤ 1 − α + 1/(n+1) when scores have
no ties (LAC on continuous probabilities, randomised APS; not the non-randomised APS, which
scores an item's last-ranked option exactly 1 and so over-covers).

Scores: LAC (least ambiguous classifier) s = 1 − p_y. APS (adaptive prediction sets) s = the
mass of the options ranked above y plus p_y (`randomised=False`) or U·p_y with U ~ Uniform(0, 1)
drawn per item (`randomised=True`, the default: exact 1 − α coverage in expectation and smaller
sets; it can return empty sets). The non-randomised APS is deterministic and conservative.
Options are ranked by probability, ties by option index. Masked options are never in a set.

References: Sadinle, Lei & Wasserman, JASA 2019 (LAC); Romano, Sesia & Candès, NeurIPS 2020
(APS); Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction", 2021.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .validation import MetricInputError, check_inputs

CONFORMAL_METHODS = ("lac", "aps")


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) \
            or not 0 < float(alpha) < 1:
        raise MetricInputError(f"alpha must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def score_matrix(probs: np.ndarray, mask: np.ndarray, method: str = "lac", *,
                 randomised: bool = True, u: np.ndarray | None = None) -> np.ndarray:
    """Conformity score s(x_i, j) of every option j as if it were the label; +inf where masked.

    `u` [n] holds the APS uniforms (one per item, shared by its options); needed only for
    randomised APS. Reference: Sadinle et al. 2019 (LAC); Romano et al. 2020 (APS).
    """
    p = np.asarray(probs, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if method == "lac":
        s = 1.0 - p
    elif method == "aps":
        order = np.argsort(-np.where(m, p, -1.0), axis=1, kind="stable")  # masked options last
        sp = np.take_along_axis(p, order, axis=1)
        cum = np.cumsum(sp, axis=1)
        if randomised:
            if u is None or np.shape(u) != (p.shape[0],):
                raise MetricInputError("randomised APS needs one uniform per item (u of shape [n])")
            ss = cum - sp + np.asarray(u, dtype=np.float64)[:, None] * sp
        else:
            ss = cum
        s = np.empty_like(ss)
        np.put_along_axis(s, order, ss, axis=1)
    else:
        raise MetricInputError(f"method must be one of {CONFORMAL_METHODS}, got {method!r}")
    return np.where(m, s, np.inf)


def conformal_threshold(cal_scores: np.ndarray, alpha: float) -> float:
    """The ⌈(n+1)(1 − α)⌉-th smallest calibration score, or +inf when that rank exceeds n.

    Reference: Angelopoulos & Bates 2021 (finite-sample split-conformal quantile).
    """
    alpha = _check_alpha(alpha)
    s = np.sort(np.asarray(cal_scores, dtype=np.float64).ravel())
    n = s.size
    if n == 0:
        raise MetricInputError("conformal calibration needs at least one item")
    # exact rational arithmetic on α as written (0.1 is 1/10), so (n+1)(1-α) = 9 stays 9
    k = math.ceil((n + 1) * (1 - Fraction(repr(alpha))))
    return float("inf") if k > n else float(s[max(k, 1) - 1])


@dataclass
class ConformalResult:
    """Coverage and set sizes of split-conformal sets on the held-out (test) items.

    `coverage_by_size` maps set size → (items, coverage). `sets` [n_test, K] and `test_index`
    (rows of the input) are kept for plots but left out of `to_dict`.
    """

    method: str
    randomised: bool
    alpha: float
    n_cal: int
    n_test: int
    threshold: float
    full_sets: bool
    coverage: float
    mean_set_size: float
    empty_set_share: float
    coverage_by_size: dict[int, tuple[int, float]]
    seed: int
    cal_fraction: float
    test_index: np.ndarray = field(repr=False)
    sets: np.ndarray = field(repr=False)

    @property
    def coverage_upper_bound(self) -> float:
        """1 − α + 1/(n_cal + 1): the expected coverage bound when scores have no ties."""
        return 1 - self.alpha + 1 / (self.n_cal + 1)

    def to_dict(self) -> dict:
        return {"method": self.method, "randomised": self.randomised, "alpha": self.alpha,
                "target_coverage": 1 - self.alpha, "coverage_upper_bound": self.coverage_upper_bound,
                "n_cal": self.n_cal, "n_test": self.n_test,
                "threshold": None if self.full_sets else self.threshold,  # JSON has no inf
                "full_sets": self.full_sets, "coverage": self.coverage,
                "mean_set_size": self.mean_set_size, "empty_set_share": self.empty_set_share,
                "coverage_by_size": {str(k): {"n": n, "coverage": c}
                                     for k, (n, c) in sorted(self.coverage_by_size.items())},
                "seed": self.seed, "cal_fraction": self.cal_fraction}


def split_conformal(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
                    alpha: float = 0.1, method: str = "lac", randomised: bool = True,
                    cal_fraction: float = 0.5, seed: int = 0, from_logits: bool = False
                    ) -> ConformalResult:
    """Calibrate on a seeded `cal_fraction` of the items and report sets on the rest.

    `randomised` only affects APS (default True, see the module docstring). A threshold of
    +inf (too few calibration items for this α) gives full sets and says so in `full_sets`.
    Reference: Sadinle et al. 2019; Romano et al. 2020; Angelopoulos & Bates 2021.
    """
    alpha = _check_alpha(alpha)
    if method not in CONFORMAL_METHODS:
        raise MetricInputError(f"method must be one of {CONFORMAL_METHODS}, got {method!r}")
    if not 0 < cal_fraction < 1:
        raise MetricInputError(f"cal_fraction must be in (0, 1), got {cal_fraction!r}")
    p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
    n = len(y)
    if n < 2:
        raise MetricInputError(f"split conformal needs at least 2 items (calibration and test), "
                               f"got {n}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    u = rng.random(n)  # drawn always, so the split does not depend on the method
    n_cal = min(n - 1, max(1, int(round(cal_fraction * n))))
    cal, test = np.sort(perm[:n_cal]), np.sort(perm[n_cal:])
    s = score_matrix(p, m, method, randomised=randomised, u=u)
    q = conformal_threshold(s[cal, y[cal]], alpha)
    full = math.isinf(q)
    sets = m[test] if full else (s[test] <= q) & m[test]
    covered = sets[np.arange(len(test)), y[test]]
    size = sets.sum(axis=1)
    by_size = {int(k): (int(np.sum(size == k)), float(covered[size == k].mean()))
               for k in np.unique(size)}
    return ConformalResult(method=method, randomised=bool(randomised and method == "aps"),
                           alpha=alpha, n_cal=n_cal, n_test=len(test), threshold=q,
                           full_sets=full, coverage=float(covered.mean()),
                           mean_set_size=float(size.mean()),
                           empty_set_share=float(np.mean(size == 0)), coverage_by_size=by_size,
                           seed=seed, cal_fraction=cal_fraction, test_index=test, sets=sets)
