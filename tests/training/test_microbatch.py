"""A batch in micro-batches under a token budget has the gradient of the whole batch."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from calibtune.models import load_model
from calibtune.scoring.prompts import PromptEncoder
from calibtune.training.cloze_dataset import ClozeCollator, ClozeTrainDataset
from calibtune.training.config import TrainConfig
from calibtune.training.dataset import MCQCollator, MCQTrainDataset
from calibtune.training.estep import RegulariserState
from calibtune.training.memory import return_freed_memory
from calibtune.training.microbatch import split_batch
from calibtune.training.objective import loss_terms, total_loss
from calibtune.training.targets import estep_targets
from calibtune.workflows.train import run_training

from conftest import make_items, tiny_train_config, write_train_eval


@pytest.fixture(scope="module")
def model_tok(tiny_llama):
    return load_model(str(tiny_llama), device="cpu")


def batch_of(tok, scoring, method):
    items = make_items(7, k=[4, 3, 2])
    if scoring == "cloze":
        dataset = ClozeTrainDataset(items, tok, 1024, method in ("rcft", "label_smoothing"))
        collate = ClozeCollator(tok, dataset.k_max)
    else:
        dataset = MCQTrainDataset(items, PromptEncoder(tok, "plain", 4), 1024)
        collate = MCQCollator(tok, dataset.letter_ids)
    return items, collate([dataset[i] for i in range(len(dataset))])


def gradients(model, parts, cfg, state):
    model.zero_grad()
    for part in parts:
        loss, _ = total_loss(loss_terms(model, part.inputs, cfg), part.inputs, cfg, state,
                             (part.sft_share, part.ece_share))
        loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("scoring,method,sft_loss", [
    ("letter", "rcft", "full"), ("letter", "cft", None), ("letter", "label_smoothing", None),
    ("cloze", "rcft", "full"), ("cloze", "rcft", "completion"), ("cloze", "label_smoothing", None)])
def test_micro_batches_add_up_to_the_batch_gradient(scoring, method, sft_loss, model_tok):
    model, tok = model_tok
    cfg = TrainConfig(method=method, sft_loss=sft_loss, scoring=scoring)
    items, batch = batch_of(tok, scoring, method)
    rng = np.random.default_rng(0)
    mask = batch["option_mask"].numpy()
    state = RegulariserState()
    state.update(estep_targets(rng.normal(size=mask.shape) * 2, np.array([it.answer for it in items]),
                               mask, cfg.n_bins), 0, 0)
    rows, width = batch["input_ids"].shape
    parts = split_batch(batch, 2 * width if scoring == "letter" else 5 * width, cfg)
    assert 2 < len(parts) < len(items)  # several micro-batches, some of several items
    assert sum(len(p.inputs["label"]) for p in parts) == len(items)
    assert sum(p.ece_share for p in parts) == pytest.approx(1.0)
    assert sum(p.sft_share for p in parts) == pytest.approx(1.0)
    whole = gradients(model, split_batch(batch, rows * width, cfg), cfg, state)
    split = gradients(model, parts, cfg, state)
    assert whole.keys() == split.keys() and whole
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], atol=1e-5, rtol=1e-4)


def test_a_training_run_in_micro_batches_ends_with_the_same_adapter(tiny_llama, tmp_path,
                                                                    monkeypatch):
    from calibtune.training import trainer

    splits = []
    monkeypatch.setattr(trainer, "split_batch",
                        lambda *a: splits.append(split_batch(*a)) or splits[-1])
    (tmp_path / "data").mkdir()
    data = write_train_eval(tmp_path / "data", make_items(16, k=[4, 3], seed=1),
                            make_items(6, seed=2))
    kw = dict(method="rcft", max_steps=4, estep_every_steps=2, epoch_eval_limit=0)
    runs = [run_training(tiny_train_config(tiny_llama, data, tmp_path / name, **kw, **extra))
            for name, extra in (("whole", {}), ("micro", {"max_step_tokens": 40}))]
    assert len(splits) == 4 and all(len(parts) > 1 for parts in splits)  # every step was cut
    a, b = (load_file(r.out / "adapter" / "adapter_model.safetensors") for r in runs)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4)
    assert runs[1].metrics_after["ece"] == pytest.approx(runs[0].metrics_after["ece"], abs=1e-5)


def test_freed_memory_goes_back_to_the_system_under_glibc():
    import platform

    assert return_freed_memory() == (platform.libc_ver()[0] == "glibc")


def test_a_split_steps_logged_terms_are_the_batchs_own():
    """Each micro-batch logs its own mean; the step logs their share-weighted sum, once."""
    from collections import defaultdict

    from calibtune.training.trainer import CalibTrainer

    trainer = CalibTrainer.__new__(CalibTrainer)
    trainer._terms = defaultdict(list, {"loss_sft": [9.0], "loss_ece": [8.0]})
    marks = {"loss_sft": 1, "loss_ece": 1}
    trainer._terms["loss_sft"] += [2.0, 4.0]  # two micro-batches of 1/4 and 3/4 of the tokens
    trainer._terms["loss_ece"] += [0.2, 0.6]  # ... of 1/2 and 1/2 of the items
    trainer._fold_micro_batch_terms(marks, [(0.25, 0.5), (0.75, 0.5)])
    assert trainer._terms["loss_sft"] == [9.0, 0.25 * 2.0 + 0.75 * 4.0]
    assert trainer._terms["loss_ece"] == [8.0, pytest.approx(0.4)]
