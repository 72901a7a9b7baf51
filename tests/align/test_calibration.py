"""`align --calibration-weight λ`: the option scores the term reads equal the scorers' (letter and
cloze), its gradients match central differences, λ = 0 is plain DPO, a λ > 0 run logs the term
the E-step's targets give, resumes exactly and refuses a tampered E-step state, bad input is
refused."""
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from calibtune.align.calibration import (HiddenCapture, PairOptionScores,
                                         calibrated_preference_loss, calibration_term,
                                         cloze_option_scores, letter_option_scores)
from calibtune.align.config import AlignConfig
from calibtune.align.dpo import calibration_setup, encode_pairs, make_dpo_trainer
from calibtune.align.pairs import pairs_from_items
from calibtune.errors import ConfigError, TrainingError
from calibtune.models import load_model
from calibtune.scoring.factory import make_scorer
from calibtune.scoring.forward import Head, unwrap
from calibtune.workflows.align import run_alignment

from conftest import make_items, write_train_eval

from .test_align_run import Crash, CrashAfterSave


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/align/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_eval(tmp_path_factory.mktemp("calib-data"), make_items(8, k=[4, 3], seed=1),
                            make_items(4, seed=2))


def config(model, data, out, **kw):
    base = dict(model=str(model), data=str(data / "train.jsonl"), split=None,
                eval_data=str(data / "eval.jsonl"), eval_split=None, eval_limit=2,
                batch_size=8, lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=1e-2,
                warmup_ratio=0.0, logging_steps=1, max_steps=2, save_steps=2, eval_before=False,
                retention=False, out=str(out))
    return AlignConfig(**(base | kw))


def forward_batch(model, tok, items, cfg, tmp_path, style="plain"):
    """(the trainer's collated batch of every pair, the policy's final hidden states of it, the
    output head, the calibration setup): what the calibrated trainer's loss reads."""
    pairs = pairs_from_items(items, scoring=cfg.scoring, style=style, tokenizer=tok)
    encoded, _ = encode_pairs(tok, pairs, append_eos=cfg.append_eos)
    setup = calibration_setup(tok, encoded, pairs, items, cfg)
    trainer = make_dpo_trainer(model, tok, encoded, cfg, str(tmp_path / "t"),
                               save_checkpoints=False, progress=False, calibration=setup)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(encoded))])
    policy = trainer.model.eval()
    inner = unwrap(policy)
    with torch.no_grad(), HiddenCapture(inner.get_decoder()) as captured:
        policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    head = Head(inner.get_output_embeddings(), None)
    return batch, captured.hidden, head, setup, policy


@pytest.mark.parametrize("style", ["plain", "chat"])
def test_letter_option_scores_are_the_letter_scorers_logits(tiny_llama, tmp_path, style):
    model, tok = load_model(str(tiny_llama), device="cpu")
    items = make_items(6, k=[4, 3], seed=3)  # K = 4 and K = 3 in one batch
    cfg = AlignConfig(calibration_weight=1.0, scoring="letter", prompt=style, lora_r=4,
                      lora_alpha=8, lora_dropout=0.0)
    batch, hidden, head, setup, policy = forward_batch(model, tok, items, cfg, tmp_path, style)
    option = letter_option_scores(head, hidden, batch, torch.tensor(setup.letter_ids))
    expected = make_scorer(policy, tok, "letter", prompt=style, progress=False).score(setup.items)
    assert option.mask.tolist() == expected.mask.tolist()
    assert option.mask.sum(1).tolist() == [4, 3, 4, 3, 4, 3]
    assert option.label.tolist() == [it.answer for it in items]
    np.testing.assert_allclose(option.scores.numpy()[expected.mask], expected.logits[expected.mask],
                               atol=1e-4)


@pytest.mark.parametrize("norm, eos", [("none", False), ("token", False), ("char", False),
                                       ("token", True)])
def test_cloze_option_scores_are_the_cloze_scorers_scores(tiny_llama, tmp_path, norm, eos):
    """With --append-eos each completion ends in EOS, which the cloze scorer does not read."""
    model, tok = load_model(str(tiny_llama), device="cpu")
    items = make_items(6, k=[4, 3], seed=3)
    cfg = AlignConfig(calibration_weight=1.0, scoring="cloze", cloze_norm=norm, lora_r=4,
                      lora_alpha=8, lora_dropout=0.0, append_eos=eos)
    batch, hidden, head, setup, policy = forward_batch(model, tok, items, cfg, tmp_path)
    assert all(it.n_options == 2 and it.answer == 0 for it in setup.items)
    assert bool((batch["input_ids"] == tok.eos_token_id).any()) == eos
    option = cloze_option_scores(head, hidden, batch, norm, appended_eos=eos)
    expected = make_scorer(policy, tok, "cloze", cloze_norm=norm, progress=False).score(setup.items)
    assert option.scores.shape == (6, 2) and bool(option.mask.all())
    assert option.label.tolist() == [0] * 6
    np.testing.assert_allclose(option.scores.numpy(), expected.logits, atol=1e-4)


# -- gradients against central differences -------------------------------------------------------
# ece_regulariser and the cloze log-likelihoods compute in float32 (`.float()`, for bf16 models),
# so the inputs are float64 but the function is float32 inside: step h = 1e-3, where float32
# rounding (≈ 6e-8 / h) and the O(h²) truncation both stay below 1e-4; tolerance 5e-4 absolute.
H, TOL = 1e-3, 5e-4


def central_differences(f, x: torch.Tensor) -> torch.Tensor:
    grad = torch.zeros_like(x)
    flat, g = x.detach().clone().view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + H
        up = f(flat.view_as(x)).item()
        flat[i] = old - H
        down = f(flat.view_as(x)).item()
        flat[i] = old
        g[i] = (up - down) / (2 * H)
    return grad


def autograd(f, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    f(x).backward()
    return x.grad


def test_the_terms_gradient_in_the_option_scores_is_the_finite_differences():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 4, generator=g, dtype=torch.float64) * 2
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[1, 3] = mask[4, 2:] = False  # a K = 3 and a K = 2 item
    targets = torch.rand(5, 4, generator=g, dtype=torch.float64).masked_fill(~mask, 0)
    targets = (targets / targets.sum(1, keepdim=True)).float()
    weights = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25])
    label = torch.zeros(5, dtype=torch.long)
    for w in (None, weights):
        def f(s):
            return calibration_term(PairOptionScores(s, mask, label), targets, w)
        analytic, numeric = autograd(f, scores), central_differences(f, scores)
        assert analytic.abs().max() > 1e-2  # not a trivially flat point
        torch.testing.assert_close(analytic, numeric, atol=TOL, rtol=0)
        assert bool((analytic[~mask] == 0).all())  # a masked option gets no gradient


def chain_batch(g, n_pairs=3, length=6, vocab=11):
    """A hand-made TRL batch: 2B right-padded rows (chosen, then rejected), completions of 1-2
    tokens after prompts of different lengths."""
    prompt_len, comp_len = [3, 4, 2], [[1, 2], [2, 1], [1, 1]]
    completion = torch.zeros(2 * n_pairs, length, dtype=torch.long)
    for b in range(n_pairs):
        for side in (0, 1):
            start = prompt_len[b]
            completion[side * n_pairs + b, start: start + comp_len[b][side]] = 1
    return {"input_ids": torch.randint(0, vocab, (2 * n_pairs, length), generator=g),
            "completion_mask": completion, "item_index": torch.arange(n_pairs),
            "gold_option": torch.tensor([1, 0, 2]), "n_options": torch.tensor([4, 3, 3]),
            "n_chars_chosen": torch.tensor([5, 9, 3]), "n_chars_rejected": torch.tensor([7, 4, 6])}


@pytest.mark.parametrize("mode", ["letter", "cloze-none", "cloze-token", "cloze-char"])
def test_the_chain_from_hidden_states_to_the_term_has_the_finite_difference_gradient(mode):
    g = torch.Generator().manual_seed(1)
    d, vocab = 4, 11
    linear = torch.nn.Linear(d, vocab, bias=False).double()
    with torch.no_grad():
        linear.weight.copy_(torch.randn(vocab, d, generator=g, dtype=torch.float64))
    head = Head(linear)
    batch = chain_batch(g, vocab=vocab)
    hidden = torch.randn(6, 6, d, generator=g, dtype=torch.float64)
    letters = torch.tensor([5, 6, 7, 8])
    k = 4 if mode == "letter" else 2
    targets = torch.softmax(torch.randn(3, k, generator=g), -1)
    if mode == "letter":
        targets[1:, 3] = 0  # the K = 3 items' fourth option is masked

    def f(h):
        option = letter_option_scores(head, h, batch, letters) if mode == "letter" else \
            cloze_option_scores(head, h, batch, mode.split("-")[1])
        return calibration_term(option, targets, torch.tensor([1.0, 2.0, 0.5]))

    analytic, numeric = autograd(f, hidden), central_differences(f, hidden)
    assert analytic.abs().max() > 1e-2
    torch.testing.assert_close(analytic, numeric, atol=TOL, rtol=0)
    if mode == "letter":  # only the chosen rows' last prompt position is read
        read = torch.zeros(6, 6, dtype=torch.bool)
        read[[0, 1, 2], [2, 3, 1]] = True
        assert bool((analytic[~read] == 0).all())


# -- λ = 0 is plain DPO ---------------------------------------------------------------------------
def test_a_zero_weight_returns_the_preference_loss_itself_and_builds_the_plain_trainer(
        tiny_llama, tmp_path):
    loss = torch.tensor(0.693, requires_grad=True)
    assert calibrated_preference_loss(loss, torch.tensor(float("nan")), 0.0) is loss
    assert calibrated_preference_loss(loss, torch.tensor(0.5), 2.0).item() == pytest.approx(1.693)
    model, tok = load_model(str(tiny_llama), device="cpu")
    encoded, _ = encode_pairs(tok, pairs_from_items(make_items(4)))
    plain = make_dpo_trainer(model, tok, encoded, AlignConfig(lora_r=4, lora_alpha=8),
                             str(tmp_path / "t"), save_checkpoints=False, progress=False)
    assert type(plain).__name__ == "PreferenceTrainer" and not hasattr(plain, "reg_state")


def test_dpo_train_takes_the_weight_with_the_items(tiny_llama):
    from calibtune.align.dpo import dpo_train

    model, tok = load_model(str(tiny_llama), device="cpu")
    items = make_items(4, k=[4, 3])
    cfg = AlignConfig(lora_r=4, lora_alpha=8, max_steps=1, batch_size=4, learning_rate=1e-2,
                      calibration_weight=1.0)
    with pytest.raises(ConfigError, match="needs the pairs' MCQ items"):
        dpo_train(model, tok, pairs_from_items(items), cfg)
    trained = dpo_train(model, tok, pairs_from_items(items), cfg, items=items)
    assert not trained.training and hasattr(trained, "disable_adapter")


def adapter(out):
    return load_file(out / "adapter" / "adapter_model.safetensors")


def log_of(out, key):
    return [e[key] for e in json.loads((out / "train_log.json").read_text()) if key in e]


def test_a_zero_weight_run_is_the_run_without_the_option(tiny_llama, data, tmp_path):
    a = run_alignment(config(tiny_llama, data, tmp_path / "a"))
    b = run_alignment(config(tiny_llama, data, tmp_path / "b", calibration_weight=0.0))
    wa, wb = adapter(a.out), adapter(b.out)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=0, rtol=0)
    assert not (b.out / "estep_history.json").exists()
    assert "calibration/ece_term" not in json.dumps(json.loads((b.out / "train_log.json")
                                                               .read_text()))


# -- λ > 0 runs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_a_calibrated_run_logs_the_term_its_first_estep_gives(tiny_llama, data, tmp_path,
                                                              scoring):
    from calibtune.data import load_dataset
    from calibtune.training.losses import ece_regulariser
    from calibtune.training.targets import estep_targets

    cfg = config(tiny_llama, data, tmp_path / "run", calibration_weight=2.0, scoring=scoring,
                 cloze_norm="token", append_eos=scoring == "cloze",  # the EOS is not scored
                 ece_bin_prior=3.0 if scoring == "cloze" else 0.0)  # the prior reaches the term
    result = run_alignment(cfg)
    out = result.out
    terms = log_of(out, "calibration/ece_term")
    assert len(terms) == 2 and all(math.isfinite(t) and t > 0 for t in terms)
    assert json.loads((out / "summary.json").read_text())["calibration_weight"] == 2.0
    history = json.loads((out / "estep_history.json").read_text())
    assert history[0]["step"] == 0 and history[0]["n"] == 8

    # independently: the untouched model's scores of the 8 training items (one batch of 8, so
    # the first step's batch is all of them), binned as RCFT's E-step bins them
    model, tok = load_model(str(tiny_llama), device="cpu")
    items = load_dataset(str(data / "train.jsonl")).items
    pairs = pairs_from_items(items, scoring=scoring)
    setup = calibration_setup(tok, encode_pairs(tok, pairs)[0], pairs, items, cfg)
    s = make_scorer(model, tok, scoring, cloze_norm="token", progress=False).score(setup.items)
    e = estep_targets(s.logits, s.labels, s.mask, cfg.n_bins, cfg.ece_bin_prior)
    assert history[0]["bin_prior"] == cfg.ece_bin_prior
    assert history[0]["target_accuracy"] == pytest.approx(e.bin_accuracy.tolist(), abs=1e-9)
    if cfg.ece_bin_prior:  # the rules differ on this E-step, so the prior reached it
        default = estep_targets(s.logits, s.labels, s.mask, cfg.n_bins).bin_accuracy
        assert not np.allclose(e.bin_accuracy, default)
    expected = ece_regulariser(torch.tensor(s.logits), torch.tensor(s.mask),
                               torch.tensor(e.targets, dtype=torch.float32))
    assert terms[0] == pytest.approx(float(expected), abs=1e-4)
    probs = np.exp(s.logits - s.logits.max(1, keepdims=True)) * s.mask
    probs /= probs.sum(1, keepdims=True)
    assert history[0]["train_accuracy"] == pytest.approx(
        float(np.mean(probs.argmax(1) == s.labels)), abs=1e-9)
    conf, correct = probs.max(1), probs.argmax(1) == s.labels
    bins = np.minimum((conf * cfg.n_bins).astype(int), cfg.n_bins - 1)  # equal-width bins
    ece = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * np.mean(bins == b)
              for b in np.unique(bins))
    assert history[0]["train_ece"] == pytest.approx(ece, abs=1e-6)


# -- resume ---------------------------------------------------------------------------------------
def test_a_calibrated_run_resumes_exactly_and_refuses_a_tampered_estep_state(tiny_llama, data,
                                                                            tmp_path):
    # 2 steps an epoch: the epoch-1 E-step runs after checkpoint 2, on the resumed side too
    kw = dict(batch_size=4, max_steps=4, calibration_weight=2.0)
    whole = run_alignment(config(tiny_llama, data, tmp_path / "a", **kw))
    with pytest.raises(Crash):
        run_alignment(config(tiny_llama, data, tmp_path / "b", **kw), callbacks=[CrashAfterSave()])
    ckpt = tmp_path / "b" / "checkpoints" / "checkpoint-2"
    assert (ckpt / "calibtune_estep.npz").exists()
    seconds = json.loads((ckpt / "calibtune_checkpoint.json").read_text())["seconds"]
    assert 0 < seconds["estep"] <= seconds["train"]  # the first E-step is part of the cost
    resumed = run_alignment(config(tiny_llama, data, tmp_path / "b", **kw), resume=True)
    wa, wb = adapter(whole.out), adapter(resumed.out)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5)
    for key in ("loss", "calibration/ece_term"):
        assert log_of(resumed.out, key) == pytest.approx(log_of(whole.out, key), abs=1e-6)
    history = [json.loads((r.out / "estep_history.json").read_text()) for r in (whole, resumed)]
    assert [h["step"] for h in history[0]] == [h["step"] for h in history[1]] == [0, 2]

    # a checkpoint whose E-step state changed after it was sealed is refused
    with pytest.raises(Crash):
        run_alignment(config(tiny_llama, data, tmp_path / "c", **kw), callbacks=[CrashAfterSave()])
    state = tmp_path / "c" / "checkpoints" / "checkpoint-2" / "calibtune_estep.npz"
    with np.load(state) as z:
        arrays = dict(z)
    arrays["bin_accuracy"] = arrays["bin_accuracy"] * 0.5
    with open(state, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(TrainingError, match=r"cannot resume .*calibtune_estep.npz is (corrupted|truncated)"):
        run_alignment(config(tiny_llama, data, tmp_path / "c", **kw), resume=True)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("preferences", ["pairs.jsonl", "hhh"])
def test_a_weight_with_a_preference_source_is_refused(preferences):
    with pytest.raises(ConfigError, match="--calibration-weight needs MCQ pairs") as err:
        AlignConfig(calibration_weight=1.0, preferences=preferences)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("weight", [-0.5, float("nan"), float("inf"), True, "1"])
def test_a_negative_or_non_finite_weight_is_refused(weight):
    with pytest.raises(ConfigError, match="--calibration-weight must be a finite number >= 0"):
        AlignConfig(calibration_weight=weight)


def test_align_help_lists_the_weight():
    from typer.testing import CliRunner

    from calibtune.cli import app

    res = CliRunner().invoke(app, ["align", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "--calibration-weight" in res.output
    bad = CliRunner().invoke(app, ["align", "--calibration-weight", "-1", "--out", "/nonexistent"])
    assert bad.exit_code != 0 and "--calibration-weight must be a finite number" in bad.output
    bad = CliRunner().invoke(app, ["align", "--calibration-weight", "1", "--preferences", "hhh",
                                   "--out", "/nonexistent"])
    assert bad.exit_code != 0 and "--calibration-weight needs MCQ pairs" in bad.output
    assert "Traceback" not in bad.output
