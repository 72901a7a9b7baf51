"""The decision rule R0–R3 and the flags (docs/theory.md §5): what the measured numbers mean.

calibtune's own rule, not a paper's. Every verdict is a sentence that says what was tested, so
the prose is written here, beside the rule that decides it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..metrics.collapse import letter
from . import bounds as B
from .checks import BoundCheck
from .posthoc import CrossFit, Fit, cross_fit
from .regime import FloorTest, floor_test, r0_power
from .render import fmt
from .statistics import Statistics
from .training_run import TrainingRun

RECOMMENDATIONS = ("none", "temperature", "cft", "rcft")
FEW_ITEMS_Q95 = 0.05          # flag when the noise floor's q95 is this large
POWER_GAPS = (0.05, 0.10)     # over-confidences for which R0's power is reported

WORTH_FINE_TUNING = (
    "Fine-tuning for calibration (CFT, or RCFT, docs/method.md) is worth its cost when "
    "calibration must hold out of domain, where no labelled items exist to fit a temperature on "
    "(a temperature fitted in-domain need not transfer), or when the model is being fine-tuned "
    "anyway, so that the calibration term comes almost free. The repository's measurements do "
    "not yet show it beating post-hoc scaling: in docs/reproduce.md ('Measured' sections) a "
    "temperature fitted on the training items' scores matches CFT and RCFT at chance accuracy, "
    "and on a 1.5B model above chance (SocialIQA) it removes the whole overconfidence where CFT "
    "and RCFT, trained on a CPU-sized budget, remove a quarter of it; see also docs/theory.md §4 "
    "('On real runs').")


@dataclass(frozen=True)
class Verdict:
    """What the rules conclude: regime, kind of gap, recommendation, and the lines that say why."""

    within_noise: bool
    regime: str
    gap_kind: str
    recommendation: str
    flags: tuple[str, ...]
    rules: tuple[str, ...]
    regime_test: FloorTest | None
    crossfit: CrossFit | None
    r0_power: tuple[tuple[float, float], ...]

    def concluded(self) -> dict:
        """The verdict's fields as keyword arguments (for `Diagnosis`)."""
        return {f.name: getattr(self, f.name) for f in fields(Verdict)}


def verdict(s: Statistics, run: TrainingRun | None, gap: B.GapFloor | None, gap_se: float | None,
            checks: tuple[BoundCheck, ...], *, keep_accuracy: bool, recalibrate: Fit | None,
            n_sim: int, seed: int) -> Verdict:
    """Apply R0 (noise), R1 (accuracy kept), R2 (regime), R3 (method) in order, then the flags."""
    rules: list[str] = []
    flags: list[str] = []
    within = s.ece.estimate <= s.noise.q95
    power = _r0(s, within, n_sim, seed, rules)
    if not within and keep_accuracy:
        rules.append(_r1(s))
    regime = "not distinguishable from calibrated" if within else "not determined"
    limited, test = False, None
    if not within and run is not None:
        regime, limited, test = _regime(run, s.conf, s.correct, gap, gap_se, s.mean_gap,
                                        s.direction, rules, flags)
    elif not within:
        rules.append("R2: no training-run quantities: the regime cannot be read from held-out scores "
                     "alone (Proposition 4: above chance, accuracy alone forces no positive ECE "
                     "floor) → not determined.")
    fitted = None
    if not within and recalibrate is not None and s.n >= 4:
        fitted = cross_fit(s.p, s.y, s.m, recalibrate, n_bins=s.n_bins, seed=seed, n_sim=n_sim)
    rec = _r3(within, keep_accuracy, limited, test, regime, fitted, rules)
    flags += _flags(s, checks)
    return Verdict(within_noise=within, regime=regime, gap_kind=_gap_kind(s, within),
                   recommendation=rec, flags=tuple(flags), rules=tuple(rules), regime_test=test,
                   crossfit=fitted, r0_power=power)


def _r0(s: Statistics, within: bool, n_sim: int, seed: int, rules: list[str]
        ) -> tuple[tuple[float, float], ...]:
    """R0: is ECE beyond the noise floor's q95? Returns R0's power, computed only when printed."""
    e, q95, n = s.ece.estimate, s.noise.q95, s.n
    if not within:
        rules.append(f"R0: ECE {e:.4f} > noise-floor q95 {q95:.4f} (n = {n}; bootstrap "
                     f"interval of the binned estimator [{s.ece.low:.4f}, {s.ece.high:.4f}]) "
                     "→ miscalibrated beyond sampling noise.")
        return ()
    power = tuple((g, r0_power(s.conf, q95, g, s.n_bins, n_sim=n_sim, seed=seed))
                  for g in POWER_GAPS)
    pw = ", ".join(f"{p:.2f} for a gap of {g:.2f}" for g, p in power)
    rules.append(f"R0: ECE {e:.4f} ≤ noise-floor q95 {q95:.4f} (a perfectly calibrated "
                 f"model with these confidences exceeds it in 5% of samples of n = {n}) → "
                 f"not distinguishable from calibrated at this n (power {pw}: the chance "
                 "that this test detects a uniform over-confidence of that size). No "
                 "recalibration is indicated by this test; it does not show calibration.")
    return power


def _r1(s: Statistics) -> str:
    r1 = ("R1: accuracy must not move → post-hoc temperature scaling (fitted on a held-out "
          "split; it keeps every argmax, so accuracy is unchanged).")
    if s.collapse.letter_prior:
        r1 += (" A letter prior is flagged: temperature cannot remove it; a per-option bias "
               "(vector scaling) or CFT can, but they may change predictions and so accuracy.")
    return r1 + " R2 below is for information only."


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


def _r3(within: bool, keep_accuracy: bool, limited: bool, test: FloorTest | None, regime: str,
        fitted: CrossFit | None, rules: list[str]) -> str:
    """R3: the method. Post-hoc scaling suffices in-domain when its cross-fitted ECE is inside the
    result's own noise band; a mere decrease (it nearly always decreases) leaves the rest to
    fine-tuning."""
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
    return rec


def _r3_posthoc(f: CrossFit, label: str) -> str:
    t = ", ".join(fmt(x.get("temperature"), 2) for x in f.parameters)
    return (f"{label}: post-hoc {f.method} scaling, cross-fitted on these items (fitted on one "
            f"half of {f.n_halves[0]}/{f.n_halves[1]} items, reported on the other, and the "
            f"reverse; split seed {f.seed}; T = {t}): ECE {f.ece_before:.4f} → "
            f"{f.ece_after:.4f} (noise-floor q95 of the result {f.noise_q95_after:.4f}), "
            f"accuracy {f.accuracy_before:.4f} → {f.accuracy_after:.4f}. This is what it achieves "
            "in-domain, on new items of the same distribution; fit it on a held-out split of your "
            "own (`calibtune posthoc`).")


def _gap_kind(s: Statistics, within: bool) -> str:
    if within:
        return "within noise"
    if s.collapse.letter_prior:
        return "letter prior"
    if s.direction == "overconfident":
        return "spread overconfidence"
    if s.direction == "underconfident":
        return "spread underconfidence"
    return "mixed-sign (over- and under-confident bins)"


def _flags(s: Statistics, checks: tuple[BoundCheck, ...]) -> list[str]:
    """Letter prior, below chance, low resolution, a failed bound check."""
    flags = []
    c, noise, n = s.collapse, s.noise, s.n
    if c.letter_prior:
        flags.append(
            f"letter prior: {c.top_pred_share:.1%} of predictions on option "
            f"{letter(c.top_option)} against a gold share of {c.top_gold_share:.1%} "
            f"(McNemar p = {c.p_value:.2g}); temperature keeps every argmax and cannot remove "
            "it; a per-option bias (vector scaling) or fine-tuning can.")
    k_i = s.k_i
    chance = B.accuracy_only_floor(s.correct, k_i)
    if chance > noise.q95:
        flags.append(f"below chance: accuracy {s.accuracy.estimate:.4f} < mean 1/K "
                     f"{float(np.mean(1 / k_i)):.4f}; any recalibration that keeps the predictions "
                     f"leaves ECE ≥ {chance:.4f} (Proposition 2); only changing predictions removes "
                     "it.")
    if noise.q95 >= FEW_ITEMS_Q95:
        flags.append(f"low resolution: a perfectly calibrated model's ECE reaches {noise.q95:.3f} (q95) "
                     f"on n = {n} items; smaller miscalibration cannot be detected.")
    if not all(b.holds for b in checks):
        flags.append("a bound check failed: " + ", ".join(b.name for b in checks if not b.holds))
    return flags
