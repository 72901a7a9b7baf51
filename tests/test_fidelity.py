"""Issue 13: every number exact and every departure from the reference a tested switch."""
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from calibtune.calibrators import HistogramBinning, IsotonicCalibration, TemperatureScaling
from calibtune.calibrators.base import keep_top
from calibtune.integrity import atomic_write_json, atomic_write_text
from calibtune.metrics import ece, ece_noise_floor
from calibtune.metrics.binning import assign_bins, bin_edges
from calibtune.metrics.validation import softmax
from calibtune.models import load_model
from calibtune.prompts import PromptEncoder, render_prompt
from calibtune.scores import OptionScores, option_mask
from calibtune.scoring import LetterScorer
from calibtune.train.config import TrainConfig
from calibtune.train.dataset import MCQCollator, MCQTrainDataset
from calibtune.train.estep import EStepCallback, RegulariserState
from calibtune.train.losses import ece_regulariser, full_sequence_loss
from calibtune.train.run import run_training
from calibtune.train.targets import estep_targets, live_targets
from calibtune.train.trainer import CalibTrainer

from conftest import make_items, tiny_train_config, write_train_eval


def strict_json(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=refuse)


# ---- bin edges ----------------------------------------------------------------------------

@pytest.mark.parametrize("m", [10, 15, 20])
def test_every_interior_edge_opens_its_own_bin(m):
    edges = bin_edges(None, m)
    for k in range(1, m):
        edge = k / m
        assert edges[k] == edge
        below, above = np.nextafter(edge, 0.0), np.nextafter(edge, 1.0)
        assert assign_bins(np.array([edge, below, above]), edges).tolist() == [k, k - 1, k]
    assert assign_bins(np.array([0.0, 1.0]), edges).tolist() == [0, m - 1]


def test_ece_with_confidence_exactly_on_an_edge():
    # two items at confidence exactly 0.3, one right and one wrong
    p = np.array([[0.3, 0.25, 0.25, 0.2]] * 2)
    conf = p.max(1)
    assert (conf == 0.3).all()
    # bin [0.3, 0.4): accuracy 0.5, confidence 0.3 → ECE 0.2 (bin [0.2, 0.3) would say the same
    # gap, so check the bin index too)
    assert assign_bins(conf, bin_edges(None, 10)).tolist() == [3, 3]
    assert ece(p, np.array([0, 1]), 10) == pytest.approx(0.2)


# ---- files: strict JSON, permissions -----------------------------------------------------------

def test_metrics_json_is_strict_json_with_null_for_empty_bins(tmp_path):
    from calibtune.runs import write_run

    rng = np.random.default_rng(0)
    z = rng.normal(size=(30, 4)) * 4
    scores = OptionScores(z, rng.integers(0, 4, 30), np.ones((30, 4), bool),
                          [f"q{i}" for i in range(30)])
    write_run(tmp_path, scores, title="t", context={}, n_boot=20)
    m = strict_json((tmp_path / "metrics.json").read_text())
    acc = m["reliability"]["accuracy"] if "reliability" in m else None
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert acc is None or None in acc or all(a is not None for a in acc)
    assert "null" in text  # 30 items over 10 bins leave some bin empty


def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_json(tmp_path / "b.json", {"x": float("nan")})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
        assert strict_json((tmp_path / "b.json").read_text()) == {"x": None}
    finally:
        os.umask(old)


# ---- top-label calibrators keep the prediction -----------------------------------------------

def test_keep_top_never_changes_the_argmax_and_sets_the_top_mass():
    rng = np.random.default_rng(1)
    for k in (2, 3, 4, 7):
        p = rng.dirichlet(np.full(k, 0.3), size=2000)
        c = rng.random(2000)
        q = keep_top(p, c)
        assert (q.argmax(1) == p.argmax(1)).all()
        np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-12)
        assert (q >= 0).all()
        np.testing.assert_allclose(q.max(1), np.maximum(c, 1 / k), atol=1e-8)
    # masked options get nothing and K is each row's own
    p = np.array([[0.5, 0.49, 0.01, 0.0]])
    q = keep_top(p, np.array([0.2]), np.array([[True, True, True, False]]))
    assert q[0, 3] == 0 and q.argmax() == 0 and q[0, 0] == pytest.approx(1 / 3, abs=1e-8)


def known_model(n, seed, sharpen=3.0, k=4):
    """Labels drawn from softmax(z); the model reports softmax(sharpen · z): overconfident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    y = (rng.random(n)[:, None] > np.cumsum(softmax(z), 1)).sum(1)
    return z * sharpen, y


@pytest.mark.parametrize("cls", [HistogramBinning, IsotonicCalibration])
def test_top_label_calibrators_reach_the_noise_floor_and_keep_predictions(cls):
    z, y = known_model(12000, seed=2)
    cal = cls().fit(z[:6000], y[:6000])
    p = cal.transform(z[6000:])
    assert (p.argmax(1) == z[6000:].argmax(1)).all()
    after = ece(p, y[6000:])
    floor = ece_noise_floor(p.max(1), n_sim=200)
    assert after <= floor.q95, (after, floor)
    assert ece(z[6000:], y[6000:], from_logits=True) > 5 * after


@pytest.mark.parametrize("cls", [HistogramBinning, IsotonicCalibration])
def test_top_label_calibrators_at_chance_report_at_least_one_over_k(cls):
    # an overconfident model at chance: calibrated values fall below 1/K, and the distribution
    # floors them at 1/K without moving any prediction
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4000, 4)) * 5
    y = rng.integers(0, 4, 4000)
    cal = cls().fit(z[:2000], y[:2000])
    p = cal.transform(z[2000:])
    assert (p.argmax(1) == z[2000:].argmax(1)).all()
    assert p.max(1).min() >= 0.25 - 1e-9
    assert cal.calibrated_confidence(z[2000:]).min() < 0.25  # the unclipped values


def test_temperature_at_infinity_is_recorded_in_the_run_folder(tmp_path):
    from typer.testing import CliRunner

    from calibtune.cli import app

    rng = np.random.default_rng(4)
    z = rng.normal(size=(400, 4)) * 4
    y = rng.integers(0, 4, 400)  # labels independent of the logits
    ts = TemperatureScaling().fit(z, y)
    assert ts.at_bound == "upper" and ts.temperature == float("inf")
    np.testing.assert_allclose(ts.transform(z), 0.25)
    path = tmp_path / "s.npz"
    OptionScores(z, y, np.ones_like(z, bool), [f"q{i}" for i in range(400)]).save(path)
    out = tmp_path / "ts"
    res = CliRunner().invoke(app, ["posthoc", "--scores", str(path), "--method", "temperature",
                                   "--fit-fraction", "0.5", "--n-boot", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "inf" in res.output
    cal = strict_json((out / "calibrator.json").read_text())
    assert cal["params"]["at_bound"] == "upper" and cal["params"]["temperature"] is None
    metrics = strict_json((out / "metrics.json").read_text())
    assert metrics["temperature_at_bound"] == "upper"
    assert "T = ∞" in (out / "report.md").read_text()


def test_interior_temperature_fit_has_zero_gradient():
    z, y = known_model(3000, seed=5)
    ts = TemperatureScaling().fit(z, y)
    assert ts.at_bound is None and 2.0 < ts.temperature < 4.5
    assert abs(ts.grad_at_optimum) < 1e-5


# ---- prompts -----------------------------------------------------------------------------------

def test_reference_template_is_the_reference_codes_exactly():
    item = make_items(1, k=3)[0]
    text = render_prompt(item, "reference")
    opts = "\n".join(f"{'ABC'[i]}. {o}" for i, o in enumerate(item.options))
    assert text == (f"### Question: Question: {item.question}\n\nOptions:\n{opts}\n\n"
                    "Answer with only a single letter:\n ### Answer:")


def test_reference_style_letters_follow_without_a_space(tiny_llama):
    _, tok = load_model(str(tiny_llama), device="cpu")
    plain, ref = PromptEncoder(tok, "plain"), PromptEncoder(tok, "reference")
    assert plain.letter_ids == [tok.encode(" " + c, add_special_tokens=False)[0] for c in "ABCD"] \
        or plain.letter_ids == [tok.encode(c, add_special_tokens=False)[0] for c in "ABCD"]
    assert ref.letter_ids == [tok.encode(c, add_special_tokens=False)[0] for c in "ABCD"]


# ---- E-step and M-step targets -------------------------------------------------------------

def reference_targets(p, a):
    """METHOD.md §6 written out per item, independently of the vectorised code."""
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


# ---- losses against independent computations -------------------------------------------------

def letter_terms(model, tok, items, **cfg):
    encoder = PromptEncoder(tok, "plain", 4)
    dataset = MCQTrainDataset(items, encoder, 1024)
    batch = MCQCollator(tok, dataset.letter_ids)([dataset[i] for i in range(len(dataset))])
    fake = SimpleNamespace(calib_config=TrainConfig(**cfg))
    fake._letter_terms = lambda head, hidden, inputs: CalibTrainer._letter_terms(fake, head,
                                                                                 hidden, inputs)
    with torch.no_grad():
        terms, _ = CalibTrainer.loss_terms(fake, model, batch)
    return terms, batch


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
    assert full_sequence_loss  # imported for the docs' cross-reference


# ---- the E-step through training -------------------------------------------------------------

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
    cfg = tiny_train_config(tiny_llama, odd_data, tmp_path, method="rcft", epochs=3,
                            max_length=128, save_steps=50, ece_targets=mode)
    run_training(cfg)
    history = json.loads((Path(cfg.out) / "estep_history.json").read_text())
    # 9 kept items / batch 4 = 3 steps an epoch: E-steps at 0, 3, 6 on the 9 kept items only
    assert [h["step"] for h in history] == [0, 3, 6]
    assert all(h["n"] == 9 and sum(h["bins"]["count"]) == 9 for h in history)
    log = json.loads((Path(cfg.out) / "train_log.json").read_text())
    assert any("loss_ece" in e for e in log)
