"""The debiased binned calibration error: cross-checked against Kumar et al.'s own package
(`uncertainty-calibration`, import name `calibration`) and a plain loop; its interval's coverage
of the population error on small seeded simulations."""
import calibration  # Kumar et al.'s package: pip install uncertainty-calibration (test extra)
import numpy as np
import pytest

from calibtune.metrics import (MetricInputError, debiased_ce_interval, debiased_rms_ce,
                               debiased_squared_ce, ece, softmax)
from calibtune.metrics.debiased import squared_ce_from_sums


def loop_squared_ce(conf, correct, n_bins):
    """Independent reference: bin b holds b/M <= c < (b+1)/M (the last also c = 1); per bin with
    at least two items, (mean y − mean c)² − ȳ(1 − ȳ)/(n_b − 1), weighted by n_b/n."""
    n, total = len(conf), 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(n) if lo <= conf[i] and (conf[i] < hi or b == n_bins - 1)]
        if len(members) < 2:
            continue
        ybar = sum(correct[i] for i in members) / len(members)
        cbar = sum(conf[i] for i in members) / len(members)
        total += len(members) / n * ((ybar - cbar) ** 2 - ybar * (1 - ybar) / (len(members) - 1))
    return total


def kumar_squared(conf, correct, n_bins, left_closed=True):
    """Kumar's `unbiased_square_ce` on his `bin` of (confidence, correct) pairs. His bins are
    right-closed (e_b, e_{b+1}] (np.searchsorted on the upper edges); with every interior upper
    edge moved one ulp down they become our left-closed [e_b, e_{b+1}) for every float."""
    uppers = np.arange(1, n_bins + 1) / n_bins
    if left_closed:
        uppers[:-1] = np.nextafter(uppers[:-1], -np.inf)
    data = list(zip(np.asarray(conf, float), np.asarray(correct, float)))
    return float(calibration.unbiased_square_ce(calibration.bin(data, list(uppers))))


def edge_cases():
    rng = np.random.default_rng(7)
    on_edges = np.repeat(np.arange(11) / 10, 3)  # 0, 0.1, …, 1.0, each three times (ties)
    return {
        "zeros and ones": (np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.0]), np.array([0, 1, 1, 1, 0, 0])),
        "on every edge, tied": (on_edges, rng.integers(0, 2, on_edges.size)),
        "empty bins": (np.array([0.91, 0.95, 0.99, 0.93, 0.05, 0.02]),
                       np.array([1, 1, 0, 1, 0, 0])),
        "one item": (np.array([0.7]), np.array([1])),
        "one per bin": (np.arange(10) / 10 + 0.05, rng.integers(0, 2, 10)),
        "all tied": (np.full(50, 0.6), rng.integers(0, 2, 50)),
        "continuous": (rng.uniform(0.25, 1, 500), rng.integers(0, 2, 500)),
    }


@pytest.mark.parametrize("case", list(edge_cases()))
@pytest.mark.parametrize("n_bins", [10, 15])
def test_squared_ce_equals_kumar_and_a_loop_on_edge_cases(case, n_bins):
    conf, correct = edge_cases()[case]
    ours = debiased_squared_ce(conf, correct, n_bins)
    assert ours == pytest.approx(kumar_squared(conf, correct, n_bins), abs=1e-12)
    assert ours == pytest.approx(loop_squared_ce(conf, correct, n_bins), abs=1e-12)


def test_kumar_bins_differ_from_ours_only_for_values_on_interior_edges():
    conf = np.array([0.3, 0.3, 0.35, 0.38, 0.25, 0.22])
    correct = np.array([1, 1, 0, 1, 0, 1])
    ours = debiased_squared_ce(conf, correct, 10)
    # his own right-closed bins put the two 0.3s with 0.25 and 0.22, so his value differs …
    assert abs(kumar_squared(conf, correct, 10, left_closed=False) - ours) > 1e-3
    # … and agrees once no confidence lies on an interior edge
    moved = np.where(conf == 0.3, 0.31, conf)
    assert debiased_squared_ce(moved, correct, 10) == pytest.approx(
        kumar_squared(moved, correct, 10, left_closed=False), abs=1e-12)


@pytest.mark.parametrize("k", [2, 4, 10])
@pytest.mark.parametrize("n_bins", [10, 15])
def test_public_functions_match_kumar_public_api(k, n_bins):
    rng = np.random.default_rng(k)
    p = softmax(rng.normal(size=(2000, k)) * 2.0)
    y = rng.integers(0, k, 2000)
    kw = dict(num_bins=n_bins, binning_scheme=calibration.get_equal_prob_bins, mode="top-label")
    # debiased ℓ2: his lower_bound_scaling_ce(p=2, debias=True) is √max(0, Ŝ)
    assert debiased_rms_ce(p, y, n_bins) == pytest.approx(
        calibration.lower_bound_scaling_ce(p, y, p=2, debias=True, **kw), abs=1e-12)
    # and the plug-in ECE (p=1, no debiasing) is our ECE
    assert ece(p, y, n_bins) == pytest.approx(
        calibration.get_ece(p, y, debias=False, num_bins=n_bins), abs=1e-12)


def test_unbiased_for_the_binned_error_where_the_plugin_is_not():
    """Fixed confidences, constant within each bin, so the binned error at these items is known
    exactly; 4,000 seeded outcome draws. The mean of Ŝ is S to within Monte Carlo error."""
    rng = np.random.default_rng(3)
    conf = np.repeat(np.array([0.35, 0.55, 0.75, 0.95]), [20, 30, 40, 60])
    n, n_bins, reps = conf.size, 10, 4000
    for shift in (0.0, 0.08):
        f = conf - shift
        truth = shift ** 2  # every bin has gap −shift
        y = (rng.random((reps, n)) < f).astype(float)
        idx = np.searchsorted(np.arange(11) / 10, conf, side="right") - 1
        flat = (idx[None, :] + n_bins * np.arange(reps)[:, None]).ravel()
        sums = [np.bincount(flat, weights=w, minlength=reps * n_bins).reshape(reps, n_bins)
                for w in (np.ones(reps * n), y.ravel(), np.tile(conf, reps))]
        s_hat = squared_ce_from_sums(*sums, n)
        se = s_hat.std() / np.sqrt(reps)
        assert abs(s_hat.mean() - truth) < 4 * se
        plugin = np.sum((sums[1] - sums[2]) ** 2 / np.maximum(sums[0], 1), axis=1) / n
        assert plugin.mean() - truth > 20 * se  # the plug-in's noise term


def coverage(shift, n=100, n_bins=15, reps=150, seed=0):
    rng = np.random.default_rng(seed)
    hits_l2 = hits_l1 = 0
    for r in range(reps):
        conf = 0.25 + 0.75 * rng.beta(2.5, 1.5, n)
        correct = (rng.random(n) < conf - shift).astype(float)
        d = debiased_ce_interval(conf, correct, n_bins, n_boot=300, seed=r)
        hits_l2 += d.low <= shift <= d.high
        hits_l1 += d.ece_low <= shift <= d.ece_high
    return hits_l2 / reps, hits_l1 / reps


@pytest.mark.parametrize("shift", [0.0, 0.05])
def test_interval_covers_the_population_error(shift):
    """Constant gap −shift: the population binned ℓ1 and ℓ2 errors both equal `shift`. At 100
    items in 15 bins a percentile interval of Ŝ itself (not centred on Ŝ) covers only ~0.75
    of the time, and the plain percentile bootstrap of the ECE ~0.00 at shift 0."""
    cov_l2, cov_l1 = coverage(shift)
    assert cov_l2 >= 0.88 and cov_l1 >= 0.88


def test_bracket_lower_side_misses_at_most_half_alpha_at_a_zero_mean_gap():
    """At E[Y − C] = 0 the lower side |d̄| − z·se exceeds the target 0 whenever |d̄| > z·se, on
    either tail of d̄. With z at 1 − α/4 that is α/2 = 0.025; with z at 1 − α/2 it would be α =
    0.05 and the bracket only ≥ 1 − 1.5α. 4,000 seeded replications: Monte Carlo se ≈ 0.0025."""
    rng = np.random.default_rng(21)
    reps, n = 4000, 200
    fired = 0
    for r in range(reps):
        conf = 0.25 + 0.75 * rng.beta(2.5, 1.5, n)
        correct = (rng.random(n) < conf).astype(float)  # calibrated: E[Y − C] = 0 exactly
        fired += debiased_ce_interval(conf, correct, 10, n_boot=2, seed=r).ece_low > 0
    rate = fired / reps
    assert 0.015 <= rate <= 0.035  # the old quantile gives ≈ 0.05 here


def test_interval_fields_are_ordered_and_seeded():
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.3, 1, 300)
    correct = (rng.random(300) < conf - 0.15).astype(float)
    a = debiased_ce_interval(conf, correct, 15, n_boot=200, seed=1)
    assert a == debiased_ce_interval(conf, correct, 15, n_boot=200, seed=1)
    assert 0 <= a.low <= a.high and 0 <= a.ece_low <= a.ece_high == a.high
    assert a.estimate == pytest.approx(np.sqrt(max(0.0, a.squared)))
    d = correct - conf
    # the lower side is |d̄| − z·se with z at 1 − α/4 = 0.9875 (2.2414), not 1 − α/2 (1.9600)
    assert a.ece_low == pytest.approx(max(0.0, abs(d.mean()) - 2.241403 * d.std(ddof=1)
                                          / np.sqrt(300)), abs=1e-6)
    assert a.ece_low > 0  # this data's mean gap is far from 0, so the quantile above is tested
    assert a.squared == pytest.approx(loop_squared_ce(conf, correct, 15), abs=1e-12)


@pytest.mark.parametrize("args, message", [
    ((np.array([]), np.array([])), "no items"),
    ((np.array([0.5, 0.6]), np.array([1])), "differ in length"),
    ((np.array([0.5, 1.2]), np.array([1, 0])), "in [0, 1]"),
    ((np.array([0.5, np.nan]), np.array([1, 0])), "in [0, 1]"),
    ((np.array([0.5, 0.6]), np.array([1, 2])), "0 or 1"),
])
def test_bad_input_is_one_clear_line(args, message):
    with pytest.raises(MetricInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        debiased_ce_interval(*args)
    with pytest.raises(MetricInputError):
        debiased_squared_ce(*args)


def test_probabilities_are_validated_like_every_metric():
    with pytest.raises(MetricInputError, match="sums to"):
        debiased_rms_ce(np.array([[0.5, 0.6]]), np.array([0]))


def test_summarize_and_report_md_carry_the_debiased_error_under_new_keys():
    from calibtune.metrics import summarize, top_label
    from calibtune.report.markdown import BOOTSTRAP_FOOTNOTE, render_report

    rng = np.random.default_rng(11)
    p = softmax(rng.normal(size=(400, 4)) * 2.0)
    y = rng.integers(0, 4, 400)
    m = summarize(p, y, n_bins=15, n_boot=200, seed=3)
    conf, correct = top_label(p, y)
    assert m["rms_ce_debiased"] == pytest.approx(debiased_rms_ce(p, y, 15), abs=1e-12)
    want = debiased_ce_interval(conf, correct, 15, n_boot=200, seed=3).to_dict()
    assert m["rms_ce_debiased_ci"] == pytest.approx(want, abs=1e-12)
    assert m["ece"] == pytest.approx(ece(p, y, 15), abs=1e-12)  # the old key keeps its value
    d = m["rms_ce_debiased_ci"]
    text = render_report(m, title="t", context={}, figures=[])
    assert (f"| RMS-CE, debiased (95% interval for the population binned error) | "
            f"{d['estimate']:.3f} [{d['low']:.3f}, {d['high']:.3f}] |") in text
    assert f"| ECE, population binned error: 95% bracket | [{d['ece_low']:.3f}," in text
    assert text.rstrip("\n").endswith(BOOTSTRAP_FOOTNOTE)
    assert "debiased rows are not percentile intervals" in BOOTSTRAP_FOOTNOTE
    assert "interval of the binned estimator at this n, not of the true calibration error" in text
    bare = summarize(p, y, n_bins=15, n_boot=0)
    assert "rms_ce_debiased_ci" not in bare
    text = render_report(bare, title="t", context={}, figures=[])
    assert f"| RMS-CE, debiased | {bare['rms_ce_debiased']:.3f} |" in text
    assert BOOTSTRAP_FOOTNOTE not in text


def test_report_html_shows_the_debiased_row_and_labels_the_bootstrap_intervals(tmp_path):
    from calibtune.metrics import summarize
    from calibtune.report.reading import run_page

    rng = np.random.default_rng(12)
    p = softmax(rng.normal(size=(300, 4)) * 2.0)
    m = summarize(p, rng.integers(0, 4, 300), n_boot=100, seed=0)
    page = run_page(m, title="t", context={}, figures=[], folder=tmp_path)
    d = m["rms_ce_debiased_ci"]
    assert "RMS-CE, debiased" in page and f"[{d['low']:.3f}, {d['high']:.3f}]" in page
    assert "an interval of the binned estimator at this n, not of the true calibration error" in page
    # the footer does not call the debiased interval a percentile bootstrap
    assert "debiased RMS-CE interval is not a percentile interval but √max(0, Ŝ ± 1.96·sd)" in page
