import math

import numpy as np
import pytest
import torch

from calibtune.metrics import bin_table, softmax
from calibtune.training import ece_regulariser, estep_targets, rank_preserving_targets


def test_k4_hand_computed():
    q = rank_preserving_targets([0.7, 0.2, 0.1, 0.0], a=0.5)
    g = math.log(3) / (0.2 * 0.5)
    t = [math.tanh(g * 0.2), math.tanh(g * 0.1), 0.0]
    d = 3 + sum(t)
    np.testing.assert_allclose(q, [0.5, 0.5 * (1 + t[0]) / d, 0.5 * (1 + t[1]) / d, 0.5 / d],
                               atol=1e-12)
    np.testing.assert_allclose(q, [0.5, 0.206844, 0.188458, 0.104699], atol=1e-6)


def test_k2_gives_rest_to_the_other_option():
    np.testing.assert_allclose(rank_preserving_targets([0.4, 0.6], a=0.3), [0.7, 0.3])


def test_k5_hand_computed_and_order_preserved():
    p = [0.05, 0.3, 0.5, 0.1, 0.05]
    q = rank_preserving_targets(p, a=0.6)
    assert q[2] == 0.6
    g = math.log(4) / (0.3 * 0.4)
    t = {i: math.tanh(g * p[i]) for i in (0, 1, 3, 4)}
    d = 4 + sum(t.values())
    for i in (0, 1, 3, 4):
        assert q[i] == pytest.approx(0.4 * (1 + t[i]) / d, abs=1e-12)
    assert q[1] == pytest.approx(0.116515, abs=1e-5)
    assert q[3] == pytest.approx(0.106104, abs=1e-5)
    assert q[0] == pytest.approx(0.088691, abs=1e-5) and q[4] == q[0]


@pytest.mark.parametrize("k", [2, 3, 4, 5, 8, 26])
def test_targets_sum_to_one_and_keep_order(k):
    rng = np.random.default_rng(k)
    for a in (0.0, 0.25, 0.9, 1.0):
        p = softmax(rng.normal(size=(1, k)) * 2)[0]
        q = rank_preserving_targets(p, a)
        assert q.sum() == pytest.approx(1.0, abs=1e-12)
        assert q[p.argmax()] == a
        rest = np.delete(np.arange(k), p.argmax())
        order_p = np.argsort(-p[rest], kind="stable")
        assert np.all(np.diff(q[rest][order_p]) <= 1e-15)  # same order as p
        if a == 1.0:
            assert (q[rest] == 0).all()


def test_estep_bin_table_equals_metrics_bin_table_and_handles_empty_bins():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 4)) * 3
    logits[:50] *= 10  # many items in the top bin [0.9, 1.0]
    labels = rng.integers(0, 4, 500)
    mask = np.ones_like(logits, bool)
    res = estep_targets(logits, labels, mask, 10)
    ref = bin_table(logits, labels, 10, from_logits=True)
    np.testing.assert_array_equal(res.table.count, ref.count)
    np.testing.assert_allclose(res.table.accuracy, ref.accuracy, equal_nan=True)
    assert res.table.count[-1] > 50  # the top bin takes part
    assert (res.table.count == 0).any() and np.isfinite(res.targets).all()
    top = softmax(logits).argmax(1)
    np.testing.assert_allclose(res.targets[np.arange(500), top],
                               res.table.accuracy[res.bin_of_item])


def test_estep_masked_items():
    logits = np.array([[2.0, 1.0, 0.0, 0.0], [0.0, 3.0, 1.0, 2.0]])
    mask = np.array([[True, True, True, False], [True] * 4])
    res = estep_targets(logits, np.array([0, 1]), mask)
    assert res.targets[0, 3] == 0 and res.targets.sum(1) == pytest.approx([1, 1])


def test_regulariser_value_and_gradient_match_a_float64_reference():
    """ece_regulariser against the definition mean_i Σ_j (p_ij − q_ij)², written here in float64
    and itself checked by gradcheck: same value and same autograd gradient, masked options
    included (ece_regulariser computes in float32 for mixed precision, hence the tolerances)."""
    torch.manual_seed(0)
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 4] * 4 + [[True, True, True, False]])
    q = torch.softmax(torch.randn(5, 4, dtype=torch.float64), -1).masked_fill(~mask, 0.0)
    q = q / q.sum(-1, keepdim=True)

    def reference(x):
        p = torch.softmax(x.masked_fill(~mask, float("-inf")), -1).masked_fill(~mask, 0.0)
        return ((p - q) ** 2).sum(-1).mean()

    assert torch.autograd.gradcheck(reference, (z,), eps=1e-6, atol=1e-6)
    value = ece_regulariser(z, mask, q)
    assert float(value.detach()) == pytest.approx(float(reference(z).detach()), rel=1e-5)
    grad = torch.autograd.grad(value, z)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(reference(z), z)[0], atol=1e-6, rtol=1e-4)
    assert grad[4, 3] == 0  # a masked option gets no gradient
    # by hand: two options at equal logits (p = ½, ½) against q = (1, 0): ¼ + ¼
    two = ece_regulariser(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool),
                          torch.tensor([[1.0, 0.0]]))
    assert float(two) == pytest.approx(0.5, abs=1e-7)


def test_regulariser_scale_does_not_depend_on_batch_size():
    z = torch.randn(4, 4)
    mask = torch.ones(4, 4, dtype=torch.bool)
    q = torch.full((4, 4), 0.25)
    one = ece_regulariser(z, mask, q)
    many = ece_regulariser(z.repeat(8, 1), mask.repeat(8, 1), q.repeat(8, 1))
    torch.testing.assert_close(one, many)


def test_bin_prior_zero_keeps_each_bins_accuracy_and_the_nearest_fill():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(60, 4)) * 2, rng.integers(0, 4, 60)
    res = estep_targets(logits, labels, np.ones((60, 4), bool), 10, bin_prior=0.0)
    acc, count = res.table.accuracy, res.table.count
    full = np.flatnonzero(count > 0)
    for k in range(10):  # independent: the nearest non-empty bin, the lower one on a tie
        nearest = min(full, key=lambda j: (abs(j - k), j))
        assert res.bin_accuracy[k] == acc[nearest]


def test_bin_prior_shrinks_a_small_lucky_bin_and_gives_empty_bins_the_overall_accuracy():
    # The seed-2 failure of docs/alignment.md's study: most items near 0.3 confidence and
    # mostly wrong, three items near 0.45 all right, nothing above 0.5.
    conf = np.r_[np.full(20, 0.25), np.full(3, 0.45)]
    correct = np.r_[np.zeros(14, bool), np.ones(6, bool), np.ones(3, bool)]
    k = 4
    # logits whose top option (option 0) has probability conf, the rest sharing 1 - conf
    probs = np.column_stack([conf] + [(1 - conf) / (k - 1)] * (k - 1))
    labels = np.where(correct, 0, 1)
    res = estep_targets(np.log(probs), labels, np.ones_like(probs, bool), 10, bin_prior=10.0)
    overall = 9 / 23
    lucky = (3 + 10 * overall) / (3 + 10)
    np.testing.assert_allclose(res.bin_accuracy[4], lucky)
    np.testing.assert_allclose(res.bin_accuracy[2], (6 + 10 * overall) / (20 + 10))
    np.testing.assert_allclose(res.bin_accuracy[5:], overall)  # no neighbour's 1.0 above it
    np.testing.assert_allclose(estep_targets(np.log(probs), labels, np.ones_like(probs, bool),
                                             10).bin_accuracy[5:], 1.0)  # the default's fill
    # the frozen targets read the same shrunk accuracies
    np.testing.assert_allclose(res.targets[:, 0], res.bin_accuracy[res.bin_of_item])


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan, True, "3"])
def test_bin_prior_must_be_a_finite_number_at_least_zero(bad):
    from calibtune.errors import ConfigError
    from calibtune.options import EceTerm

    with pytest.raises(ConfigError, match="--ece-bin-prior"):
        EceTerm(ece_bin_prior=bad)
