"""Per-group (per-subject) calibration table: where a model is miscalibrated, and how surely.

A pooled ECE can hide subjects that are far off in opposite directions. Per-subject ECE on a
few dozen items is mostly noise, though: a perfectly calibrated model shows an ECE of 0.1 or
more on 30 items. So each row carries a bootstrap interval and the group's noise floor (the ECE
a perfectly calibrated model with the same confidences would show on that many items), and is
flagged when its ECE cannot be told from noise.

Flags: `too_small` when n < `min_items` (default 30, i.e. three items per bin with 10 bins:
below that most bins hold one or two items and the ECE is dominated by binning noise);
`within_noise` when the ECE is at or below the noise floor's 95th percentile.
Rows are sorted worst-calibrated (highest ECE) first among the unflagged groups, then the
flagged ones, also highest ECE first (`flagged_last=False` sorts all rows by ECE alone).

Reference: Guo et al., ICML 2017 (ECE); Efron & Tibshirani 1993 (bootstrap); the noise floor
follows Bröcker & Smith, "Increasing the reliability of reliability diagrams", 2007
(consistency resampling).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..defaults import N_BINS, N_BOOT
from .binning import bin_edges, bin_statistics, calibration_error_from_table
from .uncertainty import bootstrap_ci, ece_noise_floor
from .validation import MetricInputError, check_inputs, top_label

MIN_GROUP_ITEMS = 30


@dataclass(frozen=True)
class GroupRow:
    """One group's accuracy, confidence, ECE with interval, noise floor and flags."""

    group: str
    n: int
    accuracy: float
    mean_confidence: float
    ece: float
    ece_low: float
    ece_high: float
    noise_floor_mean: float
    noise_floor_q95: float
    too_small: bool
    within_noise: bool

    @property
    def flagged(self) -> bool:
        return self.too_small or self.within_noise

    @property
    def flag(self) -> str:
        """Why the ECE should not be read as a finding ('' when it can)."""
        reasons = (["too few items"] if self.too_small else []) + \
            (["ECE within noise floor"] if self.within_noise else [])
        return "; ".join(reasons)

    def to_dict(self) -> dict:
        return asdict(self) | {"flagged": self.flagged, "flag": self.flag}


@dataclass(frozen=True)
class GroupTable:
    """Rows (sorted, see the module docstring) plus the settings that produced them."""

    rows: list[GroupRow]
    n_bins: int
    n_boot: int
    alpha: float
    min_items: int
    seed: int

    def to_dict(self) -> dict:
        return {"rows": [r.to_dict() for r in self.rows], "n_bins": self.n_bins,
                "n_boot": self.n_boot, "alpha": self.alpha, "min_items": self.min_items,
                "seed": self.seed}


def _ece_conf(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    table = bin_statistics(conf, correct, bin_edges(None, n_bins, "uniform"))
    return calibration_error_from_table(table, "l1")


def group_table(probs: np.ndarray, labels: np.ndarray, groups, mask: np.ndarray | None = None, *,
                n_bins: int = N_BINS, n_boot: int = N_BOOT, alpha: float = 0.05, seed: int = 0,
                min_items: int = MIN_GROUP_ITEMS, n_sim: int = 1000, flagged_last: bool = True,
                from_logits: bool = False) -> GroupTable:
    """One row per distinct value of `groups` [n] (e.g. subjects): top-label figures per group.

    ECE is the equal-width top-label ECE (as `ece`); its interval is `bootstrap_ci` over the
    group's items and the noise floor is `ece_noise_floor` of the group's confidences.
    Reference: Guo et al. 2017; Bröcker & Smith 2007.
    """
    p, y, _ = check_inputs(probs, labels, mask, from_logits=from_logits)
    g = np.asarray(groups).astype(str)
    if g.shape != y.shape:
        raise MetricInputError(f"groups must have shape {y.shape} to match the items, got {g.shape}")
    conf, correct = top_label(p, y)
    rows = []
    for name in np.unique(g):
        sel = g == name
        c, ok = conf[sel], correct[sel]
        ci = bootstrap_ci(_ece_conf, c, ok, n_boot=n_boot, alpha=alpha, seed=seed, n_bins=n_bins)
        floor = ece_noise_floor(c, n_bins, n_sim=n_sim, seed=seed)
        rows.append(GroupRow(group=str(name), n=int(sel.sum()), accuracy=float(ok.mean()),
                             mean_confidence=float(c.mean()), ece=ci.estimate, ece_low=ci.low,
                             ece_high=ci.high, noise_floor_mean=floor.mean,
                             noise_floor_q95=floor.q95, too_small=bool(sel.sum() < min_items),
                             within_noise=bool(ci.estimate <= floor.q95)))
    rows.sort(key=lambda r: ((r.flagged if flagged_last else False), -r.ece, r.group))
    return GroupTable(rows=rows, n_bins=n_bins, n_boot=n_boot, alpha=alpha, min_items=min_items,
                      seed=seed)


def groups_from_ids(ids, sep: str = "/") -> np.ndarray:
    """The part of each id before the first `sep` (e.g. the task of lm-eval ids "task/doc_id")."""
    return np.array([str(i).split(sep, 1)[0] for i in np.asarray(ids).ravel()])
