"""The bounds of docs/theory.md evaluated on one diagnosis's measured numbers.

A failed check means the measurement or the code is wrong, not the model: the diagnosis flags it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..integrity import json_ready
from . import bounds as B
from .statistics import Statistics
from .training_run import TrainingRun


@dataclass(frozen=True)
class BoundCheck:
    """One bound of docs/theory.md evaluated on the measured numbers.

    `kind` is "lower" (value ≤ against_value must hold) or "upper" (value ≥ against_value).
    """

    name: str
    statement: str
    value: float
    against: str
    against_value: float
    kind: str
    holds: bool
    source: str = "calibtune (ours), docs/theory.md"

    def to_dict(self) -> dict:
        return json_ready(asdict(self))


def bound_checks(s: Statistics, run: TrainingRun | None, gap: B.GapFloor | None
                 ) -> tuple[BoundCheck, ...]:
    """P1–P5 always; P6 with a training run, P7 when it has per-item scores too."""
    e, noise, nb = s.ece.estimate, s.noise, s.noise_bounds
    conf, correct, k_i, n_bins = s.conf, s.correct, s.k_i, s.n_bins

    def lower(name: str, statement: str, value: float) -> BoundCheck:
        return BoundCheck(name, statement, float(value), "ECE", e, "lower", value <= e + B.TOL)

    # the simulated noise mean is itself an estimate: allow 3 of its standard errors
    mc = 3.0 * noise.std / math.sqrt(noise.n_sim) if noise.n_sim > 1 else 0.0
    checks = [
        lower("P1 mean gap", "ECE ≥ |mean conf − accuracy|", abs(s.mean_gap)),
        lower("P2 below-chance floor", "ECE ≥ Σ_k w_k (mean_k 1/K_i − acc_k)₊",
              B.below_chance_floor(conf, correct, k_i, n_bins)),
        lower("C3 combined", "ECE ≥ max(D, 2·P2 − D), D = conf − acc",
              B.combined_floor(conf, correct, k_i, n_bins)),
        lower("P4 accuracy only", "ECE ≥ (mean 1/K_i − accuracy)₊",
              B.accuracy_only_floor(correct, k_i)),
        BoundCheck("P5 noise mean, upper", "E[ECE | calibrated] ≤ (1/n) Σ_k sqrt(V_k)", nb.upper,
                   "simulated mean", noise.mean, "upper", nb.upper >= noise.mean - mc),
        BoundCheck("P5 noise mean, lower", "E[ECE | calibrated] ≥ (1/n) Σ_k V_k/sqrt(1+3V_k)",
                   nb.lower, "simulated mean", noise.mean, "lower", nb.lower <= noise.mean + mc),
        BoundCheck("P5 noise mean, worst case", "E[ECE | calibrated] ≤ sqrt(M'/(4n))",
                   nb.worst_case, "simulated mean", noise.mean, "upper",
                   nb.worst_case >= noise.mean - mc),
        BoundCheck("P5 noise q95", "q95[ECE | calibrated] ≤ (1/n) Σ_k sqrt(V_k) + sqrt(ln 20/(2n))",
                   nb.quantile_bound, "simulated q95", noise.q95, "upper",
                   nb.quantile_bound >= noise.q95),
    ]
    if run is not None:
        checks.append(lower("P6 generalisation gap", "ECE ≥ (|A_T − A_H| − |C_H − A_T|)₊",
                            gap.floor))
        if run.confidences is not None and run.correct is not None:
            checks.append(lower("P7 binned generalisation gap",
                                "ECE ≥ Σ_k w_k (|a^T_k − a_k| − |c^T_k − a^T_k| − |c^T_k − c_k|)₊",
                                B.binned_generalisation_floor(run.confidences, run.correct, conf,
                                                              correct, n_bins)))
    return tuple(checks)
