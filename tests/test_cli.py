import json

import numpy as np
import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.scores import OptionScores

from conftest import items_to_rows, make_items, write_jsonl

runner = CliRunner()


@pytest.fixture
def data_file(tmp_path):
    return write_jsonl(tmp_path / "items.jsonl", items_to_rows(make_items(30, k=[4, 3])))


def test_eval_end_to_end_on_tiny_model(tmp_path, tiny_llama, data_file):
    out = tmp_path / "run"
    res = runner.invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(data_file),
                              "--out", str(out), "--n-boot", "50", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    for name in ("scores.npz", "metrics.json", "reliability.png", "classwise.png", "report.md",
                 "config.yaml"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("n", "accuracy", "ece", "cw_ece", "mce", "brier", "nll", "mean_confidence"):
        assert key in metrics
    assert metrics["n"] == 30
    scores = OptionScores.load(out / "scores.npz")
    assert scores.mask.sum(1).tolist() == [4, 3] * 15
    assert not (out / ".partial").exists()


def test_eval_is_deterministic(tmp_path, tiny_qwen, data_file):
    outs = []
    for name in ("a", "b"):
        res = runner.invoke(app, ["eval", "--model", str(tiny_qwen), "--data", str(data_file),
                                  "--out", str(tmp_path / name), "--n-boot", "30", "--limit", "20"])
        assert res.exit_code == 0, res.output
        outs.append((tmp_path / name / "metrics.json").read_bytes())
    assert outs[0] == outs[1]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_llama):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "options": ["a", "b"],
                                                "answer": 5}])
    out = tmp_path / "run"
    res = runner.invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(bad),
                              "--out", str(out)])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    assert f"{bad}, row 1, field 'answer'" in " ".join(res.output.split())
    assert not out.exists()


def test_skip_invalid_writes_rejected(tmp_path, tiny_llama):
    rows = items_to_rows(make_items(6))
    rows[2]["answer"] = 9
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "run"
    res = runner.invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(path),
                              "--out", str(out), "--skip-invalid", "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert rejected == [{"file": str(path), "row": 3, "field": "answer",
                         "reason": "answer index 9 out of range for 4 options (0-based)"}]
    assert json.loads((out / "metrics.json").read_text())["n"] == 5


def test_config_yaml_with_override(tmp_path, tiny_llama, data_file):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tiny_llama}\ndata: {data_file}\nlimit: 7\nn_boot: 0\n")
    res = runner.invoke(app, ["eval", "--config", str(cfg), "--limit", "5",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["n"] == 5
    cfg.write_text("modle: x\n")
    res = runner.invoke(app, ["eval", "--config", str(cfg)])
    assert res.exit_code == 2 and "unknown option(s) modle" in res.output


def test_report_overlays_runs(tmp_path):
    rng = np.random.default_rng(0)
    for name, scale in (("aligned", 4.0), ("cft", 1.0)):
        s = OptionScores(rng.normal(size=(50, 4)) * scale, rng.integers(0, 4, 50),
                         np.ones((50, 4), bool), [str(i) for i in range(50)])
        (tmp_path / name).mkdir()
        s.save(tmp_path / name / "scores.npz")
    res = runner.invoke(app, ["report", str(tmp_path / "aligned"), str(tmp_path / "cft"),
                              "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cmp" / "overlay.png").exists()
    assert "| aligned | 50 |" in (tmp_path / "cmp" / "compare.md").read_text()
