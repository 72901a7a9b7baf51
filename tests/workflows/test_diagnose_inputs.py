"""What `calibtune diagnose` reads from a training run to decide whether a verdict is allowed
(item sets, the gap before fine-tuning), and the cross-fitted temperature it prints."""
import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.scores import OptionScores
from calibtune.workflows.diagnose import baseline_measurements, item_sets

runner = CliRunner()


@pytest.mark.parametrize("config, same", [
    ({"data": "mmlu", "split": "train", "eval_split": "test"}, False),
    ({"data": "socialiqa", "split": "train", "eval_split": "test"}, True),
    ({"data": "mmlu", "split": "train", "eval_data": "socialiqa", "eval_split": "test"}, False),
    ({"data": "my.jsonl", "split": None, "eval_data": "my.jsonl"}, None)])
def test_item_sets_from_the_runs_config(tmp_path, config, same):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    got, why = item_sets(tmp_path)
    assert got is same and (why is None) == (same is None)
    assert item_sets(tmp_path / "nowhere") == (None, None)


def test_the_gap_before_fine_tuning_from_eval_before_and_the_first_estep(tmp_path):
    (tmp_path / "eval_before").mkdir()
    (tmp_path / "eval_before" / "metrics.json").write_text(json.dumps({"accuracy": 0.41}))
    assert baseline_measurements(tmp_path) == {}               # no training-item point at start
    (tmp_path / "estep_history.json").write_text(json.dumps([
        {"step": 0, "epoch": 0, "train_accuracy": 0.52, "n": 150},
        {"step": 60, "epoch": 1, "train_accuracy": 0.70, "n": 150}]))
    assert baseline_measurements(tmp_path) == {"accuracy_before": 0.52, "n_before": 150,
                                               "heldout_accuracy_before": 0.41}


def test_diagnose_on_held_out_scores_prints_the_cross_fitted_temperature(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(600, 4)) * 2
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (rng.random(600)[:, None] > np.cumsum(p, 1)).sum(1)
    (tmp_path / "run").mkdir()
    OptionScores(z * 4, y, np.ones_like(z, bool), [f"q{i}" for i in range(600)]).save(
        tmp_path / "run" / "scores.npz")
    res = runner.invoke(app, ["diagnose", str(tmp_path / "run"), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    assert "cross-fitted" in res.output and "Recommendation: temperature" in res.output
    d = json.loads((tmp_path / "run" / "diagnosis.json").read_text())
    assert d["crossfit"]["ece_after"] < d["crossfit"]["ece_before"]
    assert d["crossfit"]["accuracy_after"] == d["crossfit"]["accuracy_before"]
    assert "not of the true calibration error" in d["interval_kind"]


@pytest.mark.parametrize("text", ["data: [unclosed", "- a list\n- of options\n"])
def test_a_damaged_config_is_one_error_naming_the_file(tmp_path, text):
    from calibtune.errors import SavedFileError

    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(SavedFileError, match="config.yaml"):
        item_sets(tmp_path)


def test_diagnose_train_run_refuses_or_decides_by_its_item_sets(tmp_path):
    """Held-out items far less accurate than training items: with MMLU's subject-disjoint split
    and no gap before fine-tuning, no regime verdict; told the sets are exchangeable, a verdict."""
    rng = np.random.default_rng(2)
    n = 400
    z = rng.normal(size=(n, 4)) * 3
    y = rng.integers(0, 4, n)                                   # accuracy ≈ chance, confident
    run = tmp_path / "train"
    (run / "eval").mkdir(parents=True)
    OptionScores(z, y, np.ones_like(z, bool), [f"q{i}" for i in range(n)]).save(
        run / "eval" / "scores.npz")
    (run / "train_log.json").write_text(json.dumps([{"epoch": 5.0, "step": 50,
                                                     "train_accuracy": 0.95,
                                                     "train_confidence": 0.95, "train_n": 300}]))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": "mmlu", "split": "train",
                                                     "eval_split": "test"}))
    res = runner.invoke(app, ["diagnose", str(run), "--train-run", str(run), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    d = json.loads((run / "eval" / "diagnosis.json").read_text())
    assert d["regime"] == "not determined" and d["train"]["same_distribution"] is False
    assert any(f.startswith("item sets:") and "subject-disjoint" in f for f in d["flags"])
    res = runner.invoke(app, ["diagnose", str(run), "--train-run", str(run), "--n-boot", "20",
                              "--same-distribution"])
    assert res.exit_code == 0, res.output
    d = json.loads((run / "eval" / "diagnosis.json").read_text())
    assert d["regime"] == "fine-tuning-limited" and d["regime_test"]["reject"]


def _train_run_with_baseline(run, n: int, eval_before_ids: list[str]):
    """A training run folder: final scores on n items, an epoch-0 and a final training-item
    check, and eval_before on the given held-out ids."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(n, 4)) * 3
    y = rng.integers(0, 4, n)
    (run / "eval").mkdir(parents=True)
    OptionScores(z, y, np.ones_like(z, bool), [f"q{i}" for i in range(n)]).save(
        run / "eval" / "scores.npz")
    (run / "eval_before").mkdir()
    k = len(eval_before_ids)
    OptionScores(z[:k], y[:k], np.ones((k, 4), bool), eval_before_ids).save(
        run / "eval_before" / "scores.npz")
    (run / "eval_before" / "metrics.json").write_text(json.dumps({"accuracy": 0.25, "n": k}))
    (run / "train_log.json").write_text(json.dumps([
        {"epoch": 0.0, "step": 0, "train_accuracy": 0.30, "train_confidence": 0.4, "train_n": 100},
        {"epoch": 5.0, "step": 50, "train_accuracy": 0.95, "train_confidence": 0.95,
         "train_n": 100}]))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": "mmlu", "split": "train",
                                                     "eval_split": "test"}))


def test_the_final_training_point_is_never_the_one_before_training(tmp_path):
    from calibtune.workflows.diagnose import training_measurements

    _train_run_with_baseline(tmp_path, 50, [f"q{i}" for i in range(50)])
    assert training_measurements(tmp_path) == {"accuracy": 0.95, "confidence": 0.95, "n": 100}
    log = json.loads((tmp_path / "train_log.json").read_text())
    (tmp_path / "train_log.json").write_text(json.dumps(log[:1]))  # only the start: refused
    with pytest.raises(Exception, match="no training-item measurements"):
        training_measurements(tmp_path)


@pytest.mark.parametrize("same_items", [True, False])
def test_g0_is_used_only_for_the_items_eval_before_scored(tmp_path, same_items):
    n = 200
    ids = [f"q{i}" for i in range(n)] if same_items else [f"other{i}" for i in range(n)]
    run = tmp_path / "train"
    _train_run_with_baseline(run, n, ids)
    res = runner.invoke(app, ["diagnose", str(run), "--train-run", str(run), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    d = json.loads((run / "eval" / "diagnosis.json").read_text())
    assert (d["train"]["accuracy_before"] is not None) is same_items
    # MMLU's subject-disjoint split: a verdict only with G₀ measured on these items
    assert (d["regime"] != "not determined") is same_items
