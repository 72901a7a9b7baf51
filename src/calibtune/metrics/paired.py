"""Paired comparison of two score sets on the same items (e.g. before vs after fine-tuning).

Both sets are scored on the same questions, so their errors are correlated: comparing two
separate bootstrap intervals wastes that pairing and overstates the uncertainty of a difference.
Here every bootstrap replicate resamples the *items* once and recomputes both sets' metrics on
that one resample, so each Δ interval reflects the pairing. Deltas are always B − A.

References: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (paired bootstrap);
McNemar, "Note on the sampling error of the difference between correlated proportions",
Psychometrika 1947 (exact test on discordant pairs).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..defaults import N_BINS, N_BOOT
from ..errors import ConfigError, DataError
from .binning import bin_edges, bin_statistics, calibration_error_from_table
from .calibration import classwise_ece
from .proper import PROB_FLOOR
from .uncertainty import Interval
from .validation import MetricInputError, check_inputs, log_softmax, top_label

DELTA_METRICS = ("accuracy", "ece", "cw_ece", "brier", "nll")


def align_items(ids_a, ids_b, intersect: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (idx_a, idx_b) with ids_a[idx_a] == ids_b[idx_b], in the order of `ids_a`.

    Different item sets are refused (ConfigError) unless `intersect=True`, which keeps the shared
    items only; duplicate ids within one set are refused because pairing would be ambiguous.
    """
    a = [str(i) for i in np.asarray(ids_a).ravel()]
    b = [str(i) for i in np.asarray(ids_b).ravel()]
    for name, ids in (("A", a), ("B", b)):
        if len(set(ids)) != len(ids):
            uniq, counts = np.unique(ids, return_counts=True)
            dup = str(uniq[counts > 1][0])
            raise ConfigError(f"score set {name} holds duplicate item id {dup!r}; ids must be unique "
                              "to pair items")
    pos_b = {i: k for k, i in enumerate(b)}
    shared = [i for i in a if i in pos_b]
    if len(shared) == 0 or (not intersect and not (len(shared) == len(a) == len(b))):
        hint = "pass intersect=True to compare the shared items only" if shared and not intersect \
            else "nothing to compare"
        raise ConfigError(f"the score sets hold different items: A has {len(a)}, B has {len(b)}, "
                          f"{len(shared)} shared; {hint}")
    pos_a = {i: k for k, i in enumerate(a)}
    return (np.array([pos_a[i] for i in shared], dtype=np.int64),
            np.array([pos_b[i] for i in shared], dtype=np.int64))


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on correctness: only items where exactly one set is right count."""

    only_a_correct: int
    only_b_correct: int
    n_discordant: int
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_exact(correct_a, correct_b) -> McNemarResult:
    """Two-sided exact binomial test of the discordant pairs against Binomial(n_disc, 1/2).

    With no discordant pair the two sets are indistinguishable and p = 1.
    Reference: McNemar 1947.
    """
    from scipy.stats import binomtest

    ca = np.asarray(correct_a, dtype=bool)
    cb = np.asarray(correct_b, dtype=bool)
    if ca.shape != cb.shape or ca.ndim != 1:
        raise MetricInputError(f"correctness arrays must be 1-D and the same length, got "
                               f"{ca.shape} and {cb.shape}")
    b, c = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(b, c, b + c, min(1.0, p))


@dataclass(frozen=True)
class PairedComparison:
    """Metrics of A and B on the same items, paired-bootstrap intervals of B − A, McNemar."""

    n: int
    metrics_a: dict[str, float]
    metrics_b: dict[str, float]
    deltas: dict[str, Interval]
    changed_predictions: float
    n_changed: int
    mcnemar: McNemarResult
    n_bins: int
    n_boot: int
    alpha: float
    seed: int

    def to_dict(self) -> dict:
        return {"n": self.n, "metrics_a": dict(self.metrics_a), "metrics_b": dict(self.metrics_b),
                "deltas": {k: v.to_dict() for k, v in self.deltas.items()},
                "delta_convention": "B - A",
                "changed_predictions": self.changed_predictions, "n_changed": self.n_changed,
                "mcnemar": self.mcnemar.to_dict(), "n_bins": self.n_bins, "n_boot": self.n_boot,
                "alpha": self.alpha, "seed": self.seed}


def _item_nll(x: np.ndarray, p: np.ndarray, y: np.ndarray, m: np.ndarray, from_logits: bool
              ) -> np.ndarray:
    rows = np.arange(len(y))
    if from_logits:  # exact, as proper.nll does from logits
        return -log_softmax(x, m)[rows, y]
    return -np.log(np.maximum(p[rows, y], PROB_FLOOR))


def _per_set(x, labels, mask, from_logits: bool) -> dict[str, np.ndarray]:
    p, y, m = check_inputs(x, labels, mask, from_logits=from_logits)
    conf, correct = top_label(p, y)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return {"p": p, "y": y, "m": m, "pred": p.argmax(axis=1), "conf": conf, "correct": correct,
            "brier": np.sum(np.where(m, (p - onehot) ** 2, 0.0), axis=1),
            "nll": _item_nll(np.asarray(x, dtype=np.float64), p, y, m, from_logits)}


def _metrics(s: dict[str, np.ndarray], idx: np.ndarray | None, n_bins: int) -> dict[str, float]:
    """The five compared metrics of one set on the rows `idx` (all rows when None)."""
    sel = slice(None) if idx is None else idx
    conf, correct = s["conf"][sel], s["correct"][sel]
    table = bin_statistics(conf, correct, bin_edges(None, n_bins, "uniform"))
    return {"accuracy": float(correct.mean()),
            "ece": calibration_error_from_table(table, "l1"),
            "cw_ece": classwise_ece(s["p"][sel], s["y"][sel], n_bins, s["m"][sel]),
            "brier": float(s["brier"][sel].mean()), "nll": float(s["nll"][sel].mean())}


def paired_compare(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray,
                   mask: np.ndarray | None = None, *, from_logits: bool = False, n_bins: int = N_BINS,
                   n_boot: int = N_BOOT, alpha: float = 0.05, seed: int = 0) -> PairedComparison:
    """Compare B with A on the same rows: Δ = B − A of accuracy, ECE, cw-ECE, Brier and NLL.

    `scores_a`/`scores_b` are probabilities [n, K] (or logits with `from_logits=True`, which
    makes NLL exact) of the same items in the same order, sharing `labels` and `mask`. Each of
    the `n_boot` replicates draws one set of item indices (seeded) used for A and B alike; the
    interval is the percentile interval of the replicate deltas, as `bootstrap_ci`.
    Reference: Efron & Tibshirani 1993; McNemar 1947.
    """
    if not 0 < alpha < 1:
        raise MetricInputError(f"alpha must be in (0, 1), got {alpha}")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise MetricInputError(f"n_boot must be a positive integer, got {n_boot!r}")
    if np.shape(scores_a) != np.shape(scores_b):
        raise MetricInputError(f"score sets differ in shape: {np.shape(scores_a)} vs "
                               f"{np.shape(scores_b)}")
    sa = _per_set(scores_a, labels, mask, from_logits)
    sb = _per_set(scores_b, labels, mask, from_logits)
    n = len(sa["y"])
    ma, mb = _metrics(sa, None, n_bins), _metrics(sb, None, n_bins)
    rng = np.random.default_rng(seed)
    reps = {k: np.empty(n_boot) for k in DELTA_METRICS}
    for r in range(n_boot):
        idx = rng.integers(0, n, size=n)
        ra, rb = _metrics(sa, idx, n_bins), _metrics(sb, idx, n_bins)
        for k in DELTA_METRICS:
            reps[k][r] = rb[k] - ra[k]
    deltas = {}
    for k in DELTA_METRICS:
        stats = reps[k][np.isfinite(reps[k])]
        low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
        deltas[k] = Interval(mb[k] - ma[k], float(low), float(high),
                             float(stats.std(ddof=1)) if stats.size > 1 else 0.0, alpha, n_boot)
    changed = sa["pred"] != sb["pred"]
    return PairedComparison(n=n, metrics_a=ma, metrics_b=mb, deltas=deltas,
                            changed_predictions=float(changed.mean()), n_changed=int(changed.sum()),
                            mcnemar=mcnemar_exact(sa["correct"], sb["correct"]), n_bins=n_bins,
                            n_boot=int(n_boot), alpha=alpha, seed=seed)


def compare_scores(a, b, *, intersect: bool = False, n_bins: int = N_BINS, n_boot: int = N_BOOT,
                   alpha: float = 0.05, seed: int = 0) -> PairedComparison:
    """`paired_compare` of two `OptionScores`, paired by item id (see `align_items`).

    Uses the logits (exact NLL). The shared items must agree on gold label and option mask,
    otherwise they are not the same items and a DataError names the first that differs.
    """
    ia, ib = align_items(a.ids, b.ids, intersect)
    k = max(a.mask.shape[1], b.mask.shape[1])  # the sets may be padded to different K_max
    ka, ma = _pad(a.logits[ia], k), _pad(a.mask[ia], k)
    kb, mb = _pad(b.logits[ib], k), _pad(b.mask[ib], k)
    la, lb = a.labels[ia], b.labels[ib]
    bad = (la != lb) | (ma != mb).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = (f"gold label {la[i]} vs {lb[i]}" if la[i] != lb[i]
                else f"{int(ma[i].sum())} vs {int(mb[i].sum())} options")
        raise DataError(f"item {a.ids[ia][i]!r} differs between the score sets ({what}); "
                        f"{int(bad.sum())} shared items disagree")
    return paired_compare(ka, kb, la, ma, from_logits=True, n_bins=n_bins, n_boot=n_boot,
                          alpha=alpha, seed=seed)


def _pad(x: np.ndarray, k: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, k - x.shape[1])))
