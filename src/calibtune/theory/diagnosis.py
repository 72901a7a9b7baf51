"""Where does a model stand, and which method fits: a diagnosis from measured scores.

Pure functions on plain arrays; no files, no CLI. The decision rule (R0–R3) and the flags are
calibtune's own and are documented, with the bounds they use, in docs/theory.md §5. The
statistics live beside it: `regime` (the floor test, R0's power), `posthoc` (cross-fitting),
`collapse` (letter prior), `critical` (a*); their public names are re-exported here.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from ..metrics.binning import bin_edges, bin_statistics, calibration_error_from_table
from ..metrics.calibration import classwise_ece
from ..metrics.uncertainty import Interval, NoiseFloor, bootstrap_ci, ece_noise_floor
from ..metrics.validation import MetricInputError, check_inputs, top_label
from . import bounds as B
from .collapse import CollapseMeasures, collapse_measures, collapse_normalised, letter
from .critical import CriticalAccuracy, critical_accuracy
from .plain import normalised, plain
from .posthoc import CrossFit, Fit, cross_fit
from .regime import FloorTest, floor_test, proportion_var, r0_power

Z_DIRECTION = 1.96            # |z| of the mean gap above which the direction is called
FEW_ITEMS_Q95 = 0.05          # flag when the noise floor's q95 is this large

RECOMMENDATIONS = ("none", "temperature", "cft", "rcft")
INTERVAL_KIND = ("percentile bootstrap over items: an interval of the binned estimator at this n, "
                 "not of the true calibration error (the binned ECE is biased upwards at finite n, "
                 "docs/theory.md §1)")
POWER_GAPS = (0.05, 0.10)     # over-confidences for which R0's power is reported
TRAIN_KEYS = ("accuracy", "confidence", "n", "confidences", "correct", "accuracy_before",
              "n_before", "heldout_accuracy_before", "same_distribution", "item_sets")


# --------------------------------------------------------------------------------------------
# Training-run quantities


@dataclass(frozen=True)
class TrainingRun:
    """The fine-tuned model measured on its own training items (A_T, C_T of docs/theory.md §3).

    `confidences` / `correct` (per training item) are optional; with them Proposition 7 is also
    evaluated. `from_scores` fills everything from the training items' scores.

    The regime test needs `n` (A_T's sampling error enters the floor with weight 2) and a
    baseline for the gap the item sets had before fine-tuning: either measured
    (`accuracy_before` on `n_before` training items and `heldout_accuracy_before` on the same
    held-out items, both by the model before fine-tuning: G₀ = their difference) or
    `same_distribution=True` (training and held-out items are exchangeable: G₀ = 0 assumed).
    `item_sets` says in words how the two sets were drawn (shown in the verdict).
    """

    accuracy: float
    confidence: float | None = None
    n: int | None = None
    confidences: np.ndarray | None = field(default=None, repr=False, compare=False)
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)
    accuracy_before: float | None = None
    n_before: int | None = None
    heldout_accuracy_before: float | None = None
    same_distribution: bool | None = None
    item_sets: str | None = None

    def __post_init__(self) -> None:
        for name in ("accuracy", "confidence", "accuracy_before", "heldout_accuracy_before"):
            v = getattr(self, name)
            if v is None and name != "accuracy":
                continue
            if not isinstance(v, (int, float, np.integer, np.floating)) or not 0 <= float(v) <= 1:
                raise MetricInputError(f"train {name} must be a number in [0, 1], got {v!r}")
        for name in ("n", "n_before"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
                raise MetricInputError(f"train {name} must be a positive integer, got {v!r}")
        if (self.accuracy_before is None) != (self.heldout_accuracy_before is None) or (
                self.accuracy_before is not None and self.n_before is None):
            raise MetricInputError("the gap before fine-tuning needs accuracy_before, n_before "
                                   "and heldout_accuracy_before together")
        if (self.confidences is None) != (self.correct is None):
            raise MetricInputError("train confidences and correct must be given together")
        if self.confidences is not None and len(self.confidences) != len(self.correct):
            raise MetricInputError("train confidences and correct must have the same length")

    @classmethod
    def from_scores(cls, probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
                    from_logits: bool = False) -> TrainingRun:
        p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
        conf, correct = top_label(normalised(p, m), y)
        return cls(float(correct.mean()), float(conf.mean()), len(y), conf, correct)

    @classmethod
    def coerce(cls, train) -> TrainingRun:
        if isinstance(train, TrainingRun):
            return train
        if isinstance(train, Mapping):
            unknown = set(train) - set(TRAIN_KEYS)
            if "accuracy" not in train or unknown:
                raise MetricInputError(f"train needs 'accuracy' and may have {TRAIN_KEYS[1:]}; "
                                       f"got {sorted(train)}")
            return cls(**train)
        raise MetricInputError(f"train must be a TrainingRun or a mapping, got {type(train).__name__}")

    def baseline(self, n_heldout: int) -> tuple[float, float] | None:
        """(G₀, its variance) when measured, (0, 0) when the sets are exchangeable, else None."""
        if self.accuracy_before is not None:
            return (self.accuracy_before - self.heldout_accuracy_before,
                    proportion_var(self.accuracy_before, int(self.n_before))
                    + proportion_var(self.heldout_accuracy_before, n_heldout))
        return (0.0, 0.0) if self.same_distribution else None

    def to_dict(self) -> dict:
        return plain({"accuracy": self.accuracy, "confidence": self.confidence, "n": self.n,
                       "per_item": self.confidences is not None,
                       "accuracy_before": self.accuracy_before, "n_before": self.n_before,
                       "heldout_accuracy_before": self.heldout_accuracy_before,
                       "same_distribution": self.same_distribution,
                       "item_sets": self.item_sets})


# --------------------------------------------------------------------------------------------
# The diagnosis


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
        return plain(asdict(self))


@dataclass(frozen=True)
class Diagnosis:
    """Measured calibration, the bounds of docs/theory.md on these numbers, and a recommendation."""

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
    bounds: tuple[BoundCheck, ...]
    collapse: CollapseMeasures
    train: TrainingRun | None
    gap: B.GapFloor | None
    gap_se: float | None
    within_noise: bool
    regime: str
    gap_kind: str
    recommendation: str
    keep_accuracy: bool
    flags: tuple[str, ...]
    rules: tuple[str, ...]
    regime_test: FloorTest | None = None
    crossfit: CrossFit | None = None
    r0_power: tuple[tuple[float, float], ...] = ()

    def to_dict(self) -> dict:
        return plain({
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
        f = _fmt
        lines = [
            f"## Calibration diagnosis (n = {self.n}, K ≤ {self.n_options}, M = {self.n_bins} bins)",
            "",
            f"**Recommendation: {self.recommendation}**"
            + (" (accuracy-keeping alternative: temperature scaling fitted on a held-out split)"
               if self.recommendation == "rcft" else "")
            + f" — regime: {self.regime}; gap: {self.gap_kind}.",
            "",
            "| quantity | value | 95% interval (bootstrap, see below) |",
            "|---|---|---|",
            f"| accuracy | {f(self.accuracy.estimate)} | [{f(self.accuracy.low)}, "
            f"{f(self.accuracy.high)}] |",
            f"| mean confidence | {f(self.mean_confidence)} | |",
            f"| mean gap (conf − acc) | {f(self.mean_gap, sign=True)} (z = {f(self.mean_gap_z, 2)}, "
            f"{self.direction}) | |",
            f"| ECE | {f(self.ece.estimate)} | [{f(self.ece.low)}, {f(self.ece.high)}] |",
            f"| cw-ECE | {f(self.cw_ece.estimate)} | [{f(self.cw_ece.low)}, {f(self.cw_ece.high)}] |",
            f"| ECE over / under part | {f(self.over)} / {f(self.under)} | |",
            f"| noise floor (calibrated model) | mean {f(self.noise.mean)}, q95 {f(self.noise.q95)} "
            "| |",
            "",
            f"Intervals: {INTERVAL_KIND}.",
            "",
            "| bound (calibtune's, docs/theory.md) | value | vs | holds |",
            "|---|---|---|---|",
        ]
        for b in self.bounds:
            rel = "≤" if b.kind == "lower" else "≥"
            statement = b.statement.replace("|", "\\|")
            lines.append(f"| {b.name}: {statement} | {f(b.value)} | {rel} {b.against} "
                         f"{f(b.against_value)} | {'yes' if b.holds else 'NO'} |")
        c = self.collapse
        lines += ["", f"Collapse: {f(c.top_pred_share)} of predictions on option "
                      f"{letter(c.top_option)} (gold share {f(c.top_gold_share)}, excess "
                      f"{f(c.excess, sign=True)}, McNemar p = {f(c.p_value, 4)}); prediction "
                      f"entropy {f(c.pred_entropy)} vs gold {f(c.gold_entropy)} (normalised).",
                  "", "Rules applied:"]
        lines += [f"- {r}" for r in self.rules]
        if self.flags:
            lines += ["", "Flags:"] + [f"- {x}" for x in self.flags]
        return "\n".join(lines) + "\n"


def _fmt(x, digits: int = 3, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a" if x is None or math.isnan(x) else ("+inf" if x > 0 else "−inf")
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ece_conf(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    return calibration_error_from_table(
        bin_statistics(conf, correct, bin_edges(conf, n_bins, "uniform")), "l1")


def _cw(p: np.ndarray, y: np.ndarray, m: np.ndarray, n_bins: int) -> float:
    return classwise_ece(p, y, n_bins, m)


def _mean_gap_z(conf: np.ndarray, correct: np.ndarray) -> float:
    """z of Σ(c_i − correct_i) under correct_i ~ Bernoulli(c_i): variance Σ c_i(1 − c_i)."""
    d = float(np.sum(conf - correct))
    sd = math.sqrt(float(np.sum(conf * (1.0 - conf))))
    if sd > 0:
        return d / sd
    return 0.0 if abs(d) < 1e-12 else math.copysign(math.inf, d)


def _gap_se(accuracy: float, n: int, train: TrainingRun) -> float:
    """Standard error of G = A_T − A_H: Laplace-smoothed binomial terms (never exactly 0)."""
    def term(a: float, m: int) -> float:
        q = (a * m + 1.0) / (m + 2.0)
        return q * (1.0 - q) / m
    v = term(accuracy, n)
    if train.n:
        v += term(train.accuracy, int(train.n))
    return math.sqrt(v)


WORTH_FINE_TUNING = (
    "Fine-tuning for calibration (CFT, or RCFT, docs/method.md) is worth its cost when "
    "calibration must hold out of domain, where no labelled items exist to fit a temperature on "
    "(a temperature fitted in-domain need not transfer), or when the model is being fine-tuned "
    "anyway, so that the calibration term comes almost free. The repository's measurements do "
    "not yet show it beating post-hoc scaling: docs/reproduce.md ('Measured': a temperature fitted "
    "on the training items' scores matches CFT and RCFT in-domain and on the out-of-domain split, "
    "at chance accuracy) and docs/theory.md §4 ('On real runs').")


def _r3_posthoc(f: CrossFit, label: str) -> str:
    t = ", ".join(_fmt(x.get("temperature"), 2) for x in f.parameters)
    return (f"{label}: post-hoc {f.method} scaling, cross-fitted on these items (fitted on one "
            f"half of {f.n_halves[0]}/{f.n_halves[1]} items, reported on the other, and the "
            f"reverse; split seed {f.seed}; T = {t}): ECE {f.ece_before:.4f} → "
            f"{f.ece_after:.4f} (noise-floor q95 of the result {f.noise_q95_after:.4f}), "
            f"accuracy {f.accuracy_before:.4f} → {f.accuracy_after:.4f}. This is what it achieves "
            "in-domain, on new items of the same distribution; fit it on a held-out split of your "
            "own (`calibtune posthoc`).")


def _regime(run: TrainingRun, conf: np.ndarray, correct: np.ndarray, gap: B.GapFloor,
            gap_se: float, d: float, direction: str, rules: list[str], flags: list[str]
            ) -> tuple[str, bool, FloorTest | None]:
    """R2: the level-5% test of P6's floor, with the baseline G₀ (docs/theory.md §5)."""
    n = conf.size
    line = (f"R2: generalisation gap G = A_T − A_H = {run.accuracy:.4f} − {gap.accuracy:.4f} = "
            f"{gap.gap:+.4f} (se {gap_se:.4f}); tracking slack |C_H − A_T| = "
            f"{gap.tracking_slack:.4f}; P6 floor (|G| − slack)₊ = {gap.floor:.4f}")
    base = run.baseline(n)
    sets = f" ({run.item_sets})" if run.item_sets else ""
    if base is None:
        why = ("training and held-out items come from different distributions" + sets
               if run.same_distribution is False else
               "it is not known whether training and held-out items come from one distribution")
        flags.append(f"item sets: {why}, and the gap before fine-tuning (G₀) was not measured: "
                     "G may be a difference between the item sets, not memorisation, so no "
                     "regime verdict is given. Measure the model before fine-tuning on both "
                     "sets (eval_before and a training-item check at the start) to get G₀.")
        rules.append(line + f" → not determined: {why}, and no G₀ to subtract.")
        return "not determined", False, None
    if run.n is None:
        rules.append(line + " → not determined: the number of training items measured is "
                     "unknown, so A_T's sampling error (weight up to 2 in the floor) cannot be "
                     "counted.")
        return "not determined", False, None
    g0, g0_var = base
    test = floor_test(conf, correct, run.accuracy, int(run.n), baseline=g0, baseline_var=g0_var)
    origin = (f"G₀ = {g0:+.4f} measured before fine-tuning, so the floor tested is that of the "
              f"change of the gap: G − G₀ = {gap.gap - g0:+.4f}, slack |C_H − (A_T − G₀)| = "
              f"{abs(gap.confidence - test.reference):.4f}, floor {test.floor:.4f} (the P6 "
              "floor above, of G itself, includes the gap the item sets already had)"
              if run.accuracy_before is not None else
              f"G₀ = 0 assumed: the item sets are exchangeable{sets}")
    line += (f"; {origin}; test of floor > 0 (one-sided 5%, A_T's error counted twice): "
             f"min(C_H − A_H = {test.mean_gap:+.4f} ± {test.se_mean_gap:.4f}, "
             f"2(A_T − G₀) − A_H − C_H = {test.overshoot_margin:+.4f} ± "
             f"{test.se_overshoot_margin:.4f}), lower 95% bound {test.lower:+.4f}")
    if test.reject:
        rules.append(line + " > 0 → fine-tuning-limited: this run's held-out ECE has a part "
                     "attributable to its generalisation gap (about this run only; other runs "
                     "of the same method can differ, docs/theory.md §3).")
        return "fine-tuning-limited", True, test
    rules.append(line + f" ≤ 0 → no fine-tuning floor detected (mean gap D = {d:+.4f}, "
                 f"{direction}).")
    return "no fine-tuning floor detected", False, test


def diagnose(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
             n_bins: int = 10, keep_accuracy: bool = False,
             train: TrainingRun | Mapping | None = None, n_boot: int = 1000, n_sim: int = 1000,
             seed: int = 0, from_logits: bool = False, recalibrate: Fit | None = None
             ) -> Diagnosis:
    """Diagnose held-out scores; see docs/theory.md §5 for every number and the rule.

    `probs` [n, K] (or logits with `from_logits=True`), `labels` [n], `mask` [n, K] for items with
    fewer options. `keep_accuracy`: the user does not accept a change of accuracy. `train`: the
    same model measured on its training items (a `TrainingRun` or a mapping with 'accuracy' and
    optionally 'confidence', 'n', 'confidences', 'correct'). Unmasked rows are renormalised to sum
    to 1 before anything is computed (`check_inputs` lets a sum miss 1 by 1e-6; the bounds hold
    exactly for normalised rows). `recalibrate`: how to fit a post-hoc recalibration,
    `fit(probs, labels, mask) → (transform(probs, mask) → probs, parameters)`; when given and the
    model is miscalibrated, it is measured cross-fitted (`theory.posthoc.cross_fit`, split by
    `seed`) before any fine-tuning is recommended. The command line passes temperature scaling.
    """
    p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
    p = normalised(p, m)
    run = None if train is None else TrainingRun.coerce(train)
    n, k = p.shape
    conf, correct = top_label(p, y)
    k_i = m.sum(axis=1)
    acc = float(correct.mean())
    mconf = float(conf.mean())
    d = mconf - acc

    acc_ci = bootstrap_ci(lambda a, b: float(np.mean(a == b)), p.argmax(1), y, n_boot=n_boot,
                         seed=seed)
    ece_ci = bootstrap_ci(partial(_ece_conf, n_bins=n_bins), conf, correct, n_boot=n_boot, seed=seed)
    cw_ci = bootstrap_ci(partial(_cw, n_bins=n_bins), p, y, m, n_boot=n_boot, seed=seed)
    e = ece_ci.estimate
    noise = ece_noise_floor(conf, n_bins, n_sim=n_sim, seed=seed)
    nb = B.noise_floor_bounds(conf, n_bins)
    over, under = B.over_under(conf, correct, n_bins)
    z = _mean_gap_z(conf, correct)
    direction = ("overconfident" if z > Z_DIRECTION else "underconfident" if z < -Z_DIRECTION
                 else "no significant direction")
    collapse = collapse_normalised(p, y, m)

    def lower(name: str, statement: str, value: float) -> BoundCheck:
        return BoundCheck(name, statement, float(value), "ECE", e, "lower", value <= e + B.TOL)

    mc = 3.0 * noise.std / math.sqrt(noise.n_sim) if noise.n_sim > 1 else 0.0
    checks = [
        lower("P1 mean gap", "ECE ≥ |mean conf − accuracy|", abs(d)),
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
    gap = gap_se = None
    if run is not None:
        gap = B.generalisation_gap_floor(run.accuracy, acc, mconf, run.confidence)
        gap_se = _gap_se(acc, n, run)
        checks.append(lower("P6 generalisation gap", "ECE ≥ (|A_T − A_H| − |C_H − A_T|)₊",
                            gap.floor))
        if run.confidences is not None and run.correct is not None:
            checks.append(lower("P7 binned generalisation gap",
                                "ECE ≥ Σ_k w_k (|a^T_k − a_k| − |c^T_k − a^T_k| − |c^T_k − c_k|)₊",
                                B.binned_generalisation_floor(run.confidences, run.correct, conf,
                                                              correct, n_bins)))

    rules: list[str] = []
    flags: list[str] = []
    within = e <= noise.q95
    power = tuple((g, r0_power(conf, noise.q95, g, n_bins, n_sim=n_sim, seed=seed))
                  for g in POWER_GAPS) if within else ()  # printed only for a non-rejection
    if within:
        pw = ", ".join(f"{p:.2f} for a gap of {g:.2f}" for g, p in power)
        rules.append(f"R0: ECE {e:.4f} ≤ noise-floor q95 {noise.q95:.4f} (a perfectly calibrated "
                     f"model with these confidences exceeds it in 5% of samples of n = {n}) → "
                     f"not distinguishable from calibrated at this n (power {pw}: the chance "
                     "that this test detects a uniform over-confidence of that size). No "
                     "recalibration is indicated by this test; it does not show calibration.")
    else:
        rules.append(f"R0: ECE {e:.4f} > noise-floor q95 {noise.q95:.4f} (n = {n}; bootstrap "
                     f"interval of the binned estimator [{ece_ci.low:.4f}, {ece_ci.high:.4f}]) "
                     "→ miscalibrated beyond sampling noise.")

    if not within and keep_accuracy:
        r1 = ("R1: accuracy must not move → post-hoc temperature scaling (fitted on a held-out "
              "split; it keeps every argmax, so accuracy is unchanged).")
        if collapse.letter_prior:
            r1 += (" A letter prior is flagged: temperature cannot remove it; a per-option bias "
                   "(vector scaling) or CFT can, but they may change predictions and so accuracy.")
        rules.append(r1 + " R2 below is for information only.")
    regime = "not distinguishable from calibrated" if within else "not determined"
    limited = False
    test = None
    if not within and run is not None:
        regime, limited, test = _regime(run, conf, correct, gap, gap_se, d, direction, rules,
                                        flags)
    elif not within:
        rules.append("R2: no training-run quantities: the regime cannot be read from held-out scores "
                     "alone (Proposition 4: above chance, accuracy alone forces no positive ECE "
                     "floor) → not determined.")

    fitted = None
    if not within and recalibrate is not None and n >= 4:
        fitted = cross_fit(p, y, m, recalibrate, n_bins=n_bins, seed=seed, n_sim=n_sim)
    # post-hoc scaling suffices in-domain when its cross-fitted ECE is inside the result's own
    # noise band; a mere decrease (it nearly always decreases) leaves the rest to fine-tuning
    scaling_suffices = fitted is not None and fitted.ece_after <= fitted.noise_q95_after
    if within:
        rec = "none"
    elif keep_accuracy:
        rec = "temperature"
        if fitted is not None:
            rules.append(_r3_posthoc(fitted, "R1 (measured)"))
    elif limited:
        rec = "rcft"
        rules.append(
            "R3: this run's held-out ECE has a part attributable to its generalisation gap "
            f"(lower 95% bound of P6's floor {test.lower:.4f} > 0) → RCFT (docs/method.md), if "
            "this fine-tuned model is to be kept and its calibration fitted on its training items: "
            "a heuristic of calibtune's, which trades training-item fit against ECE through λ; it "
            "does not follow from Proposition 6 or 7, which only attribute the gap.")
        rules.append(
            "R3 (alternative that keeps accuracy): post-hoc temperature scaling fitted on a "
            "held-out split keeps every argmax and, being fitted to outcomes from outside the "
            "training items, is not bound by this floor; choose it (keep_accuracy=True) if such a "
            "split can be spared.")
        if fitted is not None:
            rules.append(_r3_posthoc(fitted, "R3 (that alternative, measured)"))
    elif scaling_suffices:
        rec = "temperature"
        rules.append(_r3_posthoc(fitted, "R3") + " Its ECE is inside the noise band of the "
                     "result → temperature scaling suffices in-domain.")
    else:
        rec = "cft"
        if fitted is not None:
            rules.append(_r3_posthoc(fitted, "R3 (measured first)") + " Its ECE stays above the "
                         "noise band of the result: scaling alone does not remove the "
                         "miscalibration here.")
        rules.append(f"R3: {regime} → CFT (docs/method.md)" + (
            "" if fitted is not None else "; post-hoc temperature was not measured (the "
            "command line measures it cross-fitted; in Python pass `recalibrate`), and it is the "
            "cheaper fix in-domain") + ". " + WORTH_FINE_TUNING)
    if rec == "temperature" and not keep_accuracy:
        rules.append("R3: " + WORTH_FINE_TUNING)
    if within:
        gap_kind = "within noise"
    elif collapse.letter_prior:
        gap_kind = "letter prior"
    elif direction == "overconfident":
        gap_kind = "spread overconfidence"
    elif direction == "underconfident":
        gap_kind = "spread underconfidence"
    else:
        gap_kind = "mixed-sign (over- and under-confident bins)"

    if collapse.letter_prior:
        flags.append(
            f"letter prior: {collapse.top_pred_share:.1%} of predictions on option "
            f"{letter(collapse.top_option)} against a gold share of {collapse.top_gold_share:.1%} "
            f"(McNemar p = {collapse.p_value:.2g}); temperature keeps every argmax and cannot remove "
            "it; a per-option bias (vector scaling) or fine-tuning can.")
    chance = B.accuracy_only_floor(correct, k_i)
    if chance > noise.q95:
        flags.append(f"below chance: accuracy {acc:.4f} < mean 1/K {float(np.mean(1 / k_i)):.4f}; "
                     f"any recalibration that keeps the predictions leaves ECE ≥ {chance:.4f} "
                     "(Proposition 2); only changing predictions removes it.")
    if noise.q95 >= FEW_ITEMS_Q95:
        flags.append(f"low resolution: a perfectly calibrated model's ECE reaches {noise.q95:.3f} (q95) "
                     f"on n = {n} items; smaller miscalibration cannot be detected.")
    if not all(c.holds for c in checks):
        flags.append("a bound check failed: " + ", ".join(c.name for c in checks if not c.holds))

    return Diagnosis(n=n, n_options=k, n_bins=n_bins, accuracy=acc_ci, mean_confidence=mconf,
                     mean_gap=d, mean_gap_z=z, direction=direction, ece=ece_ci, cw_ece=cw_ci,
                     over=over, under=under, noise=noise, noise_bounds=nb, bounds=tuple(checks),
                     collapse=collapse, train=run, gap=gap, gap_se=gap_se, within_noise=within,
                     regime=regime, gap_kind=gap_kind, recommendation=rec,
                     keep_accuracy=keep_accuracy, flags=tuple(flags), rules=tuple(rules),
                     regime_test=test, crossfit=fitted, r0_power=power)


__all__ = ["BoundCheck", "CollapseMeasures", "CriticalAccuracy", "Diagnosis", "TrainingRun",
           "collapse_measures", "critical_accuracy", "diagnose"]
