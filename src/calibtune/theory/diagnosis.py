"""Where does a model stand, and which method fits: a diagnosis from measured scores.

Pure functions on plain arrays; no files, no CLI. The decision rule (R0–R3) and the flags are
calibtune's own and are documented, with the bounds they use, in docs/theory.md §5.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
from scipy.stats import binom

from ..metrics.binning import bin_edges, bin_statistics, calibration_error_from_table
from ..metrics.calibration import classwise_ece
from ..metrics.uncertainty import Interval, NoiseFloor, bootstrap_ci, ece_noise_floor
from ..metrics.validation import MetricInputError, check_inputs, top_label
from . import bounds as B

Z_DIRECTION = 1.96            # |z| of the mean gap above which the direction is called
LETTER_PRIOR_MIN_SHARE = 0.5  # most predictions on one option ...
LETTER_PRIOR_MIN_EXCESS = 0.10  # ... at least 10 points more than that option's gold share ...
LETTER_PRIOR_ALPHA = 0.05     # ... and the excess significant (exact McNemar, Bonferroni × K)
GAP_Z = 1.96                  # the generalisation gap must exceed its own sampling error
FEW_ITEMS_Q95 = 0.05          # flag when the noise floor's q95 is this large

RECOMMENDATIONS = ("none", "temperature", "cft", "rcft")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _normalised(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Rows divided by their unmasked sum (masked entries stay 0; every argmax is unchanged).

    `check_inputs` accepts rows whose sum misses 1 by up to 1e-6 and returns them as they are; the
    bounds of docs/theory.md hold exactly only for rows that sum to 1 (c_i ≥ 1/K_i), so the
    diagnosis works on renormalised rows. Its numbers can therefore differ from the metrics on the
    raw rows by about 1e-6 (relative); for rows that already sum to 1 they agree.
    """
    s = np.where(m, p, 0.0).sum(axis=1, keepdims=True)
    return np.where(m, p / s, 0.0)


def _letter(j: int) -> str:
    return LETTERS[j] if 0 <= j < len(LETTERS) else str(j)


def _clean(x):
    """JSON-ready: numpy scalars to Python, non-finite floats to None, containers recursively."""
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


# --------------------------------------------------------------------------------------------
# Collapse measures: is the gap a letter/option prior?


@dataclass(frozen=True)
class CollapseMeasures:
    """How much the predictions collapse onto one option position, against the gold labels.

    `top_option` j* is the most predicted option (lowest index on ties). `excess` = share of
    predictions on j* − share of gold labels on j*. `mass_excess` = mean p_{i,j*} − gold share of j*.
    `gap_beyond_accuracy` = mean top-option probability − accuracy. Entropies are of the
    prediction / gold distributions over option positions, divided by log(K). `p_value` is the
    exact one-sided McNemar test of "predicted j* more often than gold j*" (discordant pairs
    b = predicted j* but gold not, c = gold j* but predicted not), Bonferroni-adjusted × K.
    `option_entropy` is the mean over items of the entropy of the item's own option
    distribution divided by log(its number of options): 1 = uniform, 0 = all mass on one option
    (the per-item collapse that preference optimisation is blamed for, METHOD.md §1).
    """

    n: int
    n_options: int
    pred_share: tuple[float, ...]
    gold_share: tuple[float, ...]
    top_option: int
    top_pred_share: float
    top_gold_share: float
    excess: float
    mass_on_top: float
    mass_excess: float
    gap_beyond_accuracy: float
    wrong_share_on_top: float | None
    pred_entropy: float
    gold_entropy: float
    mcnemar_b: int
    mcnemar_c: int
    p_value: float
    letter_prior: bool
    option_entropy: float

    def to_dict(self) -> dict:
        return _clean(asdict(self))


def _norm_entropy(share: np.ndarray, k: int) -> float:
    s = share[share > 0]
    return float(-(s * np.log(s)).sum() / math.log(k)) if k > 1 else 0.0


def collapse_measures(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
                      from_logits: bool = False) -> CollapseMeasures:
    """Collapse measures of a score set; `letter_prior` applies the rule of docs/theory.md §5."""
    p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
    return _collapse(_normalised(p, m), y, m)


def _collapse(p: np.ndarray, y: np.ndarray, m: np.ndarray) -> CollapseMeasures:
    n, k = p.shape
    pred = p.argmax(axis=1)
    conf, correct = top_label(p, y)
    pred_share = np.bincount(pred, minlength=k) / n
    gold_share = np.bincount(y, minlength=k) / n
    j = int(np.argmax(pred_share))
    b = int(np.sum((pred == j) & (y != j)))
    c = int(np.sum((pred != j) & (y == j)))
    p_one = float(binom.sf(b - 1, b + c, 0.5)) if b + c > 0 else 1.0  # P(Bin(b+c, ½) ≥ b)
    p_adj = min(1.0, k * p_one)
    wrong = correct == 0
    excess = float(pred_share[j] - gold_share[j])
    prior = bool(pred_share[j] > LETTER_PRIOR_MIN_SHARE and excess >= LETTER_PRIOR_MIN_EXCESS - 1e-9
                 and p_adj < LETTER_PRIOR_ALPHA)
    return CollapseMeasures(
        n=n, n_options=k, pred_share=tuple(float(s) for s in pred_share),
        gold_share=tuple(float(s) for s in gold_share), top_option=j,
        top_pred_share=float(pred_share[j]), top_gold_share=float(gold_share[j]), excess=excess,
        mass_on_top=float(p[:, j].mean()), mass_excess=float(p[:, j].mean() - gold_share[j]),
        gap_beyond_accuracy=float(conf.mean() - correct.mean()),
        wrong_share_on_top=float(np.mean(pred[wrong] == j)) if wrong.any() else None,
        pred_entropy=_norm_entropy(pred_share, k), gold_entropy=_norm_entropy(gold_share, k),
        mcnemar_b=b, mcnemar_c=c, p_value=p_adj, letter_prior=prior,
        option_entropy=_mean_option_entropy(p, m))


def _mean_option_entropy(p: np.ndarray, m: np.ndarray) -> float:
    """Mean normalised entropy of each item's option distribution (`check_inputs` ensures ≥ 2
    options per item)."""
    k_i = m.sum(axis=1)
    plogp = np.where(m & (p > 0), p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    h = -plogp.sum(axis=1)
    return float(np.mean(h / np.log(k_i)))


# --------------------------------------------------------------------------------------------
# Training-run quantities


@dataclass(frozen=True)
class TrainingRun:
    """The fine-tuned model measured on its own training items (A_T, C_T of docs/theory.md §3.6).

    `confidences` / `correct` (per training item) are optional; with them Proposition 7 is also
    evaluated. `from_scores` fills everything from the training items' scores.
    """

    accuracy: float
    confidence: float | None = None
    n: int | None = None
    confidences: np.ndarray | None = field(default=None, repr=False, compare=False)
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("accuracy", "confidence"):
            v = getattr(self, name)
            if v is None and name == "confidence":
                continue
            if not isinstance(v, (int, float, np.integer, np.floating)) or not 0 <= float(v) <= 1:
                raise MetricInputError(f"train {name} must be a number in [0, 1], got {v!r}")
        if self.n is not None and (not isinstance(self.n, (int, np.integer)) or self.n < 1):
            raise MetricInputError(f"train n must be a positive integer, got {self.n!r}")
        if (self.confidences is None) != (self.correct is None):
            raise MetricInputError("train confidences and correct must be given together")
        if self.confidences is not None and len(self.confidences) != len(self.correct):
            raise MetricInputError("train confidences and correct must have the same length")

    @classmethod
    def from_scores(cls, probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
                    from_logits: bool = False) -> TrainingRun:
        p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
        conf, correct = top_label(_normalised(p, m), y)
        return cls(float(correct.mean()), float(conf.mean()), len(y), conf, correct)

    @classmethod
    def coerce(cls, train) -> TrainingRun:
        if isinstance(train, TrainingRun):
            return train
        if isinstance(train, Mapping):
            unknown = set(train) - {"accuracy", "confidence", "n", "confidences", "correct"}
            if "accuracy" not in train or unknown:
                raise MetricInputError("train needs 'accuracy' and may have 'confidence', 'n', "
                                       f"'confidences', 'correct'; got {sorted(train)}")
            return cls(**train)
        raise MetricInputError(f"train must be a TrainingRun or a mapping, got {type(train).__name__}")

    def to_dict(self) -> dict:
        return _clean({"accuracy": self.accuracy, "confidence": self.confidence, "n": self.n,
                       "per_item": self.confidences is not None})


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
        return _clean(asdict(self))


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

    def to_dict(self) -> dict:
        return _clean({
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
            "rules": list(self.rules)})

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
            "| quantity | value | 95% interval |",
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
                      f"{_letter(c.top_option)} (gold share {f(c.top_gold_share)}, excess "
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


def diagnose(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
             n_bins: int = 10, keep_accuracy: bool = False,
             train: TrainingRun | Mapping | None = None, n_boot: int = 1000, n_sim: int = 1000,
             seed: int = 0, from_logits: bool = False) -> Diagnosis:
    """Diagnose held-out scores; see docs/theory.md §5 for every number and the rule.

    `probs` [n, K] (or logits with `from_logits=True`), `labels` [n], `mask` [n, K] for items with
    fewer options. `keep_accuracy`: the user does not accept a change of accuracy. `train`: the
    same model measured on its training items (a `TrainingRun` or a mapping with 'accuracy' and
    optionally 'confidence', 'n', 'confidences', 'correct'). Unmasked rows are renormalised to sum
    to 1 before anything is computed (`check_inputs` lets a sum miss 1 by 1e-6; the bounds hold
    exactly for normalised rows).
    """
    p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
    p = _normalised(p, m)
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
    collapse = _collapse(p, y, m)

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
    if within:
        rules.append(f"R0: ECE {e:.4f} ≤ noise-floor q95 {noise.q95:.4f} (a perfectly calibrated "
                     f"model with these confidences exceeds it in 5% of samples of n = {n}) → "
                     "calibrated within noise: nothing to do.")
    else:
        rules.append(f"R0: ECE {e:.4f} > noise-floor q95 {noise.q95:.4f} (n = {n}; ECE interval "
                     f"[{ece_ci.low:.4f}, {ece_ci.high:.4f}]) → miscalibrated beyond sampling noise.")

    if not within and keep_accuracy:
        r1 = ("R1: accuracy must not move → post-hoc temperature scaling (fitted on a held-out "
              "split; it keeps every argmax, so accuracy is unchanged).")
        if collapse.letter_prior:
            r1 += (" A letter prior is flagged: temperature cannot remove it; a per-option bias "
                   "(vector scaling) or CFT can, but they may change predictions and so accuracy.")
        rules.append(r1 + " R2 below is for information only.")
    regime = "calibrated within noise" if within else "not determined"
    limited = False
    if not within and gap is not None:
        beyond_noise = gap.floor > noise.q95
        real_gap = abs(gap.gap) > GAP_Z * gap_se
        # The fine-tuning-limited reading needs the gap of fitting the training items harder:
        # training accuracy above held-out (G > 0) and an over-confident model (D > 0). (A floor
        # > 0 forces sign(D) = sign(G), docs/theory.md §3; both are checked.)
        positive = gap.gap > 0 and d > 0
        limited = beyond_noise and real_gap and positive
        if limited:
            regime = "fine-tuning-limited"
        elif beyond_noise and real_gap:
            regime = "not determined"
        else:
            regime = "calibratable"
        line = (
            f"R2: generalisation gap G = A_T − A_H = {run.accuracy:.4f} − {acc:.4f} = {gap.gap:+.4f} "
            f"(se {gap_se:.4f}); tracking slack |C_H − A_T| = {gap.tracking_slack:.4f}; floor "
            f"(|G| − slack)₊ = {gap.floor:.4f} {'>' if beyond_noise else '≤'} q95 {noise.q95:.4f}"
            f" and |G| {'>' if real_gap else '≤'} {GAP_Z}·se = {GAP_Z * gap_se:.4f}")
        if beyond_noise and real_gap and not positive:
            line += (f"; but G {'≤' if gap.gap <= 0 else '>'} 0 and mean gap D = {d:+.4f} "
                     f"({direction}): held-out accuracy is not below training accuracy, so this "
                     "is not the gap that fitting the training items harder opens, and fitting "
                     "them less cannot close it (check that A_T was measured on the same model, "
                     "scored the same way) → not determined, treated as calibratable.")
        else:
            line += f" → {regime}" + (" (not calibratable from training items alone)."
                                      if limited else ".")
        rules.append(line)
    elif not within:
        rules.append("R2: no training-run quantities: the regime cannot be read from held-out scores "
                     "alone (Proposition 4: above chance, accuracy alone forces no positive ECE "
                     "floor) → not determined, treated as calibratable.")

    if within:
        rec = "none"
    elif keep_accuracy:
        rec = "temperature"
    elif limited:
        rec = "rcft"
        rules.append(
            "R3: fine-tuning-limited → RCFT (METHOD.md §6) if the fine-tuned model is to be kept "
            "and calibrated from its training items alone: fitting calibration on them (CFT) stops "
            "at the P6 floor, and RCFT manages the accuracy/ECE trade-off (λ).")
        rules.append(
            "R3 (alternative that keeps accuracy): post-hoc temperature scaling fitted on a "
            "held-out split keeps every argmax and, being fitted to outcomes from outside the "
            "training items, is not bound by this floor; choose it (keep_accuracy=True) if such a "
            "split can be spared.")
    else:
        rec = "cft"
        rules.append(f"R3: {regime} → CFT (METHOD.md §5).")

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
            f"{_letter(collapse.top_option)} against a gold share of {collapse.top_gold_share:.1%} "
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
                     keep_accuracy=keep_accuracy, flags=tuple(flags), rules=tuple(rules))


# --------------------------------------------------------------------------------------------
# Critical accuracy (empirical)


@dataclass(frozen=True)
class CriticalAccuracy:
    """a*: the lowest accuracy from which every checkpoint's statistic is above its noise band.

    `last_within` is the highest accuracy below a* at which the statistic was within the band.
    `critical` is None when the most accurate checkpoint is still within its band.
    """

    critical: float | None
    last_within: float | None
    n_points: int

    def to_dict(self) -> dict:
        return _clean(asdict(self))


def critical_accuracy(accuracy: Sequence[float], statistic: Sequence[float],
                      band: Sequence[float]) -> CriticalAccuracy:
    """Empirical critical accuracy over checkpoints (docs/theory.md §4).

    For checkpoints sorted by held-out accuracy, a* is the smallest accuracy a_j such that the
    statistic (held-out ECE of calibration-aware checkpoints, or the P6 floor) exceeds its noise
    band (the noise-floor q95) at a_j and at every more accurate checkpoint.
    """
    a = np.asarray(accuracy, dtype=np.float64)
    s = np.asarray(statistic, dtype=np.float64)
    q = np.asarray(band, dtype=np.float64)
    if a.ndim != 1 or a.shape != s.shape or a.shape != q.shape or a.size == 0:
        raise MetricInputError("accuracy, statistic and band must be 1-D of the same non-zero length")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(s)) and np.all(np.isfinite(q))):
        raise MetricInputError("accuracy, statistic and band must be finite")
    order = np.argsort(a, kind="stable")
    a, out = a[order], (s > q)[order]
    if not out[-1]:
        return CriticalAccuracy(None, float(a[-1]), a.size)
    inside = np.flatnonzero(~out)
    start = 0 if inside.size == 0 else int(inside[-1]) + 1
    return CriticalAccuracy(float(a[start]), None if inside.size == 0 else float(a[inside[-1]]),
                            a.size)
