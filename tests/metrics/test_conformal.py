"""Split conformal: coverage over many seeds within [1 − α, 1 − α + 1/(n_cal+1)], edge cases."""
import json
import math

import numpy as np
import pytest

from calibtune.metrics.conformal import conformal_threshold, score_matrix, split_conformal
from calibtune.metrics.validation import MetricInputError, softmax
from calibtune.scores import option_mask

METHODS = [("lac", False), ("aps", True), ("aps", False)]
# Non-randomised APS scores the last-ranked option exactly 1 (all the mass): a tie-heavy score,
# so only the lower bound holds for it (it is conservative); the upper bound needs no ties.
CONTINUOUS = {("lac", False), ("aps", True)}


def synthetic(n, k=4, seed=0, n_options=None):
    """Exchangeable items from an overconfident model: labels drawn from a flatter softmax."""
    rng = np.random.default_rng(seed)
    mask = option_mask(n_options if n_options is not None else np.full(n, k), k)
    logits = rng.normal(0, 2.0, size=(n, k))
    probs = softmax(logits, mask)
    truth = softmax(0.5 * logits, mask)
    labels = (rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    return probs, np.minimum(labels, mask.sum(1) - 1), mask


def coverage_over_seeds(alpha, method, randomised, n=300, k=4, n_seeds=200, varied_k=False):
    covs = []
    for seed in range(n_seeds):
        n_opt = np.random.default_rng(10_000 + seed).integers(2, k + 1, n) if varied_k else None
        p, y, m = synthetic(n, k, seed, n_opt)
        res = split_conformal(p, y, m, alpha=alpha, method=method, randomised=randomised,
                              seed=seed)
        covs.append(res.coverage)
    return np.array(covs), res


@pytest.mark.parametrize("method,randomised", METHODS)
@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_marginal_coverage_over_seeds(method, randomised, alpha):
    covs, res = coverage_over_seeds(alpha, method, randomised)
    n_cal = res.n_cal
    se = covs.std(ddof=1) / math.sqrt(len(covs))
    lower, upper = 1 - alpha, 1 - alpha + 1 / (n_cal + 1)
    assert upper == pytest.approx(res.coverage_upper_bound)
    assert covs.mean() >= lower - 3 * se
    if (method, randomised) in CONTINUOUS:
        assert covs.mean() <= upper + 3 * se
        # with continuous scores the expected coverage is exactly ⌈(n+1)(1−α)⌉ / (n+1)
        expected = math.ceil((n_cal + 1) * (1 - alpha) - 1e-9) / (n_cal + 1)
        assert covs.mean() == pytest.approx(expected, abs=4 * se)


@pytest.mark.parametrize("method,randomised", METHODS)
def test_coverage_with_two_options_and_with_masked_options(method, randomised):
    for k, varied in [(2, False), (5, True)]:
        covs, res = coverage_over_seeds(0.2, method, randomised, n=200, k=k, n_seeds=150,
                                        varied_k=varied)
        se = covs.std(ddof=1) / math.sqrt(len(covs))
        assert covs.mean() >= 0.8 - 3 * se
        if (method, randomised) in CONTINUOUS:
            assert covs.mean() <= res.coverage_upper_bound + 3 * se


@pytest.mark.parametrize("method,randomised", METHODS)
def test_masked_options_never_in_a_set(method, randomised):
    n_opt = np.random.default_rng(0).integers(2, 6, 400)
    p, y, m = synthetic(400, 5, 1, n_opt)
    for alpha in (0.001, 0.05, 0.5, 0.99):
        res = split_conformal(p, y, m, alpha=alpha, method=method, randomised=randomised)
        assert not (res.sets & ~m[res.test_index]).any()
        assert (res.sets.sum(1) <= n_opt[res.test_index]).all()


def test_threshold_of_one_still_excludes_masked_options():
    # every gold option has probability 0, so LAC calibration scores are all 1 and q̂ = 1
    mask = option_mask(np.r_[np.full(20, 3), np.full(20, 4)], 4)
    p = np.where(mask, 0.0, 0.0)
    p[:, 0], p[:, 1] = 0.5, 0.5
    y = np.full(40, 2)
    res = split_conformal(p, y, mask, alpha=0.2, method="lac")
    assert res.threshold == 1.0 and not res.full_sets
    assert (res.sets == mask[res.test_index]).all()


def test_alpha_near_zero_gives_full_sets():
    p, y, m = synthetic(200, 4, 0, np.random.default_rng(1).integers(2, 5, 200))
    res = split_conformal(p, y, m, alpha=0.001, method="lac")  # ⌈101·0.999⌉ = 101 > 100
    assert res.full_sets and math.isinf(res.threshold)
    assert res.coverage == 1.0
    assert res.mean_set_size == pytest.approx(m[res.test_index].sum(1).mean())
    d = res.to_dict()
    assert d["threshold"] is None and d["full_sets"] is True
    json.dumps(d)


@pytest.mark.parametrize("method,randomised", METHODS)
def test_alpha_near_one_gives_small_sets(method, randomised):
    covs, res = coverage_over_seeds(0.95, method, randomised, n=200, n_seeds=100)
    se = covs.std(ddof=1) / math.sqrt(len(covs))
    assert covs.mean() >= 0.05 - 3 * se
    if (method, randomised) in CONTINUOUS:
        assert covs.mean() <= res.coverage_upper_bound + 3 * se
    assert res.mean_set_size < 0.5


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, float("nan"), True, "0.1"])
def test_alpha_is_validated(alpha):
    p, y, m = synthetic(20)
    with pytest.raises(MetricInputError, match="alpha"):
        split_conformal(p, y, m, alpha=alpha)


def test_finite_sample_threshold():
    s = np.arange(1.0, 10.0)  # n = 9
    assert conformal_threshold(s, 0.1) == 9.0  # ⌈10 · 0.9⌉ = 9, exactly (no 9.000000000000002)
    assert conformal_threshold(s, 0.2) == 8.0
    assert conformal_threshold(s[::-1], 0.5) == 5.0
    assert math.isinf(conformal_threshold(s[:8], 0.1))  # ⌈9 · 0.9⌉ = 9 > 8
    with pytest.raises(MetricInputError):
        conformal_threshold([], 0.1)


def test_aps_scores_by_hand():
    p = np.array([[0.2, 0.5, 0.3, 0.0]])
    m = np.array([[True, True, True, False]])
    plain = score_matrix(p, m, "aps", randomised=False)
    np.testing.assert_allclose(plain[0, :3], [1.0, 0.5, 0.8])
    rand = score_matrix(p, m, "aps", randomised=True, u=np.array([0.5]))
    np.testing.assert_allclose(rand[0, :3], [0.9, 0.25, 0.65])
    assert np.isinf(plain[0, 3]) and np.isinf(rand[0, 3])
    np.testing.assert_allclose(score_matrix(p, m, "lac")[0, :3], [0.8, 0.5, 0.7])
    with pytest.raises(MetricInputError):
        score_matrix(p, m, "aps", randomised=True)
    with pytest.raises(MetricInputError):
        score_matrix(p, m, "raps")


def test_size_stratified_coverage_adds_up_and_is_seeded():
    p, y, m = synthetic(500, 4, 3)
    res = split_conformal(p, y, m, alpha=0.1, method="aps", seed=4)
    counts = {s: n for s, (n, _) in res.coverage_by_size.items()}
    assert sum(counts.values()) == res.n_test == 500 - res.n_cal
    weighted = sum(n * c for n, c in res.coverage_by_size.values()) / res.n_test
    assert weighted == pytest.approx(res.coverage)
    assert res.mean_set_size == pytest.approx(sum(s * n for s, n in counts.items()) / res.n_test)
    again = split_conformal(p, y, m, alpha=0.1, method="aps", seed=4)
    assert again.to_dict() == res.to_dict()
    assert res.randomised and not split_conformal(p, y, m, method="lac").randomised
    json.dumps(res.to_dict())


def test_rejects_bad_settings():
    p, y, m = synthetic(20)
    with pytest.raises(MetricInputError):
        split_conformal(p, y, m, method="raps")
    with pytest.raises(MetricInputError):
        split_conformal(p, y, m, cal_fraction=1.0)
    with pytest.raises(MetricInputError):
        split_conformal(p[:1], y[:1], m[:1])
