"""Paired comparison: McNemar against a direct binomial sum, Δ intervals, alignment by id."""
import json
import math

import numpy as np
import pytest

from calibtune.errors import ConfigError, DataError
from calibtune.metrics import brier, classwise_ece, ece, nll
from calibtune.metrics.paired import align_items, compare_scores, mcnemar_exact, paired_compare
from calibtune.metrics.validation import softmax
from calibtune.scores import OptionScores, option_mask


def synthetic(n=400, k=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, size=(n, k))
    labels = np.array([rng.choice(k, p=p) for p in softmax(0.5 * logits)])  # overconfident model
    return logits, labels


def direct_mcnemar_p(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("b,c", [(0, 0), (3, 3), (0, 7), (12, 4), (1, 30), (25, 40)])
def test_mcnemar_matches_direct_binomial(b, c):
    ca = np.r_[np.ones(b), np.zeros(c), np.ones(5), np.zeros(4)].astype(bool)
    cb = np.r_[np.zeros(b), np.ones(c), np.ones(5), np.zeros(4)].astype(bool)
    res = mcnemar_exact(ca, cb)
    assert (res.only_a_correct, res.only_b_correct, res.n_discordant) == (b, c, b + c)
    assert res.p_value == pytest.approx(direct_mcnemar_p(b, c), rel=1e-9, abs=1e-15)


def test_mcnemar_random_correctness():
    rng = np.random.default_rng(3)
    ca, cb = rng.random(300) < 0.6, rng.random(300) < 0.7
    res = mcnemar_exact(ca, cb)
    b, c = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    assert res.p_value == pytest.approx(direct_mcnemar_p(b, c), rel=1e-9)


def test_identical_inputs_give_zero_deltas():
    logits, y = synthetic(200)
    p = softmax(logits)
    res = paired_compare(p, p.copy(), y, n_boot=200)
    for iv in res.deltas.values():
        assert (iv.estimate, iv.low, iv.high, iv.std) == (0.0, 0.0, 0.0, 0.0)
    assert res.changed_predictions == 0.0 and res.n_changed == 0
    assert res.mcnemar.p_value == 1.0 and res.mcnemar.n_discordant == 0


def test_point_estimates_equal_the_metric_functions_and_intervals_contain_them():
    logits, y = synthetic(400)
    pa, pb = softmax(logits), softmax(0.5 * logits)  # B: temperature-scaled, better calibrated
    res = paired_compare(logits, 0.5 * logits, y, from_logits=True, n_boot=300, seed=1)
    for name, f in [("ece", ece), ("cw_ece", classwise_ece), ("brier", brier)]:
        assert res.metrics_a[name] == pytest.approx(f(pa, y))
        assert res.metrics_b[name] == pytest.approx(f(pb, y))
    assert res.metrics_a["nll"] == pytest.approx(nll(logits, y, from_logits=True))
    assert res.metrics_a["accuracy"] == pytest.approx(np.mean(pa.argmax(1) == y))
    for name, iv in res.deltas.items():
        assert iv.low <= iv.estimate <= iv.high, name
        assert iv.estimate == pytest.approx(res.metrics_b[name] - res.metrics_a[name])
    assert res.deltas["ece"].high < 0  # temperature scaling clearly lowers ECE here
    assert res.deltas["accuracy"].estimate == 0.0  # same argmax
    assert res.changed_predictions == 0.0
    json.dumps(res.to_dict())


def test_pairing_narrows_the_accuracy_interval():
    logits, y = synthetic(400, seed=2)
    other = logits.copy()
    flip = np.random.default_rng(0).random(len(y)) < 0.05  # B changes 5 % of predictions
    other[flip] = other[flip][:, ::-1]
    res = paired_compare(logits, other, y, from_logits=True, n_boot=300)
    width = res.deltas["accuracy"].high - res.deltas["accuracy"].low
    unpaired_width = 2 * 1.96 * math.sqrt(2 * 0.25 / len(y))  # two independent accuracies ~0.5
    assert width < 0.5 * unpaired_width
    assert 0 < res.n_changed <= flip.sum()


def test_bootstrap_is_seeded():
    logits, y = synthetic(150)
    a = paired_compare(logits, 0.7 * logits, y, from_logits=True, n_boot=100, seed=5)
    b = paired_compare(logits, 0.7 * logits, y, from_logits=True, n_boot=100, seed=5)
    c = paired_compare(logits, 0.7 * logits, y, from_logits=True, n_boot=100, seed=6)
    assert a.to_dict() == b.to_dict()
    assert a.deltas["ece"].low != c.deltas["ece"].low


def test_align_items():
    ia, ib = align_items(["a", "b", "c"], ["c", "a", "b"], intersect=False)
    assert np.array_equal(np.array(["a", "b", "c"])[ia], np.array(["c", "a", "b"])[ib])
    with pytest.raises(ConfigError) as err:
        align_items(["a", "b", "c"], ["b", "c", "d", "e"], intersect=False)
    msg = str(err.value)
    assert "\n" not in msg and "A has 3" in msg and "B has 4" in msg and "2 shared" in msg
    ia, ib = align_items(["a", "b", "c"], ["b", "c", "d", "e"], intersect=True)
    assert ia.tolist() == [1, 2] and ib.tolist() == [0, 1]
    with pytest.raises(ConfigError, match="0 shared"):
        align_items(["a"], ["b"], intersect=True)
    with pytest.raises(ConfigError, match="duplicate"):
        align_items(["a", "a"], ["a", "b"], intersect=True)


def test_compare_scores_pairs_by_id_and_checks_labels():
    logits, y = synthetic(60, k=4)
    n_opt = np.where(np.arange(60) % 3 == 0, 3, 4)
    mask = option_mask(n_opt, 4)
    y = np.minimum(y, n_opt - 1)
    ids = np.array([f"q{i}" for i in range(60)])
    a = OptionScores(np.where(mask, logits, 0), y, mask, ids)
    perm = np.random.default_rng(1).permutation(60)
    # B holds the same items shuffled, padded to 5 options
    b = OptionScores(np.pad(np.where(mask, 0.5 * logits, 0)[perm], ((0, 0), (0, 1))), y[perm],
                     np.pad(mask[perm], ((0, 0), (0, 1))), ids[perm])
    res = compare_scores(a, b, n_boot=50)
    direct = paired_compare(a.logits, 0.5 * a.logits, y, mask, from_logits=True, n_boot=50)
    assert res.to_dict() == direct.to_dict()
    bad = OptionScores(b.logits, (b.labels + 1) % 3, b.mask, b.ids)
    with pytest.raises(DataError, match="differs between the score sets"):
        compare_scores(a, bad, n_boot=10)
    with pytest.raises(ConfigError, match="intersect=True"):
        compare_scores(a, b.subset(np.arange(50)), n_boot=10)
    assert compare_scores(a, b.subset(np.arange(50)), intersect=True, n_boot=10).n == 50
