"""Retention measures against one-row-at-a-time references: batch size and padding side do not
matter, KL is 0 for identical models and positive after DPO."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from calibtune.align.config import AlignConfig
from calibtune.align.dpo import dpo_train, encode_pair
from calibtune.align.pairs import PreferencePair, pairs_from_items
from calibtune.align.retention import (KLResult, PreferenceAccuracy, RetentionReport,
                                       kl_divergence, preference_accuracy, response_logprobs,
                                       retention_report)
from calibtune.errors import DataError
from calibtune.models import load_model

from conftest import make_items


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/align/conftest.py


@pytest.fixture(scope="module")
def base(tiny_llama):
    return load_model(str(tiny_llama), device="cpu")


@pytest.fixture(scope="module")
def pairs(base):
    _, tok = base
    items = make_items(10, k=[4, 3], seed=5)
    return (pairs_from_items(items[:4], scoring="letter", style="plain")
            + pairs_from_items(items[4:7], scoring="cloze")
            + pairs_from_items(items[7:], scoring="letter", style="chat", tokenizer=tok))


def naive_logp(model, ids, n_response):
    """log π of the last `n_response` tokens of `ids`, from one unpadded row."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return sum(logp[t - 1, ids[t]].item() for t in range(len(ids) - n_response, len(ids)))


def naive_last(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("side", ["right", "left"])
def test_preference_accuracy_matches_one_pair_at_a_time(batch_size, side, base, pairs):
    model, tok = base
    got = preference_accuracy(model, tok, pairs, batch_size=batch_size, padding_side=side)
    chosen, rejected = [], []
    for pair in pairs:
        enc = encode_pair(tok, pair)
        chosen.append(naive_logp(model, enc.prompt_ids + enc.chosen_ids, len(enc.chosen_ids)))
        rejected.append(naive_logp(model, enc.prompt_ids + enc.rejected_ids,
                                   len(enc.rejected_ids)))
    np.testing.assert_allclose(got.chosen_logps, chosen, atol=1e-4)
    np.testing.assert_allclose(got.rejected_logps, rejected, atol=1e-4)
    margins = np.array(chosen) - np.array(rejected)
    assert got.n == len(pairs) and got.ids == [p.id for p in pairs]
    assert got.accuracy == pytest.approx(np.mean(margins > 0))
    assert got.mean_margin == pytest.approx(margins.mean(), abs=1e-4)
    assert 0 < got.accuracy < 1  # a random model: the check can tell the two apart
    d = got.to_dict()
    assert d["n"] == len(pairs) and len(d["pairs"]) == len(pairs)
    assert set(got.to_dict(per_pair=False)) == {"n", "accuracy", "ties", "mean_margin", "ci"}


def _accuracy(margins):
    return PreferenceAccuracy(len(margins), float(np.mean(margins > 0)), int(np.sum(margins == 0)),
                              float(np.mean(margins)), [f"p{i}" for i in range(len(margins))],
                              margins.tolist(), [0.0] * len(margins))


def test_preference_intervals_agree_with_scipy_bootstrap():
    rng = np.random.default_rng(3)
    margins = rng.normal(0.3, 1.0, 300)
    got = _accuracy(margins).intervals(n_boot=4000)
    for key, stat in (("accuracy", lambda m: np.mean(m > 0)), ("mean_margin", np.mean)):
        ref = scipy.stats.bootstrap((margins,), stat, n_resamples=4000, method="percentile",
                                    random_state=1).confidence_interval
        assert got[key]["estimate"] == pytest.approx(stat(margins))
        assert got[key]["low"] == pytest.approx(ref.low, abs=0.008)  # a 90% interval misses
        assert got[key]["high"] == pytest.approx(ref.high, abs=0.008)


def test_preference_intervals_refuse_what_they_cannot_measure():
    one = _accuracy(np.array([0.7])).intervals()
    assert one["accuracy"]["estimate"] == 1.0 and np.isnan(one["accuracy"]["low"])
    with pytest.raises(DataError, match="1 preference margins are not finite"):
        _accuracy(np.array([0.5, np.nan, 1.0])).intervals()
    saved = _accuracy(np.array([0.5, -1.0])).to_dict(per_pair=False)
    with pytest.raises(DataError, match="no per-pair log-probabilities"):
        PreferenceAccuracy.from_dict(saved)


def test_change_is_paired_and_zero_for_the_same_model():
    rng = np.random.default_rng(4)
    ref = rng.normal(0.5, 1.0, 200)
    tuned = ref + rng.normal(-0.2, 0.1, 200)  # a small, consistent loss on every pair
    kl = KLResult(1, 0.0, 0.0)
    same = RetentionReport(_accuracy(ref), _accuracy(ref), kl).change()
    assert same["accuracy"]["low"] == same["accuracy"]["high"] == 0.0
    got = RetentionReport(_accuracy(tuned), _accuracy(ref), kl).change(n_boot=4000)
    want = scipy.stats.bootstrap((tuned, ref), lambda t, r: np.mean(t) - np.mean(r),
                                 paired=True, vectorized=False, n_resamples=4000,
                                 method="percentile", random_state=1).confidence_interval
    assert got["mean_margin"]["estimate"] == pytest.approx(-0.2, abs=0.03)
    assert got["mean_margin"]["low"] == pytest.approx(want.low, abs=0.005)
    assert got["mean_margin"]["high"] == pytest.approx(want.high, abs=0.005)
    assert got["mean_margin"]["high"] < 0  # paired: the loss shows despite the spread of margins
    want = scipy.stats.bootstrap((tuned, ref), lambda t, r: np.mean(t > 0) - np.mean(r > 0),
                                 paired=True, vectorized=False, n_resamples=4000,
                                 method="percentile", random_state=1).confidence_interval
    assert got["accuracy"]["low"] == pytest.approx(want.low, abs=0.01)
    assert got["accuracy"]["high"] == pytest.approx(want.high, abs=0.01)
    with pytest.raises(DataError, match="different pairs"):
        RetentionReport(_accuracy(tuned[:10]), _accuracy(ref), kl).change()


def test_multi_token_responses_sum_every_token(base):
    model, tok = base
    pair = PreferencePair("x", "the sun", " light water heat", " stone")
    enc = encode_pair(tok, pair)
    assert len(enc.chosen_ids) == 3
    got = response_logprobs(model, [(enc.prompt_ids, enc.chosen_ids)], pad_id=tok.pad_token_id)
    assert got[0] == pytest.approx(naive_logp(model, enc.prompt_ids + enc.chosen_ids, 3),
                                   abs=1e-4)


def test_ties_count_as_misses_and_are_reported(base, pairs, monkeypatch):
    from calibtune.align import retention

    model, tok = base
    # chosen log-probs then rejected ones: pair 1 ties, pair 2 is won
    monkeypatch.setattr(retention, "response_logprobs", lambda *a, **k: np.array([-1., -2., -1., -3.]))
    got = preference_accuracy(model, tok, pairs[:2])
    assert (got.accuracy, got.ties, got.mean_margin) == (0.5, 1, 0.5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_kl_is_zero_for_identical_models(side, tiny_llama, base, pairs):
    model, tok = base
    again, _ = load_model(str(tiny_llama), device="cpu")
    res = kl_divergence(model, tok, pairs, reference=again, batch_size=3, padding_side=side)
    assert res.n == len(pairs) and res.mean_kl == 0.0 and res.max_kl == 0.0


@pytest.fixture(scope="module")
def trained(tiny_llama, pairs):
    model, tok = load_model(str(tiny_llama), device="cpu")
    cfg = AlignConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=2e-2,
                      batch_size=len(pairs), max_steps=4, warmup_ratio=0.0, logging_steps=1)
    return dpo_train(model, tok, pairs, cfg), tok


def test_kl_after_training_matches_the_naive_sum_and_is_positive(trained, base, pairs):
    model, tok = trained
    ref, _ = base
    prompts = [p.prompt for p in pairs if not p.chat]
    with_ref = kl_divergence(model, tok, prompts, reference=ref, batch_size=2,
                             padding_side="left")
    adapter_off = kl_divergence(model, tok, prompts, batch_size=5)  # disable_adapter()
    naive = []
    for text in prompts:
        ids = tok(text)["input_ids"]
        p, q = naive_last(ref, ids), naive_last(model, ids)
        naive.append(float((p.exp() * (p - q)).sum()))
    np.testing.assert_allclose(with_ref.per_prompt, naive, atol=1e-5)
    np.testing.assert_allclose(adapter_off.per_prompt, naive, atol=1e-5)
    assert with_ref.mean_kl > 1e-4 and all(k >= -1e-9 for k in with_ref.per_prompt)
    assert math.isclose(with_ref.mean_kl, np.mean(naive), abs_tol=1e-6)


def test_dpo_moves_preferences_and_the_report_reads_both_models(trained, base, pairs):
    model, tok = trained
    ref, _ = base
    report = retention_report(model, tok, pairs, batch_size=4)
    before = preference_accuracy(ref, tok, pairs)
    # the reference side of the report is the untouched model (adapter disabled)
    np.testing.assert_allclose(report.reference.chosen_logps, before.chosen_logps, atol=1e-5)
    assert report.tuned.mean_margin > before.mean_margin  # trained on these very pairs
    assert report.kl.n == len({(p.prompt, p.chat) for p in pairs}) and report.kl.mean_kl > 0
    d = report.to_dict(per_item=False)
    assert set(d) == {"preference_tuned", "preference_reference", "kl_reference_tuned",
                      "change_tuned_minus_reference"}


def test_kl_without_a_reference_needs_a_peft_model(base, pairs):
    from calibtune.errors import ConfigError

    model, tok = base
    with pytest.raises(ConfigError, match="reference model"):
        kl_divergence(model, tok, pairs)
