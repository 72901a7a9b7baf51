"""Metrics cross-checked against torchmetrics, netcal, scikit-learn and plain reference loops."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from netcal.metrics import ECE as NetcalECE
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from torchmetrics.functional.classification import multiclass_calibration_error
from torchmetrics.functional.classification.calibration_error import _ce_compute

from calibtune.metrics import (MetricInputError, accuracy, area_under_accuracy_coverage, auroc,
                               bin_table, bootstrap_ci, brier, classwise_ece, ece,
                               ece_noise_floor, nll, selective_accuracy, smooth_ece,
                               smooth_ece_at, softmax)


def random_probs(n, k, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return softmax(rng.normal(size=(n, k)) * scale), rng.integers(0, k, n)


def reference_ece(conf, correct, n_bins=10, norm="l1"):
    """Straightforward loop: bin k holds lo <= c < hi, the last bin also c == 1."""
    total, gaps, n = 0.0, [], len(conf)
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        inb = [(c >= lo and (c < hi or (k == n_bins - 1 and c <= 1.0))) for c in conf]
        idx = [i for i, b in enumerate(inb) if b]
        if not idx:
            continue
        gap = abs(np.mean([correct[i] for i in idx]) - np.mean([conf[i] for i in idx]))
        gaps.append(gap)
        total += len(idx) / n * (gap if norm == "l1" else gap ** 2)
    return max(gaps) if norm == "max" else (total if norm == "l1" else np.sqrt(total))


def top(p, y):
    return p.max(1), (p.argmax(1) == y).astype(float)


# ---- cross-checks ------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 4, 26])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_ece_matches_torchmetrics_and_reference(k, norm):
    p, y = random_probs(3000, k, seed=k)
    ours = ece(p, y, 15, norm=norm)
    conf, correct = top(p, y)
    # torchmetrics' own binning kernel in float64: agrees to 1e-9
    tm64 = _ce_compute(torch.tensor(conf), torch.tensor(correct), 15, norm=norm).item()
    assert ours == pytest.approx(tm64, abs=1e-9)
    # its public API computes in float32: agrees to float32 precision
    tm = multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=k, n_bins=15,
                                      norm=norm).item()
    assert ours == pytest.approx(tm, abs=1e-6)
    assert ours == pytest.approx(reference_ece(*top(p, y), 15, norm), abs=1e-9)


def test_confidence_one_differs_from_torchmetrics_by_design():
    """torchmetrics puts c = 1.0 in a bin of its own; calibtune puts it in the last bin
    (docs/method.md §3)."""
    p = np.array([[1.0, 0.0], [0.95, 0.05], [0.92, 0.08], [0.3, 0.7]])
    y = np.array([1, 0, 0, 1])  # the c = 1.0 item is wrong, the other two top-bin items right
    ours = ece(p, y, 10)
    assert ours == pytest.approx(reference_ece(*top(p, y)), abs=1e-12)
    # last bin {1.0, .95, .92}: acc 2/3, conf .9567 (weight 3/4); bin [.7, .8): acc 1, conf .7
    assert ours == pytest.approx(0.75 * abs(2 / 3 - (1 + .95 + .92) / 3) + 0.25 * 0.3, abs=1e-12)
    tm = _ce_compute(*map(torch.tensor, top(p, y)), 10).item()
    # torchmetrics: {1.0} alone (gap 1), {.95, .92} (acc 1, conf .935), {.7}
    assert tm == pytest.approx(0.25 * 1 + 0.5 * abs(1 - 0.935) + 0.25 * 0.3, abs=1e-9)
    assert ours != pytest.approx(tm)


@pytest.mark.parametrize("equal_intervals", [True, False])
def test_ece_matches_netcal(equal_intervals):
    p, y = random_probs(2000, 4, seed=3)
    strategy = "uniform" if equal_intervals else "quantile"
    ref = NetcalECE(bins=10, equal_intervals=equal_intervals).measure(p, y)
    assert ece(p, y, 10, strategy) == pytest.approx(ref, abs=1e-9)


def test_bin_table_matches_sklearn_calibration_curve():
    p, y = random_probs(5000, 4, seed=5)
    conf, correct = top(p, y)
    table = bin_table(p, y, 10)
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=10, strategy="uniform")
    full = table.count > 0
    np.testing.assert_allclose(table.accuracy[full], prob_true, atol=1e-9)
    np.testing.assert_allclose(table.confidence[full], prob_pred, atol=1e-9)


def test_brier_nll_auroc_match_sklearn():
    p, y = random_probs(1000, 4, seed=7)
    onehot = np.eye(4)[y]
    assert brier(p, y) == pytest.approx(np.mean(np.sum((p - onehot) ** 2, 1)), abs=1e-12)
    p2, y2 = random_probs(1000, 2, seed=8)
    assert brier(p2, y2) == pytest.approx(2 * brier_score_loss(y2, p2[:, 1]), abs=1e-12)
    assert nll(p, y) == pytest.approx(log_loss(y, p, labels=[0, 1, 2, 3]), abs=1e-9)
    conf, correct = top(p, y)
    assert auroc(p, y) == pytest.approx(roc_auc_score(correct, conf), abs=1e-12)


def test_auroc_with_ties_matches_sklearn():
    p = np.array([[0.6, 0.4], [0.6, 0.4], [0.8, 0.2], [0.8, 0.2], [0.5, 0.5]])
    y = np.array([0, 1, 0, 1, 0])
    conf, correct = top(p, y)
    assert auroc(p, y) == pytest.approx(roc_auc_score(correct, conf), abs=1e-12)


def test_classwise_ece_reference_loop():
    p, y = random_probs(800, 5, seed=9)
    per_class = []
    for j in range(5):
        per_class.append(reference_ece(p[:, j], (y == j).astype(float), 10))
    assert classwise_ece(p, y) == pytest.approx(np.mean(per_class), abs=1e-12)


def test_nll_from_logits_is_exact():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4)) * 30
    y = rng.integers(0, 4, 50)
    exact = nll(logits, y, from_logits=True)
    ls = logits - logits.max(1, keepdims=True)
    ls = ls - np.log(np.exp(ls).sum(1, keepdims=True))
    assert exact == pytest.approx(-ls[np.arange(50), y].mean(), rel=1e-12)


# ---- edge cases --------------------------------------------------------------------------------

def test_one_item_and_all_in_one_bin():
    assert ece(np.array([[0.7, 0.3]]), np.array([0])) == pytest.approx(0.3)
    assert ece(np.array([[0.7, 0.3]]), np.array([1])) == pytest.approx(0.7)
    p = np.tile([0.55, 0.45], (10, 1))
    y = np.array([0] * 6 + [1] * 4)
    assert ece(p, y) == pytest.approx(0.05)
    assert ece(p, y, norm="max") == pytest.approx(0.05)
    table = bin_table(p, y)
    assert table.count.tolist() == [0] * 5 + [10] + [0] * 4
    assert np.isnan(table.accuracy[0])


def test_confidence_zero_and_one_bins():
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert ece(p, np.array([0, 1])) == 0.0
    assert ece(p, np.array([1, 0])) == 1.0
    assert bin_table(p, np.array([0, 1])).count[-1] == 2


def test_argmax_ties_go_to_first_option():
    p = np.array([[0.5, 0.5]])
    assert accuracy(p, np.array([0])) == 1.0 and accuracy(p, np.array([1])) == 0.0


def test_masked_options():
    logits = np.array([[2.0, 1.0, 0.0, 99.0], [0.0, 3.0, 1.0, 1.0]])
    mask = np.array([[True, True, True, False], [True, True, True, True]])
    p = softmax(logits, mask)
    assert p[0, 3] == 0 and p.sum(1) == pytest.approx([1, 1])
    y = np.array([0, 1])
    assert ece(logits, y, mask=mask, from_logits=True) == pytest.approx(ece(p, y, mask=mask))
    with pytest.raises(MetricInputError, match="masked option"):
        ece(p, np.array([3, 1]), mask=mask)
    # items without option D take no part in class D's ECE: an independent computation that
    # drops item 0 from class D must agree (counting it with p = 0 would give another value)
    def binned(values, hits):
        bins = np.minimum((values * 10).astype(int), 9)
        return sum(abs(hits[bins == b].mean() - values[bins == b].mean()) * (bins == b).sum()
                   for b in set(bins)) / len(values)

    expected = np.mean([binned(p[mask[:, j], j], (y[mask[:, j]] == j).astype(float))
                        for j in range(4)])
    assert classwise_ece(p, y, mask=mask) == pytest.approx(expected, abs=1e-12)
    with_zero = np.mean([binned(p[:, j], (y == j).astype(float)) for j in range(4)])
    assert abs(with_zero - expected) > 1e-3


@pytest.mark.parametrize("bad, match", [
    (dict(probs=np.array([[0.5, 0.6]])), "sums to"),
    (dict(probs=np.array([[np.nan, 1.0]])), "NaN"),
    (dict(labels=np.array([2])), "out of range"),
    (dict(labels=np.array([0, 1])), "shape"),
    (dict(probs=np.array([0.5, 0.5])), "2-D"),
    (dict(probs=np.array([[2.0, -1.0]])), "from_logits"),
])
def test_invalid_inputs(bad, match):
    args = dict(probs=np.array([[0.5, 0.5]]), labels=np.array([0]))
    args.update(bad)
    with pytest.raises(MetricInputError, match=match):
        ece(args["probs"], args["labels"])


def test_selective_accuracy_and_area():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])  # correct, wrong, correct, correct
    assert selective_accuracy(p, y, 0.25) == 1.0
    assert selective_accuracy(p, y, 0.5) == 0.5
    assert selective_accuracy(p, y, 1.0) == 0.75
    assert area_under_accuracy_coverage(p, y) == pytest.approx(np.mean([1, 0.5, 2 / 3, 0.75]))
    tie = np.array([[0.6, 0.4], [0.6, 0.4]])
    assert selective_accuracy(tie, np.array([0, 1]), 0.5) == 0.5  # ties shared pro rata


# ---- uncertainty -------------------------------------------------------------------------------

def test_perfectly_calibrated_model_ece_falls_to_noise_floor():
    rng = np.random.default_rng(0)
    for n in (200, 20000):
        conf = rng.uniform(0.5, 1.0, n)
        correct = (rng.random(n) < conf).astype(float)
        p = np.stack([conf, 1 - conf], 1)
        y = np.where(correct == 1, 0, 1)
        floor = ece_noise_floor(conf, 10, n_sim=300)
        assert floor.q05 <= ece(p, y) <= floor.q95 * 1.5
    assert ece_noise_floor(rng.uniform(0.5, 1, 20000), n_sim=100).mean < \
        ece_noise_floor(rng.uniform(0.5, 1, 200), n_sim=100).mean / 5


def test_noise_floor_matches_direct_simulation():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.3, 1.0, 150)
    floor = ece_noise_floor(conf, 10, n_sim=400, seed=3)
    sim = np.random.default_rng(3)
    direct = [reference_ece(conf, (sim.random(150) < conf).astype(float)) for _ in range(400)]
    assert floor.mean == pytest.approx(np.mean(direct), abs=1e-12)


def test_bootstrap_ci_covers_the_estimate_and_is_seeded():
    p, y = random_probs(300, 4, seed=11)
    ci = bootstrap_ci(ece, p, y, n_boot=200, seed=0)
    assert ci.low <= ci.estimate <= ci.high
    assert ci == bootstrap_ci(ece, p, y, n_boot=200, seed=0)
    assert ci.high - ci.low < 0.2


# ---- smooth ECE --------------------------------------------------------------------------------

def test_smooth_ece_grid_matches_exact_kernel_sum():
    from calibtune.metrics.smooth import reflected_gaussian

    rng = np.random.default_rng(2)
    conf = rng.uniform(0.4, 1.0, 300)
    correct = (rng.random(300) < conf - 0.1).astype(float)
    t = np.linspace(0, 1, 4001)
    exact_curve = reflected_gaussian(t, conf, 0.05) @ (correct - conf) / 300
    exact = np.trapezoid(np.abs(exact_curve), t)
    assert smooth_ece_at(conf, correct, 0.05) == pytest.approx(exact, rel=1e-2)


def test_smooth_ece_tracks_miscalibration():
    rng = np.random.default_rng(4)
    conf = rng.uniform(0.5, 1.0, 5000)
    calibrated = (rng.random(5000) < conf).astype(float)
    off = (rng.random(5000) < conf - 0.2).astype(float)
    to_p = lambda c: np.stack([c, 1 - c], 1)  # noqa: E731
    assert smooth_ece(to_p(conf), np.where(calibrated == 1, 0, 1)) < 0.03
    assert smooth_ece(to_p(conf), np.where(off == 1, 0, 1)) == pytest.approx(0.2, abs=0.03)


# ---- properties --------------------------------------------------------------------------------

prob_rows = arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(2, 6)),
                   elements=st.floats(0.0, 10.0, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(prob_rows, st.integers(0, 2 ** 31), st.sampled_from(["uniform", "quantile"]))
def test_ece_bounded_and_order_invariant(raw, seed, strategy):
    raw = raw + 1e-3
    p = raw / raw.sum(1, keepdims=True)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, p.shape[1], len(p))
    value = ece(p, y, 10, strategy)
    assert 0.0 <= value <= 1.0
    perm = rng.permutation(len(p))
    assert ece(p[perm], y[perm], 10, strategy) == pytest.approx(value, abs=1e-12)
    assert 0.0 <= classwise_ece(p, y) <= 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 8)), min_size=1, max_size=8))
def test_ece_zero_when_each_bin_accuracy_equals_confidence(spec):
    """Bins whose items have confidence c and a share c of them correct give ECE = 0."""
    confs, correct = [], []
    for bin_k, m in spec:
        c = (bin_k + 0.5) / 10  # bin centre, well inside bin k
        n_right = m * 2
        n_items = n_right * 10  # choose a count where c·n is an integer
        k_right = round(c * n_items)
        confs += [c] * n_items
        correct += [1] * k_right + [0] * (n_items - k_right)
    conf = np.array(confs)
    corr = np.array(correct)
    p = np.stack([conf, 1 - conf], 1)
    y = np.where(corr == 1, 0, 1)
    assert ece(p, y) == pytest.approx(0.0, abs=1e-12)
