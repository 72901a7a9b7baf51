"""The loss terms as plain functions on a model and a collated batch: no Trainer anywhere."""
import numpy as np
import pytest
import torch

from calibtune.errors import ConfigError
from calibtune.models import load_model
from calibtune.scoring import LetterScorer
from calibtune.scoring.prompts import PromptEncoder
from calibtune.training.config import TrainConfig
from calibtune.training.dataset import MCQCollator, MCQTrainDataset
from calibtune.training.estep import RegulariserState
from calibtune.training.losses import ece_regulariser
from calibtune.training.objective import loss_terms, total_loss
from calibtune.training.targets import estep_targets

from conftest import make_items


@pytest.fixture(scope="module")
def model_tok(tiny_llama):
    return load_model(str(tiny_llama), device="cpu")


@pytest.fixture(scope="module")
def letter_batch(model_tok):
    _, tok = model_tok
    items = make_items(6, k=[4, 3])
    dataset = MCQTrainDataset(items, PromptEncoder(tok, "plain", 4), 1024)
    return items, MCQCollator(tok, dataset.letter_ids)([dataset[i] for i in range(len(dataset))])


def test_cft_term_is_the_gold_letters_nll_over_the_vocabulary(model_tok, letter_batch):
    model, _ = model_tok
    _, batch = letter_batch
    with torch.no_grad():
        terms = loss_terms(model, batch, TrainConfig(method="cft"))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    rows = torch.arange(len(batch["label"]))
    at_answer = logits[rows, batch["answer_pos"]]
    gold = batch["letter_ids"][rows, batch["label"]]
    torch.testing.assert_close(terms.sft, torch.nn.functional.cross_entropy(at_answer, gold),
                               atol=1e-5, rtol=1e-5)
    assert terms.option_scores is None and float(terms.anchor) == 0.0


def test_sft_term_is_the_models_own_loss(model_tok, letter_batch):
    model, _ = model_tok
    _, batch = letter_batch
    with torch.no_grad():
        terms = loss_terms(model, batch, TrainConfig(method="sft"))
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["lm_labels"]).loss
    torch.testing.assert_close(terms.sft, ref, atol=1e-5, rtol=1e-5)


def test_rcft_option_scores_equal_the_letter_scorer(model_tok, letter_batch):
    model, tok = model_tok
    items, batch = letter_batch
    with torch.no_grad():
        terms = loss_terms(model, batch, TrainConfig(method="rcft"))
    ref = LetterScorer(model, tok, progress=False).score(items)
    got = terms.option_scores.numpy()
    np.testing.assert_allclose(got[ref.mask], ref.logits[ref.mask], atol=1e-4)


def test_total_loss_weighs_the_terms_and_backpropagates(model_tok, letter_batch):
    model, tok = model_tok
    items, batch = letter_batch
    cfg = TrainConfig(method="rcft", sft_weight=0.5, ece_lambda=2.0)
    scores = LetterScorer(model, tok, progress=False).score(items)
    state = RegulariserState()
    state.update(estep_targets(scores.logits, scores.labels, scores.mask, cfg.n_bins), 0, 0)
    model.zero_grad()
    terms = loss_terms(model, batch, cfg)
    loss, logged = total_loss(terms, batch, cfg, state)
    targets, _ = state.batch_targets(terms.option_scores, batch["option_mask"],
                                     batch["item_index"], cfg.ece_targets, cfg.ece_reduction)
    reg = ece_regulariser(terms.option_scores, batch["option_mask"], targets)
    torch.testing.assert_close(loss, 0.5 * terms.sft + 2.0 * reg)
    assert set(logged) == {"loss_sft", "loss_ece"}
    loss.backward()
    assert model.get_output_embeddings().weight.grad.abs().sum() > 0
    model.zero_grad()
    with pytest.raises(ConfigError, match="reg_state"):
        total_loss(terms, batch, cfg)


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_item_index_is_the_examples_row_in_kept_items(model_tok, scoring):
    """The frozen M-step targets are read by item_index: it must point at the item itself."""
    from calibtune.training.cloze_dataset import ClozeTrainDataset

    _, tok = model_tok
    items = make_items(5, k=[4, 3])
    dataset = (ClozeTrainDataset(items, tok, 1024, True) if scoring == "cloze"
               else MCQTrainDataset(items, PromptEncoder(tok, "plain", 4), 1024))
    assert [dataset.kept_items[e["item_index"]].id for e in dataset.examples] == \
        [it.id for it in items]


def test_frozen_targets_are_each_items_own(model_tok, letter_batch):
    model, tok = model_tok
    items, batch = letter_batch
    scores = LetterScorer(model, tok, progress=False).score(items)
    result = estep_targets(scores.logits, scores.labels, scores.mask, 10)
    state = RegulariserState()
    state.update(result, 0, 0)
    cfg = TrainConfig(method="rcft", ece_targets="frozen")
    with torch.no_grad():
        terms = loss_terms(model, batch, cfg)
        targets, _ = state.batch_targets(terms.option_scores, batch["option_mask"],
                                         batch["item_index"], "frozen", "item")
        loss, _ = total_loss(terms, batch, cfg, state)
    np.testing.assert_allclose(targets.numpy(), result.targets, atol=1e-6)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("method", ["cft", "label_smoothing"])
def test_a_completion_method_with_the_full_sequence_loss_is_refused(method):
    """Its completion term would be replaced by the full-sequence loss: the run would be SFT
    under another name (a CFT run configured so trained identically to SFT)."""
    with pytest.raises(ConfigError, match=f"--method {method} is a completion-only loss"):
        TrainConfig(method=method, sft_loss="full")
    assert TrainConfig(method=method).sft_loss == "completion"
    assert TrainConfig(method="rcft", sft_loss="full").sft_loss == "full"  # RCFT takes either
    with pytest.raises(ConfigError, match="--method sft is the full-sequence loss"):
        TrainConfig(method="sft", sft_loss="completion")
