"""The statistics behind the verdicts: the floor test's level and its pieces, R0's power,
the cross-fitted recalibration, and critical accuracy at ties."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import binom, norm

from calibtune.calibrators import TemperatureScaling
from calibtune.metrics import ece
from calibtune.theory import (critical_accuracy, cross_fit, diagnose, floor_test,
                              generalisation_gap_floor, r0_power)
from calibtune.theory.posthoc import halves


def population(a_h, c_h, n_h, reps, rng, k=4):
    """Held-out (conf, correct) [reps, n_h]: mean confidence C_H, mean accuracy A_H."""
    m = (c_h - 1 / k) / (1 - 1 / k)
    conf = 1 / k + (1 - 1 / k) * rng.beta(4 * m, 4 * (1 - m), size=(reps, n_h))
    return conf, (rng.random((reps, n_h)) < a_h * conf / c_h).astype(float)


def rejection_rate(a_h, c_h, a_t, n_h, n_t, reps, seed, naive=False):
    rng = np.random.default_rng(seed)
    conf, y = population(a_h, c_h, n_h, reps, rng)
    at = rng.binomial(n_t, a_t, size=reps) / n_t
    if naive:  # A_T treated as exact: the floor's lower bound with the held-out error only
        z = norm.ppf(0.95)
        l1 = conf.mean(1) - y.mean(1)
        l2 = 2 * at - y.mean(1) - conf.mean(1)
        se2 = np.sqrt(np.var(conf + y, axis=1, ddof=1) / n_h)
        se1 = np.sqrt(np.var(conf - y, axis=1, ddof=1) / n_h)
        return float(np.mean(np.minimum(l1 - z * se1, l2 - z * se2) > 0))
    return float(np.mean([floor_test(conf[i], y[i], float(at[i]), n_t).reject
                          for i in range(reps)]))


def test_floor_test_level_at_a_population_floor_of_zero():
    """The reviewer's case (A_H .45, C_H .65, A_T .55: floor exactly 0, n_H 300, n_T 150, K 4):
    rejection rate ≤ 5% within 3 Monte-Carlo standard errors; a test that ignores A_T's error
    (the broken variant) rejects far more often on the same draws."""
    reps = 1500
    rate = rejection_rate(0.45, 0.65, 0.55, 300, 150, reps, seed=1)
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps)
    assert rejection_rate(0.45, 0.65, 0.55, 300, 150, reps, seed=1, naive=True) > 0.15


def test_floor_test_has_power_when_the_floor_is_large():
    assert rejection_rate(0.45, 0.65, 0.70, 1000, 1000, 300, seed=2) > 0.95


def test_floor_test_pieces_agree_with_the_bounds_module_and_a_simulation():
    rng = np.random.default_rng(5)
    conf, y = population(0.45, 0.65, 400, 1, rng)
    t = floor_test(conf[0], y[0], 0.62, 200)
    g = generalisation_gap_floor(0.62, y[0].mean(), conf[0].mean())
    assert t.floor == pytest.approx(g.floor, abs=1e-12)         # min(L1, L2)₊ = P6's floor
    assert t.mean_gap == pytest.approx(conf[0].mean() - y[0].mean(), abs=1e-12)
    assert t.lower <= t.floor
    # a measured G₀ shifts the reference r = A_T − G₀, as P6 with r in place of A_T
    t0 = floor_test(conf[0], y[0], 0.62, 200, baseline=0.05, baseline_var=1e-4)
    assert t0.reference == pytest.approx(0.57) and t0.se_overshoot_margin > t.se_overshoot_margin
    # se of L2 = 2A_T − A_H − C_H against its spread over many independent samples
    conf, y = population(0.45, 0.65, 400, 3000, rng)
    at = rng.binomial(200, 0.62, size=3000) / 200
    l2 = 2 * at - y.mean(1) - conf.mean(1)
    se = np.mean([floor_test(conf[i], y[i], float(at[i]), 200).se_overshoot_margin
                  for i in range(0, 3000, 30)])
    assert se == pytest.approx(l2.std(ddof=1), rel=0.15)
    assert se >= 0.9 * l2.std(ddof=1)                          # never much smaller: not liberal


def test_r0_power_against_the_exact_binomial():
    """All confidences 0.7 (one bin): ECE = |S/n − 0.7| with S ~ Binomial(n, 0.7 − gap)."""
    n, c, gap, q95 = 200, 0.7, 0.08, 0.0525  # q95 between lattice points k/n
    conf = np.full(n, c)
    k = np.arange(n + 1)
    exact = float(binom.pmf(k, n, c - gap)[np.abs(k / n - c) > q95].sum())
    assert r0_power(conf, q95, gap, n_sim=4000, seed=0) == pytest.approx(exact, abs=0.03)
    assert r0_power(conf, q95, 0.0, n_sim=4000, seed=0) == pytest.approx(
        float(binom.pmf(k, n, c)[np.abs(k / n - c) > q95].sum()), abs=0.02)


def temperature_fit(p, y, m):
    t = TemperatureScaling().fit(p, y, m, from_probs=True)
    return (lambda q, mq: t.transform(q, mq, from_probs=True)), {"temperature": t.temperature_}


def overconfident(n=800, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4)) * 2
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (rng.random(n)[:, None] > np.cumsum(p, 1)).sum(1)       # calibrated for logits z
    q = np.exp(3 * z) / np.exp(3 * z).sum(1, keepdims=True)      # then made over-confident
    return q, y


def test_cross_fit_fits_on_one_half_and_reports_on_the_other():
    p, y = overconfident()
    m = np.ones_like(p, bool)
    seen = []

    def spy(pf, yf, mf):
        seen.append(pf)
        return (lambda q, mq: (seen.append(q), q)[1]), {"temperature": 1.0}
    f = cross_fit(p, y, m, spy, seed=3)
    a, b = halves(len(y), 3)
    assert np.array_equal(seen[0], p[a]) and np.array_equal(seen[1], p[b])
    assert np.array_equal(seen[2], p[b]) and np.array_equal(seen[3], p[a])   # applied crosswise
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(len(y)))
    assert f.ece_after == pytest.approx(f.ece_before) == pytest.approx(ece(p, y))
    assert not np.array_equal(halves(len(y), 4)[0], a)                     # the seed decides


def test_cross_fitted_temperature_fixes_overconfidence_at_unchanged_accuracy():
    p, y = overconfident()
    f = cross_fit(p, y, np.ones_like(p, bool), temperature_fit, seed=0)
    assert f.accuracy_after == f.accuracy_before
    assert f.ece_before > 0.1 and f.ece_after < f.noise_q95_after
    assert all(2 < x["temperature"] < 4 for x in f.parameters)
    assert cross_fit(p, y, np.ones_like(p, bool), temperature_fit, seed=0) == f


def test_diagnose_measures_the_cross_fitted_temperature_before_fine_tuning():
    p, y = overconfident()
    d = diagnose(p, y, n_boot=50, n_sim=300, recalibrate=temperature_fit)
    assert d.crossfit is not None and d.recommendation == "temperature"
    text = " ".join(d.rules)
    assert "cross-fitted" in text and "out of domain" in text and "docs/reproduce.md" in text
    assert d.to_dict()["crossfit"]["ece_after"] == pytest.approx(d.crossfit.ece_after)
    plain = diagnose(p, y, n_boot=50, n_sim=300)
    assert plain.crossfit is None and plain.recommendation == "cft"
    assert "not measured" in " ".join(plain.rules)
    assert "not of the true calibration error" in d.to_markdown()


@pytest.mark.parametrize("seed", range(5))
def test_critical_accuracy_does_not_depend_on_the_order_at_ties(seed):
    acc = [0.60, 0.65, 0.70, 0.70, 0.74, 0.74, 0.75]
    stat = [0.01, 0.02, 0.05, 0.03, 0.06, 0.02, 0.09]   # at 0.74 one out, one inside
    band = [0.04] * 7
    expected = critical_accuracy(acc, stat, band)
    assert (expected.critical, expected.last_within) == (0.75, 0.74)
    rng = np.random.default_rng(seed)
    for perm in itertools.islice(itertools.permutations(range(7)), seed * 100, seed * 100 + 100):
        perm = list(perm) if seed else rng.permutation(7)
        r = critical_accuracy(np.take(acc, perm), np.take(stat, perm), np.take(band, perm))
        assert r == expected
    # every checkpoint at the top accuracy inside: None
    r = critical_accuracy([0.7, 0.8, 0.8], [0.1, 0.1, 0.01], [0.04] * 3)
    assert r.critical is None and r.last_within == 0.8
