"""Is the gap a letter/option prior? Collapse measures of a score set (docs/theory.md §5).

A per-run measure: `evaluate` puts it in every metrics.json, and `diagnose` reads its
`letter_prior` verdict."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binom

from ..integrity import json_ready
from .validation import check_inputs, normalised, top_label

LETTER_PRIOR_MIN_SHARE = 0.5  # most predictions on one option ...
LETTER_PRIOR_MIN_EXCESS = 0.10  # ... at least 10 points more than that option's gold share ...
LETTER_PRIOR_ALPHA = 0.05     # ... and the excess significant (exact McNemar, Bonferroni × K)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def letter(j: int) -> str:
    """The option letter of position j (its number beyond Z)."""
    return LETTERS[j] if 0 <= j < len(LETTERS) else str(j)


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
    (the per-item collapse that preference optimisation is said to cause, docs/alignment.md).
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
        return json_ready(asdict(self))


def _norm_entropy(share: np.ndarray, k: int) -> float:
    s = share[share > 0]
    return float(-(s * np.log(s)).sum() / math.log(k)) if k > 1 else 0.0


def collapse_measures(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
                      from_logits: bool = False) -> CollapseMeasures:
    """Collapse measures of a score set; `letter_prior` applies the rule of docs/theory.md §5."""
    p, y, m = check_inputs(probs, labels, mask, from_logits=from_logits)
    return collapse_normalised(normalised(p, m), y, m)


def collapse_normalised(p: np.ndarray, y: np.ndarray, m: np.ndarray) -> CollapseMeasures:
    """`collapse_measures` on rows already checked and renormalised (as diagnose holds them)."""
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
