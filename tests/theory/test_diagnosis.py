"""diagnose(): every rule of docs/theory.md §5 on synthetic scores on either side, and the edges."""
from __future__ import annotations

import json

import numpy as np
import pytest

from calibtune.metrics import MetricInputError, classwise_ece, ece
from calibtune.theory import (TrainingRun, collapse_measures, critical_accuracy, diagnose,
                              floor_test, generalisation_gap_floor)

FAST = dict(n_boot=100, n_sim=400)


def make_scores(conf, correct, k: int, rng=None, pred=None):
    """Probabilities [n, k] whose top option has probability conf_i, right iff correct_i."""
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct).astype(bool)
    n = conf.size
    rng = rng or np.random.default_rng(0)
    pred = rng.integers(0, k, n) if pred is None else np.broadcast_to(pred, (n,)).copy()
    pred = np.where(np.isclose(conf, 1.0 / k), 0, pred)
    p = np.repeat(((1.0 - conf) / (k - 1))[:, None], k, axis=1)
    p[np.arange(n), pred] = conf
    wrong = (pred + 1 + rng.integers(0, k - 1, n)) % k
    return p, np.where(correct, pred, wrong)


def scores(n=1000, k=4, shift=0.0, seed=0, low=0.3):
    """Confidences U[low, 1]; correct ~ Bernoulli(conf − shift): calibrated when shift = 0."""
    rng = np.random.default_rng(seed)
    conf = low + (1 - low) * rng.random(n)
    correct = rng.random(n) < np.clip(conf - shift, 0, 1)
    return make_scores(conf, correct, k, rng)


def check_common(d):
    saved = json.loads(json.dumps(d.to_dict(), allow_nan=False))  # strict JSON, read back
    assert (saved["recommendation"], saved["regime"], saved["gap_kind"]) == \
        (d.recommendation, d.regime, d.gap_kind)
    assert saved["rules"] == list(d.rules) and saved["flags"] == list(d.flags)
    assert saved["ece"]["estimate"] == pytest.approx(d.ece.estimate, abs=1e-12)
    assert saved["accuracy"]["estimate"] == pytest.approx(d.accuracy.estimate, abs=1e-12)
    assert [b["name"] for b in saved["bounds"]] == [b.name for b in d.bounds]
    assert saved["within_noise"] == d.within_noise and saved["n"] == d.n
    md = d.to_markdown()
    assert f"Recommendation: {d.recommendation}" in md and "Rules applied" in md
    assert all(f"- {r}" in md for r in d.rules) and all(f"- {f}" in md for f in d.flags)
    assert f"| ECE | {d.ece.estimate:.3f} |" in md
    assert all(b.holds for b in d.bounds), [b.name for b in d.bounds if not b.holds]
    assert d.recommendation in ("none", "temperature", "cft", "rcft")
    assert d.rules and d.rules[0].startswith("R0")


def test_numbers_match_the_metrics():
    p, y = scores(shift=0.1)
    d = diagnose(p, y, **FAST)
    assert d.ece.estimate == pytest.approx(ece(p, y), abs=1e-12)
    assert d.cw_ece.estimate == pytest.approx(classwise_ece(p, y), abs=1e-12)
    assert d.accuracy.estimate == pytest.approx(np.mean(p.argmax(1) == y))
    assert d.mean_confidence == pytest.approx(p.max(1).mean())
    assert d.ece.low <= d.ece.estimate <= d.ece.high
    assert d.over + d.under == pytest.approx(d.ece.estimate, abs=1e-12)
    assert d.noise.n_sim == 400 and d.ece.n_boot == 100
    check_common(d)


def test_r0_calibrated_within_noise():
    p, y = scores(shift=0.0, seed=1)
    d = diagnose(p, y, **FAST)
    assert d.ece.estimate <= d.noise.q95
    assert d.within_noise and d.recommendation == "none"
    assert d.regime == "not distinguishable from calibrated" and d.gap_kind == "within noise"
    assert "not distinguishable from calibrated at this n (power" in d.rules[0]
    # power rises with the gap; at n = 1000 a 0.10 over-confidence is found nearly always
    (g1, p1), (g2, p2) = d.r0_power
    assert (g1, g2) == (0.05, 0.10) and 0.5 < p1 < p2 and p2 > 0.95
    # accuracy constraint and training data change nothing when there is nothing to fix
    d2 = diagnose(p, y, keep_accuracy=True, train={"accuracy": 0.99}, **FAST)
    assert d2.recommendation == "none" and len(d2.rules) == 1
    check_common(d)


def test_r0_edge_sits_at_the_noise_q95():
    """Same confidences, outcomes moved one by one: the call flips where ECE crosses q95."""
    rng = np.random.default_rng(2)
    conf = 0.3 + 0.7 * rng.random(400)
    correct = rng.random(400) < conf
    d0 = diagnose(*make_scores(conf, correct, 4, np.random.default_rng(0)), **FAST)
    calls = []
    for flip in range(0, 60, 4):  # turn `flip` correct items wrong → over-confidence grows
        c = correct.copy()
        c[np.flatnonzero(c)[:flip]] = False
        d = diagnose(*make_scores(conf, c, 4, np.random.default_rng(0)), **FAST)
        assert d.noise.q95 == d0.noise.q95          # the floor depends on confidences only
        calls.append((d.ece.estimate <= d.noise.q95, d.within_noise))
    assert all(a == b for a, b in calls)
    assert calls[0][0] and not calls[-1][0]         # both sides of the edge are reached


def test_r1_keep_accuracy_gives_temperature():
    p, y = scores(shift=0.15)
    d = diagnose(p, y, keep_accuracy=True, **FAST)
    assert d.recommendation == "temperature" and d.direction == "overconfident"
    assert any(r.startswith("R1") for r in d.rules)
    d = diagnose(p, y, keep_accuracy=True, train={"accuracy": 0.99, "confidence": 0.9,
                                                  "n": 1000, "same_distribution": True}, **FAST)
    assert d.recommendation == "temperature" and d.regime == "fine-tuning-limited"
    check_common(d)


def test_no_training_run_defaults_to_cft():
    p, y = scores(shift=0.15)
    d = diagnose(p, y, **FAST)
    assert d.recommendation == "cft" and d.regime == "not determined"
    assert d.gap_kind == "spread overconfidence" and d.gap is None
    assert any("Proposition 4" in r for r in d.rules)
    check_common(d)


SAME = {"same_distribution": True}


def test_r2_is_the_floor_test_on_either_side_of_its_edge():
    """The verdict is `floor_test`'s: scan A_T through the edge where the lower 95% bound of the
    floor crosses 0; the regime flips exactly there, and the P6 numbers are the bounds module's."""
    p, y = scores(n=1500, shift=0.2, seed=3)
    d = diagnose(p, y, **FAST)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    seen = set()
    for a_t in np.linspace(d.accuracy.estimate, 0.99, 40):
        t = floor_test(conf, correct, float(a_t), 300)
        dd = diagnose(p, y, train={"accuracy": float(a_t), "n": 300, **SAME}, **FAST)
        assert dd.regime_test.lower == pytest.approx(t.lower, abs=1e-12)
        expected = "fine-tuning-limited" if t.reject else "no fine-tuning floor detected"
        assert dd.regime == expected and (dd.recommendation == "rcft") == t.reject
        seen.add(t.reject)
    assert seen == {True, False}
    # the whole mean gap lies between A_H and A_T: floor = C_H − A_H
    dd = diagnose(p, y, train={"accuracy": 0.99, "confidence": 0.97, "n": 3000, **SAME}, **FAST)
    assert dd.gap.floor == pytest.approx(dd.mean_gap, abs=1e-12)
    assert dd.gap.fit_slack == pytest.approx(-0.02) and dd.regime == "fine-tuning-limited"
    check_common(dd)
    # no generalisation gap (training items as miscalibrated as held-out ones): no floor
    dd = diagnose(p, y, train={"accuracy": d.accuracy.estimate + 0.005, "n": 300, **SAME}, **FAST)
    assert dd.gap.floor == 0.0 and dd.regime == "no fine-tuning floor detected"


def test_r2_fine_tuning_limited_needs_a_positive_gap_and_overconfidence():
    """Review reproducer: A_T = 0.6 below held-out accuracy ≈ 0.80 with confidence ≈ 0.65
    (under-confident): the P6 floor is real but G < 0, so the regime is not fine-tuning-limited and
    RCFT is not recommended. The mirror image (G > 0, over-confident) is fine-tuning-limited."""
    rng = np.random.default_rng(14)
    conf = 0.55 + 0.2 * rng.random(1000)
    p, y = make_scores(conf, rng.random(1000) < 0.80, 4, rng)
    d = diagnose(p, y, train={"accuracy": 0.6, "n": 1000, **SAME}, **FAST)
    assert d.direction == "underconfident" and d.gap.gap < -1.96 * d.gap_se
    assert d.gap.floor > d.noise.q95
    assert d.regime == "no fine-tuning floor detected" and d.recommendation == "cft"
    assert not d.regime_test.reject and d.regime_test.mean_gap < 0
    check_common(d)
    # mirror: held-out accuracy ≈ 0.55 under confidence ≈ 0.65, training accuracy 0.8
    p, y = make_scores(conf, rng.random(1000) < 0.55, 4, rng)
    d = diagnose(p, y, train={"accuracy": 0.8, "n": 1000, **SAME}, **FAST)
    assert d.direction == "overconfident" and d.gap.gap > 1.96 * d.gap_se
    assert d.gap.floor > d.noise.q95 and d.mean_gap >= d.gap.floor
    assert d.regime == "fine-tuning-limited" and d.recommendation == "rcft"
    # both ways out are printed: RCFT, and temperature on a held-out split
    r3 = [r for r in d.rules if r.startswith("R3")]
    assert len(r3) == 2 and "RCFT" in r3[0] and "temperature" in r3[1]
    assert "heuristic" in r3[0] and "attributable to its generalisation gap" in r3[0]
    assert "not calibratable" not in " ".join(d.rules) and "stops at" not in " ".join(d.rules)
    assert "accuracy-keeping alternative: temperature" in d.to_markdown()
    check_common(d)


def test_r2_counts_the_training_accuracys_sampling_error():
    """Floor well above q95, but A_T measured on 5 items: the test does not reject; on 500 it
    does. Without n, A_T's error is unknown and no verdict is given."""
    rng = np.random.default_rng(4)
    conf = np.full(60, 0.97)                     # near-certain confidences: q95 tiny
    correct = rng.random(60) < 0.8
    p, y = make_scores(conf, correct, 4, rng)
    train = {"accuracy": 0.97, **SAME}           # = C_H: the floor is the whole gap G ≈ 0.25
    d = diagnose(p, y, train=dict(train, n=500), **FAST)
    assert d.gap.floor > d.noise.q95 and d.regime == "fine-tuning-limited"
    d = diagnose(p, y, train=dict(train, n=5), **FAST)
    assert d.gap.floor > d.noise.q95 and d.regime == "no fine-tuning floor detected"
    assert d.recommendation == "cft"
    d = diagnose(p, y, train=train, **FAST)
    assert d.regime == "not determined" and d.regime_test is None
    assert any("number of training items measured is unknown" in r for r in d.rules)


def test_easier_training_items_are_not_read_as_memorisation():
    """A model never fine-tuned whose training items are easier (A_T 0.80 against A_H 0.45,
    C_H 0.75): with G₀ measured (the same gap before), or with the sets marked as different,
    or unknown, it is not fine-tuning-limited; only the (false) claim that the sets are
    exchangeable would make it so."""
    rng = np.random.default_rng(21)
    n = 600
    conf = np.clip(0.75 + 0.1 * rng.standard_normal(n), 0.3, 1.0)
    correct = rng.random(n) < 0.45 * conf / conf.mean()
    p, y = make_scores(conf, correct, 4, rng)
    a_h = float(np.mean(p.argmax(1) == y))
    base = {"accuracy": 0.80, "confidence": 0.80, "n": 300}
    measured = diagnose(p, y, train=dict(base, accuracy_before=0.80, n_before=300,
                                         heldout_accuracy_before=a_h), **FAST)
    assert measured.regime == "no fine-tuning floor detected" and measured.recommendation != "rcft"
    assert measured.regime_test.baseline == pytest.approx(0.80 - a_h)
    assert any("G₀ = " in r and "measured before fine-tuning" in r for r in measured.rules)
    for same in (False, None):
        d = diagnose(p, y, train=dict(base, same_distribution=same,
                                      item_sets="MMLU train vs test subjects"), **FAST)
        assert d.regime == "not determined" and d.recommendation != "rcft"
        assert any(f.startswith("item sets:") for f in d.flags)
        assert any("MMLU train vs test subjects" in f for f in d.flags) == (same is False)
    wrong = diagnose(p, y, train=dict(base, same_distribution=True), **FAST)
    assert wrong.regime == "fine-tuning-limited"


def test_letter_prior_on_either_side():
    rng = np.random.default_rng(5)
    n, k = 800, 4
    conf = 0.6 + 0.4 * rng.random(n)
    gold = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.8, 0, gold)      # 80% of answers are "A"
    p = np.repeat(((1 - conf) / (k - 1))[:, None], k, axis=1)
    p[np.arange(n), pred] = conf
    c = collapse_measures(p, gold)
    assert c.top_option == 0 and c.letter_prior
    assert c.top_pred_share > 0.8 and c.top_gold_share == pytest.approx(np.mean(gold == 0))
    assert c.pred_entropy < c.gold_entropy
    assert c.wrong_share_on_top > 0.9
    d = diagnose(p, gold, **FAST)
    assert d.gap_kind == "letter prior" and any(f.startswith("letter prior") for f in d.flags)
    check_common(d)
    # the same predictions against gold labels that are mostly "A" too: no prior
    gold2 = np.where(rng.random(n) < 0.8, 0, gold)
    assert not collapse_measures(p, gold2).letter_prior
    # spread predictions: no prior
    p3, y3 = scores(shift=0.2, seed=6)
    c3 = collapse_measures(p3, y3)
    assert not c3.letter_prior and c3.pred_entropy > 0.95


def test_letter_prior_thresholds_k2():
    """K = 2, balanced gold: 60% predictions on A is a prior (excess 0.10), 59% is not."""
    n = 2000
    gold = np.array([0, 1] * (n // 2))
    for share, expected in [(0.60, True), (0.59, False)]:
        pred = gold.copy()
        # move predictions of gold-B items to A until A holds `share` of the predictions
        move = np.flatnonzero(gold == 1)[: int(round((share - 0.5) * n))]
        pred[move] = 0
        p = np.where(np.arange(2)[None, :] == pred[:, None], 0.9, 0.1)
        c = collapse_measures(p, gold)
        assert c.excess == pytest.approx(share - 0.5)
        assert c.letter_prior is expected


def test_r1_mentions_a_letter_prior_that_temperature_cannot_remove():
    rng = np.random.default_rng(15)
    n, k = 800, 4
    gold = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.8, 0, gold)
    p = np.full((n, k), 0.05)
    p[np.arange(n), pred] = 0.85
    d = diagnose(p, gold, keep_accuracy=True, **FAST)
    assert d.recommendation == "temperature" and d.collapse.letter_prior
    r1 = next(r for r in d.rules if r.startswith("R1"))
    assert "letter prior" in r1 and "vector scaling" in r1 and "CFT" in r1
    p2, y2 = scores(shift=0.15)
    r1 = next(r for r in diagnose(p2, y2, keep_accuracy=True, **FAST).rules if r.startswith("R1"))
    assert "letter prior" not in r1


def test_collapse_on_one_item_is_not_significant():
    c = collapse_measures(np.array([[0.9, 0.1]]), np.array([1]))
    assert c.top_pred_share == 1.0 and c.excess == 1.0
    assert c.p_value >= 0.5 and not c.letter_prior


def test_underconfident_and_mixed_sign():
    rng = np.random.default_rng(7)
    conf = 0.3 + 0.3 * rng.random(1000)
    p, y = make_scores(conf, rng.random(1000) < conf + 0.3, 4, rng)
    d = diagnose(p, y, **FAST)
    assert d.direction == "underconfident" and d.gap_kind == "spread underconfidence"
    assert d.recommendation == "cft"
    # over-confident high bin, under-confident low bin, cancelling on average
    conf = np.r_[np.full(500, 0.35), np.full(500, 0.95)]
    correct = np.r_[np.arange(500) < 325, np.arange(500) < 325]   # 0.65 vs 0.35, 0.65 vs 0.95
    p, y = make_scores(conf, correct, 4, rng)
    d = diagnose(p, y, **FAST)
    assert d.direction == "no significant direction"
    assert d.gap_kind.startswith("mixed-sign") and not d.within_noise
    assert d.over == pytest.approx(0.15) and d.under == pytest.approx(0.15)
    assert d.mean_gap == pytest.approx(0.0, abs=1e-12)
    check_common(d)


# ---------------------------------------------------------------------------- edges


def test_edge_one_item():
    d = diagnose(np.array([[0.9, 0.1]]), np.array([0]), **FAST)
    assert d.n == 1 and d.ece.estimate == pytest.approx(0.1) and d.within_noise
    assert d.recommendation == "none"
    d = diagnose(np.array([[0.9, 0.1]]), np.array([1]), train={"accuracy": 1.0}, **FAST)
    assert d.accuracy.estimate == 0.0 and d.ece.estimate == pytest.approx(0.9)
    assert d.noise.q95 == pytest.approx(0.9) and d.within_noise   # one item tells nothing
    check_common(d)


def test_edge_k2_all_in_one_bin():
    rng = np.random.default_rng(8)
    n = 200
    conf = 0.9 + 0.09 * rng.random(n)          # every confidence in [0.9, 1.0)
    p, y = make_scores(conf, rng.random(n) < 0.6, 2, rng)
    d = diagnose(p, y, **FAST)
    mean_gap = next(b for b in d.bounds if b.name.startswith("P1"))
    assert mean_gap.value == pytest.approx(d.ece.estimate, abs=1e-12)   # P1 is exact in one bin
    assert d.noise_bounds.n_nonempty == 1 and d.recommendation == "cft"
    check_common(d)


def test_edge_accuracy_zero_and_one():
    n, k = 50, 4
    p = np.full((n, k), 0.25)                   # uniform rows: argmax option A, never right
    y = np.full(n, 2)
    d = diagnose(p, y, **FAST)
    assert d.accuracy.estimate == 0.0 and d.ece.estimate == pytest.approx(0.25)
    chance = next(b for b in d.bounds if b.name.startswith("P2"))
    assert chance.value == pytest.approx(0.25)                          # the floor is attained
    assert any(f.startswith("below chance") for f in d.flags)
    assert d.collapse.letter_prior and d.collapse.wrong_share_on_top == 1.0
    check_common(d)
    p, y = make_scores(np.full(n, 0.6), np.ones(n, bool), k)
    d = diagnose(p, y, **FAST)
    assert d.accuracy.estimate == 1.0 and d.ece.estimate == pytest.approx(0.4)
    assert d.direction == "underconfident" and d.collapse.wrong_share_on_top is None
    check_common(d)


def test_rows_off_by_the_accepted_tolerance_are_renormalised():
    """Review reproducer: rows (0.4999996, 0.4999996) pass check_inputs (sum off by 8e-7); the raw
    ECE 0.4999996 is below P2 = P4 = 0.5. diagnose renormalises, so no bound check fails."""
    n = 50
    p = np.full((n, 2), 0.4999996)
    y = np.ones(n, int)                           # argmax option A: all wrong
    assert ece(p, y) == pytest.approx(0.4999996, abs=1e-12)
    d = diagnose(p, y, **FAST)
    assert d.ece.estimate == pytest.approx(0.5, abs=1e-12)
    assert d.mean_confidence == pytest.approx(0.5, abs=1e-12)
    assert not any(f.startswith("a bound check failed") for f in d.flags)
    for name in ("P2", "C3", "P4"):
        b = next(b for b in d.bounds if b.name.startswith(name))
        assert b.value == pytest.approx(0.5, abs=1e-12) and b.holds
    check_common(d)
    # masked options stay 0; the argmax never moves
    mask = np.array([[True, True, False]] * n)
    p3 = np.c_[p, np.zeros(n)]
    d3 = diagnose(p3, y, mask, **FAST)
    assert d3.ece.estimate == pytest.approx(0.5, abs=1e-12) and d3.accuracy.estimate == 0.0
    check_common(d3)
    run = TrainingRun.from_scores(p, y)
    assert run.confidence == pytest.approx(0.5, abs=1e-12)


def test_logits_and_mixed_option_counts():
    rng = np.random.default_rng(9)
    n, k = 300, 5
    logits = 3 * rng.normal(size=(n, k))
    mask = np.ones((n, k), bool)
    mask[: n // 2, 4] = False                   # half the items have 4 options
    y = np.where(mask[:, 4], rng.integers(0, 5, n), rng.integers(0, 4, n))
    d = diagnose(logits, y, mask, from_logits=True, **FAST)
    assert d.n_options == 5
    assert d.ece.estimate == pytest.approx(ece(logits, y, mask=mask, from_logits=True), abs=1e-12)
    check_common(d)


def test_training_run_inputs():
    p, y = scores(shift=0.2, seed=10)
    pt, yt = scores(n=500, shift=0.0, seed=11, low=0.8)
    run = TrainingRun.from_scores(pt, yt)
    assert run.n == 500 and run.confidences.shape == (500,)
    d = diagnose(p, y, train=run, **FAST)
    names = [b.name for b in d.bounds]
    assert "P6 generalisation gap" in names and "P7 binned generalisation gap" in names
    assert d.to_dict()["train"] == {"accuracy": run.accuracy, "confidence": run.confidence,
                                    "n": 500, "per_item": True, "accuracy_before": None,
                                    "n_before": None, "heldout_accuracy_before": None,
                                    "same_distribution": None, "item_sets": None}
    check_common(d)
    with pytest.raises(MetricInputError, match="accuracy"):
        diagnose(p, y, train={"confidence": 0.9}, **FAST)
    with pytest.raises(MetricInputError, match="accuracy"):
        diagnose(p, y, train={"accuracy": 0.9, "acc": 1}, **FAST)
    with pytest.raises(MetricInputError):
        diagnose(p, y, train={"accuracy": 1.5}, **FAST)
    with pytest.raises(MetricInputError):
        diagnose(p, y, train=0.9, **FAST)
    for bad in [dict(accuracy=0.9, n=0), dict(accuracy=0.9, confidence=1.2),
                dict(accuracy=0.9, confidences=np.ones(3))]:
        with pytest.raises(MetricInputError, match="train"):
            TrainingRun(**bad)


def test_p6_agrees_with_the_bounds_module():
    p, y = scores(shift=0.2, seed=12)
    d = diagnose(p, y, train={"accuracy": 0.95, "confidence": 0.93}, **FAST)
    g = generalisation_gap_floor(0.95, d.accuracy.estimate, d.mean_confidence, 0.93)
    assert d.gap == g


def test_bound_checks_hold_on_random_score_sets():
    rng = np.random.default_rng(13)
    for _ in range(8):
        n, k = int(rng.integers(1, 300)), int(rng.integers(2, 6))
        logits = rng.normal(size=(n, k)) * rng.uniform(0.1, 5)
        y = rng.integers(0, k, n)
        d = diagnose(logits, y, from_logits=True, n_boot=30, n_sim=200,
                     train={"accuracy": float(rng.random()), "confidence": float(rng.random())})
        check_common(d)


def test_critical_accuracy():
    acc = [0.60, 0.65, 0.70, 0.72, 0.74, 0.75]
    band = [0.04] * 6
    assert critical_accuracy(acc, [0.01, 0.02, 0.05, 0.03, 0.06, 0.09], band).critical == 0.74
    r = critical_accuracy(acc[::-1], [0.01, 0.02, 0.05, 0.03, 0.06, 0.09][::-1], band[::-1])
    assert (r.critical, r.last_within, r.n_points) == (0.74, 0.72, 6)   # order does not matter
    r = critical_accuracy(acc, [0.01] * 6, band)
    assert r.critical is None and r.last_within == 0.75
    r = critical_accuracy(acc, [0.1] * 6, band)
    assert r.critical == 0.60 and r.last_within is None
    with pytest.raises(MetricInputError):
        critical_accuracy([0.5], [0.1, 0.2], [0.1])


def test_option_entropy_is_the_mean_normalised_entropy_of_each_items_options():
    """Cross-checked with scipy.stats.entropy row by row, with a ragged mask; edges: uniform
    rows give 1, one-hot rows 0, a row with an exact zero is finite."""
    from scipy.stats import entropy

    rng = np.random.default_rng(3)
    k_i = np.array([4, 3, 2, 4, 2, 3])
    mask = np.arange(4)[None, :] < k_i[:, None]
    p = np.where(mask, rng.dirichlet(np.ones(4), size=6), 0.0)
    p[3] = [0.0, 0.5, 0.5, 0.0]  # exact zeros inside the valid options
    p = p / p.sum(axis=1, keepdims=True)
    y = np.zeros(6, dtype=int)
    expected = np.mean([entropy(p[i, :k]) / np.log(k) for i, k in enumerate(k_i)])
    c = collapse_measures(p, y, mask)
    assert c.option_entropy == pytest.approx(expected, abs=1e-12)
    assert collapse_measures(np.full((5, 4), 0.25), y[:5]).option_entropy == pytest.approx(1.0)
    assert collapse_measures(np.eye(4)[[0, 1, 2, 0]], y[:4]).option_entropy == 0.0


def _sharpen(power: float):
    """A `recalibrate` stub: every row raised to `power` and renormalised (fitted on nothing)."""
    def fit(p, y, m):
        def transform(q, mq):
            r = np.where(mq, q, 0.0) ** power
            return r / r.sum(axis=1, keepdims=True)
        return transform, {"temperature": 1 / power}
    return fit


def test_temperature_is_recommended_only_when_scaling_reaches_the_noise_band():
    """A cross-fitted scaling that lowers the ECE but leaves it above the result's noise band
    does not replace fine-tuning; one that brings it inside the band does."""
    from calibtune.workflows.diagnose import temperature_fit

    p, y = scores(n=2000, shift=0.25, low=0.5)
    barely = diagnose(p, y, recalibrate=_sharpen(0.97), **FAST)
    assert barely.crossfit.ece_after < barely.crossfit.ece_before
    assert barely.crossfit.ece_after > barely.crossfit.noise_q95_after
    assert barely.recommendation == "cft" and any("scaling alone does not remove" in r
                                                  for r in barely.rules)
    fitted = diagnose(p, y, recalibrate=temperature_fit, **FAST)
    assert fitted.crossfit.ece_after <= fitted.crossfit.noise_q95_after
    assert fitted.recommendation == "temperature" and any("suffices in-domain" in r
                                                          for r in fitted.rules)


def test_keep_accuracy_prints_the_measured_scaling_and_power_only_for_a_non_rejection():
    from calibtune.workflows.diagnose import temperature_fit

    p, y = scores(shift=0.15)
    d = diagnose(p, y, keep_accuracy=True, recalibrate=temperature_fit, **FAST)
    assert d.recommendation == "temperature" and d.r0_power == ()
    assert any(r.startswith("R1 (measured)") and "cross-fitted" in r for r in d.rules)
    calibrated = diagnose(*scores(shift=0.0), **FAST)
    assert calibrated.within_noise and [g for g, _ in calibrated.r0_power] == [0.05, 0.10]
