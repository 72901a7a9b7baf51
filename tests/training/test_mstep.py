"""RCFT's E-step and M-step against independent computations: live and frozen targets, bin
reduction, SFT normalisation, letter-mode losses, the E-step schedule and dropped items."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from calibtune.metrics.validation import softmax
from calibtune.models import load_model
from calibtune.scores import option_mask
from calibtune.scoring.letter import LetterScorer
from calibtune.scoring.prompts import PromptEncoder
from calibtune.training.config import TrainConfig
from calibtune.training.dataset import MCQCollator, MCQTrainDataset
from calibtune.training.estep import EStepCallback, RegulariserState
from calibtune.training.losses import ece_regulariser
from calibtune.training.objective import loss_terms
from calibtune.training.targets import estep_targets, live_targets
from calibtune.workflows.train import run_training

from conftest import make_items, tiny_train_config, write_train_eval

def reference_targets(p, a):
    """docs/method.md §6 written out per item, independently of the vectorised code."""
    k = len(p)
    top = int(np.argmax(p))
    others = [j for j in range(k) if j != top]
    q = np.zeros(k)
    q[top] = a
    if a >= 1:
        return q
    p2 = max(p[j] for j in others)
    gamma = np.log(k - 1) / (p2 * (1 - a))
    denom = (k - 1) + sum(np.tanh(gamma * p[j]) for j in others)
    for j in others:
        q[j] = (1 - a) * (1 + np.tanh(gamma * p[j])) / denom
    return q


class StubScorer:
    def __init__(self, logits, items):
        self.logits, self.items = logits, items

    def score(self, items):
        index = [self.items.index(it) for it in items]
        k = self.logits.shape[1]
        return SimpleNamespace(logits=self.logits[index][:, :k])


def test_estep_targets_and_masked_accuracy_through_the_callback():
    items = make_items(60, k=[4, 3, 2], seed=7)
    rng = np.random.default_rng(7)
    mask = option_mask([it.n_options for it in items], 4)
    logits = np.where(mask, rng.normal(size=(60, 4)) * 2, 9.0)  # masked entries are the largest
    state = RegulariserState()
    cb = EStepCallback(state, items, lambda model: StubScorer(logits, items), 10, 5)
    cb.run_estep(torch.nn.Linear(1, 1), 0)
    p = softmax(np.where(mask, logits, 0.0), mask)
    labels = np.array([it.answer for it in items])
    assert state.history[-1]["train_accuracy"] == pytest.approx(
        float((np.where(mask, p, -1).argmax(1) == labels).mean()))
    bins = np.minimum((p.max(1) * 10).astype(int), 9)
    acc = {b: float((np.where(mask, p, -1).argmax(1) == labels)[bins == b].mean()) for b in set(bins)}
    for i in range(60):
        expected = reference_targets(p[i, mask[i]], acc[bins[i]])
        np.testing.assert_allclose(state.targets.numpy()[i, mask[i]], expected, atol=1e-6)
        assert (state.targets.numpy()[i, ~mask[i]] == 0).all()


def test_live_targets_equal_frozen_at_the_estep_and_follow_the_current_confidence():
    rng = np.random.default_rng(8)
    mask = np.ones((200, 4), bool)
    z = rng.normal(size=(200, 4)) * 2
    y = rng.integers(0, 4, 200)
    res = estep_targets(z, y, mask, 10)
    p = softmax(z, mask)
    live, bins = live_targets(p, mask, res.table.edges, res.bin_accuracy)
    np.testing.assert_allclose(live, res.targets, atol=1e-12)
    assert (bins == res.bin_of_item).all()
    # sharpen every item: the live bins move up, the frozen ones stay
    sharp = softmax(z * 4, mask)
    live2, bins2 = live_targets(sharp, mask, res.table.edges, res.bin_accuracy)
    assert (bins2 >= bins).all() and (bins2 > bins).any()
    np.testing.assert_allclose(live2[np.arange(200), sharp.argmax(1)], res.bin_accuracy[bins2])


def test_empty_estep_bin_takes_the_nearest_accuracy_in_the_mstep():
    z = np.array([[3.0, 0, 0, 0], [3.0, 0, 0, 0], [0.1, 0, 0, 0]])
    res = estep_targets(z, np.array([0, 1, 0]), np.ones((3, 4), bool), 10)
    assert (res.table.count == 0).any()
    filled = res.bin_accuracy
    assert np.isfinite(filled).all()
    full = np.flatnonzero(res.table.count)
    for b in range(10):
        nearest = full[np.argmin(np.abs(full - b))]
        assert filled[b] == res.table.accuracy[nearest]


def test_bin_reduction_gives_every_bin_the_same_weight():
    rng = np.random.default_rng(9)
    z = torch.tensor(rng.normal(size=(300, 4)) * np.linspace(0.2, 4, 300)[:, None])
    y = rng.integers(0, 4, 300)
    mask = torch.ones(300, 4, dtype=torch.bool)
    state = RegulariserState()
    state.update(estep_targets(z.numpy(), y, mask.numpy(), 10), 0, 0)
    index = torch.arange(300)
    targets, weights = state.batch_targets(z, mask, index, "frozen", "bin")
    per_item = ((torch.softmax(z, -1) - targets) ** 2).sum(-1).numpy()
    bins = state.bin_of_item
    by_bin = np.mean([per_item[bins == b].mean() for b in np.unique(bins)])
    assert float(ece_regulariser(z, mask, targets, weights)) == pytest.approx(by_bin, rel=1e-5)
    plain = float(ece_regulariser(z, mask, targets))
    assert plain == pytest.approx(per_item.mean(), rel=1e-5) and abs(plain - by_bin) > 1e-4


def test_mstep_modes_are_validated():
    for field, bad in (("ece_targets", "fixed"), ("ece_reduction", "batch"),
                       ("sft_normalise", "word")):
        with pytest.raises(Exception, match=field.replace("_", "-")):
            TrainConfig(**{field: bad})


def letter_terms(model, tok, items, **cfg):
    encoder = PromptEncoder(tok, "plain", 4)
    dataset = MCQTrainDataset(items, encoder, 1024)
    batch = MCQCollator(tok, dataset.letter_ids)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        terms = loss_terms(model, batch, TrainConfig(**cfg))
    return (terms.sft, terms.option_scores), batch


def test_letter_option_logits_in_training_equal_the_letter_scorer(tiny_llama):
    model, tok = load_model(str(tiny_llama), device="cpu")
    items = make_items(6, k=[4, 3])
    (_, option_logits), _ = letter_terms(model, tok, items, method="rcft")
    ref = LetterScorer(model, tok, progress=False).score(items)
    np.testing.assert_allclose(option_logits.numpy()[ref.mask], ref.logits[ref.mask], atol=1e-4)


def test_cft_loss_is_minus_log_softmax_over_the_vocabulary_of_the_letter(tiny_llama):
    model, tok = load_model(str(tiny_llama), device="cpu")
    items = make_items(6, k=[4, 3])
    (sft, _), batch = letter_terms(model, tok, items, method="cft")
    encoder = PromptEncoder(tok, "plain", 4)
    expected = []
    for item, ids in zip(items, encoder.encode_prompts(items)):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        expected.append(-torch.log_softmax(logits.double(), -1)[encoder.letter_ids[item.answer]])
    assert float(sft) == pytest.approx(float(torch.stack(expected).mean()), abs=1e-5)


def test_sequence_normalised_sft_is_the_per_sequence_sum(tiny_llama):
    model, tok = load_model(str(tiny_llama), device="cpu")
    items = make_items(5, k=[4, 3])
    (token_loss, _), batch = letter_terms(model, tok, items, method="sft")
    (seq_loss, _), _ = letter_terms(model, tok, items, method="sft", sft_normalise="sequence")
    sums, n_tokens = [], 0
    for r in range(len(items)):
        keep = batch["attention_mask"][r].bool()
        ids = batch["input_ids"][r][keep][None]
        with torch.no_grad():
            out = model(ids, labels=ids)
        n = ids.shape[1] - 1
        sums.append(float(out.loss) * n)
        n_tokens += n
    assert float(seq_loss) == pytest.approx(np.mean(sums), rel=1e-4)
    assert float(token_loss) == pytest.approx(np.sum(sums) / n_tokens, rel=1e-4)


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory):
    """10 training items (batch 4 does not divide them), one too long to train on."""
    items = make_items(10, k=[4, 3], seed=11)
    long = items[3]
    items[3] = type(long)(id=long.id, question=" ".join(["stone"] * 400), options=long.options,
                          answer=long.answer, subject=long.subject)
    return write_train_eval(tmp_path_factory.mktemp("odd"), items, make_items(6, seed=12))


@pytest.mark.parametrize("mode", ["live", "frozen"])
def test_estep_schedule_and_dropped_items(mode, tiny_llama, odd_data, tmp_path):
    prior = 2.0 if mode == "frozen" else 0.0
    cfg = tiny_train_config(tiny_llama, odd_data, tmp_path, method="rcft", epochs=3,
                            max_length=128, save_steps=50, ece_targets=mode, ece_bin_prior=prior)
    run_training(cfg)
    history = json.loads((Path(cfg.out) / "estep_history.json").read_text())
    # 9 kept items / batch 4 = 3 steps an epoch: E-steps at 0, 3, 6 on the 9 kept items only
    assert [h["step"] for h in history] == [0, 3, 6]
    assert all(h["n"] == 9 and sum(h["bins"]["count"]) == 9 for h in history)
    for h in history:  # the targets' accuracies, written out from the bins (docs/method.md §6)
        assert h["bin_prior"] == prior
        count = np.array(h["bins"]["count"], float)
        correct = np.array([a or 0.0 for a in h["bins"]["accuracy"]]) * count
        full = np.flatnonzero(count)
        nearest = [h["bins"]["accuracy"][min(full, key=lambda j: (abs(j - k), j))]
                   for k in range(len(count))]
        shrunk = (correct + prior * correct.sum() / count.sum()) / (count + prior)
        np.testing.assert_allclose(h["target_accuracy"], shrunk if prior else nearest, atol=1e-12)
    if prior:  # the two rules differ on these E-steps, so the prior did reach them
        assert not np.allclose(history[0]["target_accuracy"], nearest)
    log = json.loads((Path(cfg.out) / "train_log.json").read_text())
    assert any("loss_ece" in e for e in log)
