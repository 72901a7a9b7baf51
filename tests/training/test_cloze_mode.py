"""Training in cloze mode: the losses read the option texts' log-likelihoods, the E-step and the
evaluation score the same way, and the numbers match the cloze scorer's."""
import json

import numpy as np
import pytest
import torch

from calibtune.scoring.cloze import ClozeScorer
from calibtune.metrics import bin_table
from calibtune.models import load_model
from calibtune.scores import OptionScores
from calibtune.training.cloze_dataset import ClozeCollator, ClozeTrainDataset
from calibtune.training.config import TrainConfig
from calibtune.workflows.train import run_training
from calibtune.training.objective import loss_terms

from conftest import make_items, tiny_train_config, write_train_eval


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_eval(tmp_path_factory.mktemp("cloze-train-data"),
                            make_items(16, k=[3, 2], seed=3), make_items(8, k=[3], seed=4))


def config(model, data, tmp_path, **kw):
    return tiny_train_config(model, data, tmp_path,
                             **({"scoring": "cloze", "epochs": 1, "save_steps": 50} | kw))


def cloze_terms(model, tok, items, **cfg):
    """The cloze loss terms on one batch of `items`: the objective, no Trainer."""
    all_options = cfg.get("method") in ("rcft", "label_smoothing")
    dataset = ClozeTrainDataset(items, tok, 1024, all_options)
    batch = ClozeCollator(tok, dataset.k_max)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        terms = loss_terms(model, batch, TrainConfig(scoring="cloze", **cfg))
    return terms.sft, terms.option_scores


@pytest.mark.parametrize("norm", ["none", "token", "char"])
def test_rcft_option_scores_equal_the_cloze_scorer(tiny_qwen, norm):
    model, tok = load_model(str(tiny_qwen), device="cpu")
    items = make_items(5, k=[3, 2, 4])
    _, option_scores = cloze_terms(model, tok, items, method="rcft", cloze_norm=norm)
    ref = ClozeScorer(model, tok, norm=norm, progress=False).score(items)
    np.testing.assert_allclose(option_scores.numpy()[ref.mask], ref.logits[ref.mask], atol=2e-4)


def test_cft_loss_is_the_gold_texts_mean_token_nll(tiny_qwen):
    model, tok = load_model(str(tiny_qwen), device="cpu")
    items = make_items(5, k=[3, 4])
    sft, option_scores = cloze_terms(model, tok, items, method="cft")
    assert option_scores is None
    raw = ClozeScorer(model, tok, norm="token", progress=False).score(items)
    gold = raw.logits[np.arange(len(items)), raw.labels]
    assert float(sft) == pytest.approx(-gold.mean(), abs=2e-4)
    # label smoothing: (1 - eps) gold + eps * mean over the item's options (per-token NLL)
    smooth, _ = cloze_terms(model, tok, items, method="label_smoothing", label_smoothing=0.2)
    spread = (raw.logits * raw.mask).sum(1) / raw.mask.sum(1)
    assert float(smooth) == pytest.approx(-(0.8 * gold + 0.2 * spread).mean(), abs=2e-4)


@pytest.mark.parametrize("method", ["sft", "cft", "rcft", "label_smoothing"])
def test_every_method_trains_in_cloze_mode(method, tiny_llama, data, tmp_path):
    result = run_training(config(tiny_llama, data, tmp_path, method=method, max_steps=3))
    scores = OptionScores.load(result.out / "eval" / "scores.npz")
    assert scores.meta["scoring"] == "cloze" and scores.mask.sum(1).tolist() == [3] * 8
    logged = {k for e in json.loads((result.out / "train_log.json").read_text()) for k in e}
    assert ("loss_ece" in logged) == (method == "rcft") and "loss_sft" in logged


def test_cloze_estep_bins_come_from_the_cloze_scorer(tiny_llama, data, tmp_path):
    cfg = config(tiny_llama, data, tmp_path, method="rcft", cloze_norm="token", max_steps=2,
                 eval_before=False, epoch_eval_limit=0)
    run_training(cfg)
    first = json.loads((tmp_path / "run" / "estep_history.json").read_text())[0]
    from calibtune.data import load_dataset

    items = load_dataset(cfg.data).items
    model, tok = load_model(str(tiny_llama), device="cpu")
    s = ClozeScorer(model, tok, norm="token", progress=False).score(items)
    table = bin_table(s.probs(), s.labels, 10, mask=s.mask)
    assert first["bins"]["count"] == table.count.tolist()
    accuracy = [np.nan if a is None else a for a in first["bins"]["accuracy"]]  # null: empty bin
    np.testing.assert_allclose(accuracy, table.accuracy, atol=1e-9)


def test_cloze_config_is_validated():
    from calibtune.errors import ConfigError

    with pytest.raises(ConfigError, match="--scoring"):
        TrainConfig(scoring="logits")
    with pytest.raises(ConfigError, match="--cloze-norm"):
        TrainConfig(scoring="cloze", cloze_norm="bytes")


def test_cloze_adapter_scores_the_same_after_reloading(tiny_llama, data, tmp_path):
    """The in-training evaluation (shared-context cache through the LoRA model) equals a fresh
    `calibtune eval --adapter` of the saved adapter."""
    from typer.testing import CliRunner

    from calibtune.cli import app

    result = run_training(config(tiny_llama, data, tmp_path, method="cft", max_steps=3,
                                 cloze_norm="token"))
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_llama), "--adapter",
                                   str(result.out / "adapter"), "--data", str(data / "eval.jsonl"),
                                   "--scoring", "cloze", "--cloze-norm", "token", "--n-boot", "0",
                                   "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    again = OptionScores.load(tmp_path / "ev" / "scores.npz")
    during = OptionScores.load(result.out / "eval" / "scores.npz")
    before = OptionScores.load(result.out / "eval_before" / "scores.npz")
    np.testing.assert_allclose(again.logits, during.logits, atol=1e-4)
    assert np.abs(during.logits - before.logits).max() > 1e-3  # the adapter changed the scores
