"""The public API, as the README shows it, on a tiny model built here: objects back, no files."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import calibtune as ct
from calibtune.cli import app

from conftest import items_to_rows, make_items, write_jsonl


@pytest.fixture
def data_file(tmp_path):
    (tmp_path / "data").mkdir()
    return write_jsonl(tmp_path / "data" / "items.jsonl", items_to_rows(make_items(40, k=[4, 3])))


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_score_evaluate_calibrate_in_memory(tiny_llama, data_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    model = ct.load_model(str(tiny_llama), device="cpu")
    items = ct.load_dataset(str(data_file), limit=30, seed=3)
    assert len(items) == 30 and all(isinstance(it, ct.MCQItem) for it in items)
    scores = ct.score(model, items, scoring="letter")
    assert isinstance(scores, ct.OptionScores) and scores.logits.shape == (30, 4)
    assert scores.meta == {"model": str(tiny_llama), "prompt": "plain", "scoring": "letter"}
    report = ct.evaluate(scores, n_boot=50)
    json.dumps(report)  # plain data
    assert {"accuracy", "ece", "cw_ece", "nll", "ci", "ece_noise_floor"} <= set(report)
    assert report["ci"]["ece"]["low"] <= report["ece"] <= report["ci"]["ece"]["high"]
    ts = ct.calibrators.TemperatureScaling().fit(scores.logits, scores.labels, scores.mask)
    calibrated = ts.transform(scores.logits, scores.mask)
    assert ts.temperature_ > 0 and np.allclose(calibrated.sum(1), 1)
    cloze = ct.score(model, items, scoring="cloze", cloze_norm="token")
    assert cloze.meta["scoring"] == "cloze" and cloze.mask.sum(1).tolist() == scores.mask.sum(1).tolist()
    assert files_under(tmp_path) == before  # nothing written


def test_api_scores_and_metrics_equal_the_cli_run_folder(tiny_llama, data_file, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(data_file),
                                   "--limit", "30", "--seed", "3", "--n-boot", "50",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    folder = ct.OptionScores.load(out / "scores.npz")
    scores = ct.score(ct.load_model(str(tiny_llama), device="cpu"),
                      ct.load_dataset(str(data_file), limit=30, seed=3))
    np.testing.assert_allclose(scores.logits, folder.logits, atol=1e-6)
    assert scores.ids.tolist() == folder.ids.tolist()
    saved = json.loads((out / "metrics.json").read_text())
    from calibtune.integrity import json_ready  # metrics.json is strict JSON: NaN → null

    assert saved == json.loads(json.dumps(json_ready(ct.evaluate(folder, seed=3, n_boot=50))))


def test_train_in_memory_writes_nothing_unless_asked(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = ct.load_model(str(tiny_llama), device="cpu")
    train_items, eval_items = make_items(12, k=[4, 3], seed=1), make_items(6, seed=2)
    untouched = ct.score(model, eval_items)
    config = ct.TrainConfig(method="rcft", max_steps=2, batch_size=4, lora_r=4, lora_alpha=8,
                            learning_rate=5e-3, logging_steps=1, epoch_eval_limit=3)
    outcome = ct.train(model, train_items, config, eval_items=eval_items)
    assert outcome.steps == 2 and outcome.estep_history[0]["step"] == 0
    logged = {k for entry in outcome.log_history for k in entry}
    assert {"loss_sft", "loss_ece", "heldout_ece"} <= logged
    trained = ct.score(outcome.model, eval_items)
    assert np.abs(trained.logits - untouched.logits).max() > 1e-4  # the adapter moved
    assert files_under(tmp_path) == []  # nothing written
    outcome.save_adapter(tmp_path / "adapter")  # ... unless asked
    again = ct.score(ct.load_model(str(tiny_llama), adapter=str(tmp_path / "adapter"),
                                   device="cpu"), eval_items)
    np.testing.assert_allclose(again.logits, trained.logits, atol=1e-4)
