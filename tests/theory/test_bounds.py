"""The bounds of docs/theory.md: proved there, checked here on synthetic data (exact and random)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from calibtune.metrics import MetricInputError, bin_edges, bin_statistics, ece, ece_noise_floor
from calibtune.theory import bounds as B
from calibtune.theory import critical_accuracy

TOL = 1e-12


def make_scores(conf, correct, k: int, rng=None, pred=None):
    """Probabilities [n, k] whose top option has probability conf_i, right iff correct_i."""
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct).astype(bool)
    n = conf.size
    rng = rng or np.random.default_rng(0)
    pred = rng.integers(0, k, n) if pred is None else np.broadcast_to(pred, (n,)).copy()
    pred = np.where(np.isclose(conf, 1.0 / k), 0, pred)  # uniform row: argmax is option 0
    p = np.repeat(((1.0 - conf) / (k - 1))[:, None], k, axis=1)
    p[np.arange(n), pred] = conf
    wrong = (pred + 1 + rng.integers(0, k - 1, n)) % k
    return p, np.where(correct, pred, wrong)


def draw(rng, kind: int):
    """(conf, correct, K, M) of one random score set: arbitrary, below chance, or calibrated."""
    n = int(rng.integers(1, 300))
    k = int(rng.integers(2, 8))
    m = int(rng.choice([1, 2, 5, 10, 20]))
    if kind == 0:
        conf = 1 / k + (1 - 1 / k) * rng.random(n)
        correct = (rng.random(n) < rng.random()).astype(float)
    elif kind == 1:
        conf = 1 / k + (1 - 1 / k) * rng.beta(0.5, 5, n)
        correct = (rng.random(n) < 0.5 / k).astype(float)
    else:
        conf = 1 / k + (1 - 1 / k) * rng.random(n)
        correct = (rng.random(n) < conf).astype(float)
    return conf, correct, k, m


def test_binned_ece_is_the_metrics_ece():
    rng = np.random.default_rng(1)
    conf = 0.25 + 0.75 * rng.random(200)
    correct = (rng.random(200) < 0.6).astype(float)
    p, y = make_scores(conf, correct, 4, rng)
    for m in (1, 7, 10, 15):
        assert B.binned_ece(conf, correct, m) == pytest.approx(ece(p, y, m), abs=1e-12)
        assert B.binned_ece(conf, correct, m, "quantile") == pytest.approx(
            ece(p, y, m, "quantile"), abs=1e-12)


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_lower_bounds_hold_on_random_draws(kind):
    rng = np.random.default_rng(10 + kind)
    for _ in range(300):
        conf, correct, k, m = draw(rng, kind)
        for strategy in ("uniform", "quantile"):
            e = B.binned_ece(conf, correct, m, strategy)
            d = conf.mean() - correct.mean()
            p2 = B.below_chance_floor(conf, correct, k, m, strategy)
            c3 = B.combined_floor(conf, correct, k, m, strategy)
            assert B.mean_gap_bound(conf, correct) <= e + TOL            # P1
            assert p2 <= e + TOL                                          # P2
            assert max(abs(d), p2) <= c3 + TOL and c3 <= e + TOL          # C3
            assert B.accuracy_only_floor(correct, k) <= min(p2, abs(d)) + TOL   # P4 ≤ P2, P1
            o, u = B.over_under(conf, correct, m, strategy)
            assert o + u == pytest.approx(e, abs=1e-12)                   # ECE = O + U
            assert o - u == pytest.approx(d, abs=1e-12)                   # O − U = D


def test_refining_the_bins_never_lowers_ece():
    """Lemma 1: uniform M-bins refine uniform M'-bins when M' divides M (edges k/M exact)."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        conf, correct, _, _ = draw(rng, int(rng.integers(0, 3)))
        chain = [B.binned_ece(conf, correct, m) for m in (1, 2, 10, 20, 40)]
        assert chain[0] == pytest.approx(B.mean_gap_bound(conf, correct), abs=1e-12)
        assert all(a <= b + TOL for a, b in zip(chain, chain[1:]))
        assert B.binned_ece(conf, correct, 5) <= chain[2] + TOL


def test_mean_gap_is_exact_in_one_bin_and_strict_with_opposite_signs():
    conf = np.full(10, 0.95)
    correct = np.array([1] * 6 + [0] * 4, float)
    assert B.binned_ece(conf, correct) == pytest.approx(0.35, abs=1e-12)
    assert B.mean_gap_bound(conf, correct) == pytest.approx(0.35, abs=1e-12)
    # an under-confident bin and an over-confident bin: the mean gap cancels, ECE does not
    conf = np.array([0.35] * 10 + [0.95] * 10)
    correct = np.array([1] * 10 + [0] * 2 + [1] * 8, float)   # 1.0 vs 0.35; 0.8 vs 0.95
    assert B.binned_ece(conf, correct) == pytest.approx(0.5 * 0.65 + 0.5 * 0.15, abs=1e-12)
    assert B.mean_gap_bound(conf, correct) == pytest.approx(abs(0.65 - 0.9), abs=1e-12)
    o, u = B.over_under(conf, correct)
    assert (o, u) == pytest.approx((0.075, 0.325), abs=1e-12)


def test_below_chance_floor_is_attained_and_combined_floor_is_tight():
    k = 4
    # bin A: uniform rows (c = 1/4), all wrong; bin B: c = 0.7, 9 of 10 right
    conf = np.array([0.25] * 10 + [0.7] * 10)
    correct = np.array([0] * 10 + [1] * 9 + [0], float)
    e = B.binned_ece(conf, correct)
    assert e == pytest.approx(0.5 * 0.25 + 0.5 * 0.2, abs=1e-12)
    p2 = B.below_chance_floor(conf, correct, k)
    assert p2 == pytest.approx(0.125, abs=1e-12)
    d = conf.mean() - correct.mean()
    assert d == pytest.approx(0.025, abs=1e-12)
    c3 = B.combined_floor(conf, correct, k)
    assert c3 == pytest.approx(e, abs=1e-12) and c3 > max(abs(d), p2) + 0.09
    # a bin of uniform rows alone: the floor is the ECE
    assert B.below_chance_floor(conf[:10], correct[:10], k) == pytest.approx(
        B.binned_ece(conf[:10], correct[:10]), abs=1e-12)


def test_below_chance_floor_with_mixed_option_counts():
    """Per-item K_i: the bin's chance level is the mean of 1/K_i."""
    k_i = np.array([2] * 5 + [4] * 5)
    conf = 1.0 / k_i                            # uniform rows; both 0.5 and 0.25 ...
    correct = np.zeros(10)
    floor = B.below_chance_floor(conf, correct, k_i, n_bins=1)  # ... in one bin
    assert floor == pytest.approx(0.375, abs=1e-12)
    assert floor == pytest.approx(B.binned_ece(conf, correct, 1), abs=1e-12)
    with pytest.raises(MetricInputError, match="below 1/K"):
        B.below_chance_floor(np.array([0.3]), np.array([0.0]), 2)
    with pytest.raises(MetricInputError, match="n_options"):
        B.below_chance_floor(np.array([0.6]), np.array([0.0]), 1)


@pytest.mark.parametrize("k", [2, 3, 4, 7])
@pytest.mark.parametrize("n", [1, 5, 12])
def test_accuracy_alone_bounds_ece_by_chance_only(k, n):
    """Proposition 4: for every accuracy m/n there are scores with ECE = (1/K − m/n)₊."""
    for m in range(n + 1):
        a = m / n
        if m * k > n:        # a > 1/K: every row has a on option 0, the rest shared equally
            p = np.full((n, k), (1.0 - a) / (k - 1))
            p[:, 0] = a
        else:                # a ≤ 1/K: uniform rows (exactly 1/K each: argmax is option 0)
            p = np.full((n, k), 1.0 / k)
        y = np.array([0] * m + [1] * (n - m))
        assert ece(p, y) == pytest.approx(max(1.0 / k - a, 0.0), abs=1e-12)
        assert B.accuracy_only_floor((y == 0).astype(float), k) == pytest.approx(
            max(1.0 / k - a, 0.0), abs=1e-12)


def test_accuracy_only_floor_is_not_attained_with_mixed_option_counts():
    """K = (2, 10, 10), one of three right, M = 10: the bound is 0 but every score set has ECE > 0.

    (docs/theory.md, after Proposition 4: a bin of wrong items alone is over-confident, so all three
    items share one bin; the K = 2 item puts it at c ≥ 1/2 > 1/3 = its accuracy.) Checked on a grid
    of confidences (step 0.05, the K = 2 item from 1/2, the others from 1/10) for each right item.
    """
    k_i = np.array([2, 10, 10])
    grid2, grid10 = np.arange(10, 21) / 20, np.r_[0.1, np.arange(3, 21) / 20]
    for right in range(3):
        correct = (np.arange(3) == right).astype(float)
        assert B.accuracy_only_floor(correct, k_i) == 0.0
        least = min(B.binned_ece(np.array(c), correct, 10)
                    for c in itertools.product(grid2, grid10, grid10))
        assert least >= 0.1 / 3 - 1e-12     # the argument's smallest case: one item alone at 0.1


def _exact_null(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """ECE of every outcome vector and its probability under correct_i ~ Bernoulli(c_i)."""
    vals, probs = [], []
    for bits in itertools.product([0.0, 1.0], repeat=conf.size):
        y = np.array(bits)
        vals.append(B.binned_ece(conf, y, n_bins))
        probs.append(np.prod(np.where(y == 1, conf, 1 - conf)))
    return np.array(vals), np.array(probs)


@pytest.mark.parametrize("seed", range(6))
def test_noise_bounds_hold_exactly_by_enumeration(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 11))
    conf = 0.5 + 0.5 * rng.random(n) if seed % 2 else rng.random(n)
    m = int(rng.choice([1, 3, 10]))
    vals, probs = _exact_null(conf, m)
    mean = float(np.dot(vals, probs))
    nb = B.noise_floor_bounds(conf, m)
    assert nb.lower <= mean + TOL and mean <= nb.upper + TOL
    assert nb.upper <= nb.worst_case + TOL <= B.noise_floor_bound(n, m) + 2 * TOL
    order = np.argsort(vals)
    q95 = vals[order][np.searchsorted(np.cumsum(probs[order]), 0.95 - 1e-12)]
    assert q95 <= nb.quantile_bound + TOL


def test_noise_bounds_bracket_the_simulated_floor():
    """The simulation in metrics.ece_noise_floor estimates exactly the quantity of Proposition 5."""
    for n, m in [(50, 10), (400, 5), (400, 20), (3000, 10)]:
        conf = 0.25 + 0.75 * np.random.default_rng(n + m).random(n)
        nf = ece_noise_floor(conf, m, n_sim=1000, seed=1)
        nb = B.noise_floor_bounds(conf, m)
        se = nf.std / math.sqrt(nf.n_sim)
        assert nb.lower <= nf.mean - 5 * se
        assert nf.mean <= nb.upper - 5 * se
        assert nf.mean <= B.noise_floor_bound(n, m)
        assert nf.q95 <= nb.quantile_bound <= B.noise_floor_bound(n, m, delta=0.05) + TOL
        assert nf.mean == pytest.approx(nb.clt, rel=0.1)  # an approximation, not a bound


def test_noise_floor_extremes_and_scaling():
    # all confidences 1/2 in one bin: the worst case of the upper bound is attained
    nb = B.noise_floor_bounds(np.full(100, 0.5), 10)
    assert nb.upper == pytest.approx(nb.worst_case) == pytest.approx(1 / (2 * math.sqrt(100)))
    # certain confidences: no noise at all
    nb = B.noise_floor_bounds(np.ones(30), 10)
    assert nb.lower == nb.upper == 0.0
    assert ece_noise_floor(np.ones(30), 10, n_sim=50).q95 == 0.0
    assert B.noise_floor_bound(400, 10) == pytest.approx(B.noise_floor_bound(100, 10) / 2)
    assert B.noise_floor_bound(100, 40) == pytest.approx(2 * B.noise_floor_bound(100, 10))
    assert B.noise_floor_bound(100, 10, delta=0.05) == pytest.approx(
        math.sqrt(10 / 400) + math.sqrt(math.log(20) / 200))
    for bad in [dict(n=0, n_bins=10), dict(n=10, n_bins=0), dict(n=10, n_bins=10, delta=1.0)]:
        with pytest.raises(MetricInputError):
            B.noise_floor_bound(**bad)


def test_generalisation_gap_floor_values_and_identity():
    g = B.generalisation_gap_floor(train_accuracy=0.9, accuracy=0.6, confidence=0.85,
                                   train_confidence=0.88)
    assert g.gap == pytest.approx(0.3) and g.tracking_slack == pytest.approx(0.05)
    assert g.floor == pytest.approx(0.25)                      # = C_H − A_H here
    assert g.fit_slack == pytest.approx(-0.02) and g.transfer_slack == pytest.approx(-0.03)
    assert g.tracking_slack <= abs(g.fit_slack) + abs(g.transfer_slack) + TOL
    # confidence overshoots the training accuracy: the overshoot is not counted
    assert B.generalisation_gap_floor(0.8, 0.6, 0.95).floor == pytest.approx(0.05)
    # gap and miscalibration of opposite signs: no floor
    assert B.generalisation_gap_floor(0.9, 0.6, 0.5).floor == 0.0
    assert B.generalisation_gap_floor(0.7, 0.7, 0.9).floor == 0.0
    for bad in [(1.2, 0.5, 0.5), (0.5, -0.1, 0.5), (0.5, 0.5, float("nan"))]:
        with pytest.raises(MetricInputError):
            B.generalisation_gap_floor(*bad)


def test_fit_and_transfer_slack_add_up_to_tau_whatever_their_signs():
    """τ = C_H − A_T = g_T + Δ (signed): with g_T > 0 and Δ < 0, absolute values would give 0.15."""
    g = B.generalisation_gap_floor(train_accuracy=0.9, accuracy=0.6, confidence=0.85,
                                   train_confidence=0.95)
    assert g.fit_slack == pytest.approx(0.05) and g.transfer_slack == pytest.approx(-0.10)
    assert g.fit_slack + g.transfer_slack == pytest.approx(0.85 - 0.9, abs=1e-12)
    assert g.tracking_slack == pytest.approx(abs(g.fit_slack + g.transfer_slack), abs=1e-12)
    rng = np.random.default_rng(3)
    for a_t, a_h, c_h, c_t in rng.random((200, 4)):
        g = B.generalisation_gap_floor(a_t, a_h, c_h, c_t)
        assert g.fit_slack + g.transfer_slack == pytest.approx(c_h - a_t, abs=1e-12)


def test_noise_floor_grows_with_m_only_under_nested_refinement():
    """Exact expectation over all 4 outcomes of c = (0.45, 0.55): M = 2 and 4 separate the items
    (0.495), M = 3 puts both in [1/3, 2/3) (0.2475): E[ECE] is not monotone in M; 2 ⊂ 4 nests."""
    import itertools
    c = np.array([0.45, 0.55])
    def expected(m):
        total = 0.0
        for ys in itertools.product((0, 1), repeat=2):
            y = np.array(ys, float)
            total += np.prod(np.where(y == 1, c, 1 - c)) * B.binned_ece(c, y, m)
        return total
    e2, e3, e4 = expected(2), expected(3), expected(4)
    assert (e2, e3, e4) == pytest.approx((0.495, 0.2475, 0.495), abs=1e-12)
    assert e3 < e2 and e4 > e3 and e4 >= e2 - 1e-12


def test_generalisation_floors_hold_on_random_draws():
    rng = np.random.default_rng(7)
    for _ in range(400):
        conf, correct, k, m = draw(rng, int(rng.integers(0, 3)))
        nt = int(rng.integers(1, 300))
        ct = 1 / k + (1 - 1 / k) * rng.random(nt)
        yt = (rng.random(nt) < rng.random()).astype(float)
        e = B.binned_ece(conf, correct, m)
        f6 = B.generalisation_gap_floor(yt.mean(), correct.mean(), conf.mean(), ct.mean())
        assert f6.floor <= abs(conf.mean() - correct.mean()) + TOL <= e + 2 * TOL
        assert B.binned_generalisation_floor(ct, yt, conf, correct, m) <= e + TOL


def _trajectory(seed: int = 0, n_t: int = 3000, n_h: int = 1000, k: int = 4):
    """Synthetic fine-tuning: calibrated on its training items, confidence transfers to held-out
    items, held-out accuracy lags training accuracy once the latter passes 0.7."""
    rows = []
    for t, a_t in enumerate(np.linspace(0.55, 0.99, 12)):
        a_h = a_t - max(0.0, a_t - 0.7) * 0.7
        b = (a_t - 1 / k) / (1 - 1 / k)
        r = np.random.default_rng(1000 * seed + t)
        ct = 1 / k + (1 - 1 / k) * r.beta(10 * b, 10 * (1 - b), n_t)
        ch = 1 / k + (1 - 1 / k) * r.beta(10 * b, 10 * (1 - b), n_h)
        yt = (r.random(n_t) < ct).astype(float)
        yh = (r.random(n_h) < ch * a_h / a_t).astype(float)
        rows.append((ct, yt, ch, yh))
    return rows


def test_generalisation_floor_on_a_synthetic_fine_tuning_trajectory():
    acc, floor6, band, eces = [], [], [], []
    for ct, yt, ch, yh in _trajectory():
        e = B.binned_ece(ch, yh)
        f6 = B.generalisation_gap_floor(yt.mean(), yh.mean(), ch.mean(), ct.mean())
        f7 = B.binned_generalisation_floor(ct, yt, ch, yh)
        assert f6.floor <= e + TOL and f7 <= e + TOL
        acc.append(yh.mean())
        floor6.append(f6.floor)
        eces.append(e)
        band.append(ece_noise_floor(ch, 10, n_sim=300, seed=0).q95)
    # early checkpoints: no gap, floor inside the noise band; late ones: floor far above it
    assert all(f <= q for f, q in zip(floor6[:3], band[:3]))
    assert all(f > 3 * q for f, q in zip(floor6[-3:], band[-3:]))
    crit = critical_accuracy(acc, floor6, band)
    assert crit.critical is not None and 0.70 <= crit.critical <= 0.76
    assert crit.last_within is not None and crit.last_within < crit.critical


def test_binned_floor_uses_bin_width_when_training_bins_are_calibrated():
    """Proposition 7 with calibrated training bins: ECE_H ≥ Σ w_k(|a^T_k − a^H_k| − 1/M)₊."""
    edges = bin_edges(None, 10)
    structural = 0.0
    for ct, yt, ch, yh in _trajectory(seed=1)[-4:]:
        tt, th = bin_statistics(ct, yt, edges), bin_statistics(ch, yh, edges)
        both = (tt.count > 0) & (th.count > 0)
        assert np.all(np.abs(tt.confidence - th.confidence)[both] <= 0.1 + TOL)
        structural = np.sum(th.weight[both] * np.maximum(
            np.abs(tt.accuracy - th.accuracy)[both] - np.abs(tt.confidence - tt.accuracy)[both]
            - 0.1, 0.0))
        f7 = B.binned_generalisation_floor(ct, yt, ch, yh)
        assert structural <= f7 + TOL and f7 <= B.binned_ece(ch, yh) + TOL
    assert structural > 0.01  # at the last checkpoint the gap exceeds the bin width somewhere


def test_input_validation():
    with pytest.raises(MetricInputError, match="items"):
        B.mean_gap_bound(np.array([0.5, 0.6]), np.array([1.0]))
    with pytest.raises(MetricInputError, match="0/1"):
        B.mean_gap_bound(np.array([0.5]), np.array([0.5]))
    with pytest.raises(MetricInputError, match=r"\[0, 1\]"):
        B.binned_ece(np.array([1.5]), np.array([1.0]))
    with pytest.raises(MetricInputError, match="at least one"):
        B.noise_floor_bounds(np.array([]))
    with pytest.raises(MetricInputError):
        B.binned_ece(np.array([0.5]), np.array([1.0]), n_bins=0)
