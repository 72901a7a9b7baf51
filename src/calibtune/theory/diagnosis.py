"""Where does a model stand, and which method fits: a diagnosis from measured scores.

Pure functions on plain arrays; no files, no CLI. `diagnose` composes four jobs, each in its own
module: `statistics` (the measured numbers), `checks` (the bounds of docs/theory.md on them),
`rules` (the decision rule R0–R3 and the flags, calibtune's own, docs/theory.md §5) and `render`
(markdown). Beside them: `regime` (the floor test, R0's power), `posthoc` (cross-fitting),
`critical` (a*), and the collapse measures in `metrics.collapse` (they run on every eval). Their
public names are re-exported here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..integrity import json_ready
from ..metrics.collapse import CollapseMeasures, collapse_measures
from . import bounds as B
from .checks import BoundCheck, bound_checks
from .critical import CriticalAccuracy, critical_accuracy
from .posthoc import Fit
from .render import diagnosis_markdown
from .rules import FEW_ITEMS_Q95, POWER_GAPS, RECOMMENDATIONS, WORTH_FINE_TUNING, Verdict, verdict
from .statistics import INTERVAL_KIND, Z_DIRECTION, Measured, measure, training_gap
from .training_run import TRAIN_KEYS, TrainingRun


@dataclass(frozen=True)
class Diagnosis(Verdict, Measured):
    """Measured calibration (`Measured`), the bounds of docs/theory.md on these numbers, and what
    the rule concludes (`Verdict`: regime, kind of gap, recommendation, the rules and flags)."""

    bounds: tuple[BoundCheck, ...]
    train: TrainingRun | None
    gap: B.GapFloor | None
    gap_se: float | None
    keep_accuracy: bool

    def to_dict(self) -> dict:
        return json_ready({
            "n": self.n, "n_options": self.n_options, "n_bins": self.n_bins,
            "accuracy": self.accuracy.to_dict(), "mean_confidence": self.mean_confidence,
            "mean_gap": self.mean_gap, "mean_gap_z": self.mean_gap_z, "direction": self.direction,
            "ece": self.ece.to_dict(), "cw_ece": self.cw_ece.to_dict(),
            "over": self.over, "under": self.under,
            "noise_floor": self.noise.to_dict(), "noise_bounds": self.noise_bounds.to_dict(),
            "bounds": [b.to_dict() for b in self.bounds],
            "collapse": self.collapse.to_dict(),
            "train": None if self.train is None else self.train.to_dict(),
            "generalisation_gap": None if self.gap is None else self.gap.to_dict(),
            "gap_se": self.gap_se, "within_noise": self.within_noise, "regime": self.regime,
            "gap_kind": self.gap_kind, "recommendation": self.recommendation,
            "keep_accuracy": self.keep_accuracy, "flags": list(self.flags),
            "rules": list(self.rules),
            "regime_test": None if self.regime_test is None else self.regime_test.to_dict(),
            "crossfit": None if self.crossfit is None else self.crossfit.to_dict(),
            "r0_power": [{"gap": g, "power": p} for g, p in self.r0_power],
            "interval_kind": INTERVAL_KIND})

    def to_markdown(self) -> str:
        return diagnosis_markdown(self)


def diagnose(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
             n_bins: int = 10, keep_accuracy: bool = False,
             train: TrainingRun | Mapping | None = None, n_boot: int = 1000, n_sim: int = 1000,
             seed: int = 0, from_logits: bool = False, recalibrate: Fit | None = None
             ) -> Diagnosis:
    """Diagnose held-out scores: measure, check the bounds, apply the rule, recommend.

    Every number and the rule are defined in docs/theory.md §5. Unmasked rows are renormalised
    to sum to 1 before anything is computed (`check_inputs` lets a sum miss 1 by 1e-6; the bounds
    hold exactly for normalised rows).

    Parameters
    ----------
    probs : ndarray of shape (n, K)
        Option probabilities (or logits with ``from_logits=True``).
    labels : ndarray of shape (n,)
        Index of the correct option of each item.
    mask : ndarray of shape (n, K), optional
        True where an option exists, for items with fewer than K options.
    n_bins : int, default 10
        Equal-width confidence bins of the ECE.
    keep_accuracy : bool, default False
        The user does not accept a change of accuracy (R1: temperature scaling).
    train : TrainingRun or mapping, optional
        The same model measured on its training items: a `TrainingRun`, or a mapping with
        'accuracy' and optionally 'confidence', 'n', 'confidences', 'correct', 'accuracy_before',
        'n_before', 'heldout_accuracy_before', 'same_distribution', 'item_sets'. Needed for R2.
    n_boot, n_sim : int, default 1000
        Bootstrap resamples of the intervals; simulations of the noise floor.
    seed : int, default 0
        Seeds the bootstrap, the simulations and the cross-fitting split.
    from_logits : bool, default False
        `probs` holds logits.
    recalibrate : callable, optional
        ``fit(probs, labels, mask) -> (transform(probs, mask) -> probs, parameters)``. When given
        and the model is miscalibrated, the recalibration is measured cross-fitted
        (`theory.posthoc.cross_fit`) before any fine-tuning is recommended. The command line
        passes temperature scaling.

    Returns
    -------
    Diagnosis
        The measured numbers with intervals, the bound checks, ``regime``, ``gap_kind``,
        ``recommendation`` (one of ``RECOMMENDATIONS``) and the ``rules`` lines that say why;
        ``to_dict()`` is diagnosis.json, ``to_markdown()`` diagnosis.md.

    Examples
    --------
    A calibrated model (each answer right with the probability it states) is within noise:

    >>> import numpy as np
    >>> from calibtune.theory import diagnose
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(0.3, 1.0, 500)
    >>> probs = np.column_stack([conf, (1 - conf) / 3, (1 - conf) / 3, (1 - conf) / 3])
    >>> labels = np.where(rng.random(500) < conf, 0, 1 + rng.integers(0, 3, 500))
    >>> d = diagnose(probs, labels, n_boot=100, n_sim=200)
    >>> d.recommendation, d.regime
    ('none', 'not distinguishable from calibrated')

    The same confidences when the answers are right 25 points less often:

    >>> labels = np.where(rng.random(500) < conf - 0.25, 0, 1 + rng.integers(0, 3, 500))
    >>> d = diagnose(probs, labels, n_boot=100, n_sim=200)
    >>> d.recommendation, d.direction
    ('cft', 'overconfident')
    >>> d.rules[0].startswith("R0: ECE") and "miscalibrated beyond sampling noise" in d.rules[0]
    True
    """
    s = measure(probs, labels, mask, n_bins=n_bins, n_boot=n_boot, n_sim=n_sim, seed=seed,
                from_logits=from_logits)
    run = None if train is None else TrainingRun.coerce(train)
    gap, gap_se = training_gap(s, run)
    checks = bound_checks(s, run, gap)
    v = verdict(s, run, gap, gap_se, checks, keep_accuracy=keep_accuracy,
                recalibrate=recalibrate, n_sim=n_sim, seed=seed)
    return Diagnosis(**s.measured(), **v.concluded(), bounds=checks, train=run, gap=gap,
                     gap_se=gap_se, keep_accuracy=keep_accuracy)


__all__ = ["BoundCheck", "CollapseMeasures", "CriticalAccuracy", "Diagnosis", "TrainingRun",
           "collapse_measures", "critical_accuracy", "diagnose",
           # constants of the rule, importable from here as before the split
           "FEW_ITEMS_Q95", "INTERVAL_KIND", "POWER_GAPS", "RECOMMENDATIONS", "TRAIN_KEYS",
           "WORTH_FINE_TUNING", "Z_DIRECTION"]
