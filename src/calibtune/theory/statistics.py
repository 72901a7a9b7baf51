"""The measured numbers a diagnosis reads: accuracy, ECE and cw-ECE with bootstrap intervals, the
noise floor and its bounds, the over/under split, the mean gap's z and the collapse measures.

Numbers only; which bound they satisfy is `checks`, what they mean is `rules`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import partial

import numpy as np

from ..metrics.binning import bin_edges, bin_statistics, calibration_error_from_table
from ..metrics.calibration import classwise_ece
from ..metrics.collapse import CollapseMeasures, collapse_normalised
from ..metrics.uncertainty import Interval, NoiseFloor, bootstrap_ci, ece_noise_floor
from ..metrics.validation import check_inputs, normalised, top_label
from . import bounds as B
from .training_run import TrainingRun

Z_DIRECTION = 1.96            # |z| of the mean gap above which the direction is called
INTERVAL_KIND = ("percentile bootstrap over items: an interval of the binned estimator at this n, "
                 "not of the true calibration error (the binned ECE is biased upwards at finite n, "
                 "docs/theory.md §1)")


@dataclass(frozen=True)
class Measured:
    """The numbers of one score set that a diagnosis reports (and `Diagnosis` inherits)."""

    n: int
    n_options: int
    n_bins: int
    accuracy: Interval
    mean_confidence: float
    mean_gap: float
    mean_gap_z: float
    direction: str
    ece: Interval
    cw_ece: Interval
    over: float
    under: float
    noise: NoiseFloor
    noise_bounds: B.NoiseBounds
    collapse: CollapseMeasures

    def measured(self) -> dict:
        """The reported numbers only, as keyword arguments (for `Diagnosis`)."""
        return {f.name: getattr(self, f.name) for f in fields(Measured)}


@dataclass(frozen=True)
class Statistics(Measured):
    """`Measured`, with the renormalised rows and per-item arrays that checks and rules read."""

    p: np.ndarray = field(repr=False, compare=False)
    y: np.ndarray = field(repr=False, compare=False)
    m: np.ndarray = field(repr=False, compare=False)
    conf: np.ndarray = field(repr=False, compare=False)
    correct: np.ndarray = field(repr=False, compare=False)

    @property
    def k_i(self) -> np.ndarray:
        """Each item's number of options."""
        return self.m.sum(axis=1)


def measure(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
            n_bins: int, n_boot: int, n_sim: int, seed: int, from_logits: bool = False
            ) -> Statistics:
    """Check and renormalise the rows (see `metrics.validation.normalised`), then measure them."""
    p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
    p = normalised(p, m)
    conf, correct = top_label(p, y)
    acc, mconf = float(correct.mean()), float(conf.mean())
    acc_ci = bootstrap_ci(lambda a, b: float(np.mean(a == b)), p.argmax(1), y, n_boot=n_boot,
                          seed=seed)
    ece_ci = bootstrap_ci(partial(_ece_conf, n_bins=n_bins), conf, correct, n_boot=n_boot, seed=seed)
    cw_ci = bootstrap_ci(partial(_cw, n_bins=n_bins), p, y, m, n_boot=n_boot, seed=seed)
    over, under = B.over_under(conf, correct, n_bins)
    z = mean_gap_z(conf, correct)
    direction = ("overconfident" if z > Z_DIRECTION else "underconfident" if z < -Z_DIRECTION
                 else "no significant direction")
    return Statistics(p=p, y=y, m=m, conf=conf, correct=correct, n=len(y), n_options=p.shape[1],
                      n_bins=n_bins, accuracy=acc_ci, mean_confidence=mconf, mean_gap=mconf - acc,
                      mean_gap_z=z, direction=direction,
                      ece=ece_ci, cw_ece=cw_ci, over=over, under=under,
                      noise=ece_noise_floor(conf, n_bins, n_sim=n_sim, seed=seed),
                      noise_bounds=B.noise_floor_bounds(conf, n_bins),
                      collapse=collapse_normalised(p, y, m))


def _ece_conf(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    return calibration_error_from_table(
        bin_statistics(conf, correct, bin_edges(conf, n_bins, "uniform")), "l1")


def _cw(p: np.ndarray, y: np.ndarray, m: np.ndarray, n_bins: int) -> float:
    return classwise_ece(p, y, n_bins, m)


def mean_gap_z(conf: np.ndarray, correct: np.ndarray) -> float:
    """z of Σ(c_i − correct_i) under correct_i ~ Bernoulli(c_i): variance Σ c_i(1 − c_i)."""
    d = float(np.sum(conf - correct))
    sd = math.sqrt(float(np.sum(conf * (1.0 - conf))))
    if sd > 0:
        return d / sd
    return 0.0 if abs(d) < 1e-12 else math.copysign(math.inf, d)


def training_gap(s: Statistics, run: TrainingRun | None) -> tuple[B.GapFloor | None, float | None]:
    """P6's generalisation-gap floor and the gap's standard error (None without a training run)."""
    if run is None:
        return None, None
    acc = s.accuracy.estimate
    return (B.generalisation_gap_floor(run.accuracy, acc, s.mean_confidence, run.confidence),
            gap_se(acc, s.n, run))


def gap_se(accuracy: float, n: int, train: TrainingRun) -> float:
    """Standard error of G = A_T − A_H: Laplace-smoothed binomial terms (never exactly 0)."""
    def term(a: float, m: int) -> float:
        q = (a * m + 1.0) / (m + 2.0)
        return q * (1.0 - q) / m
    v = term(accuracy, n)
    if train.n:
        v += term(train.accuracy, int(train.n))
    return math.sqrt(v)
