"""The new commands end to end through the CLI: eval --from, report (paired, plane), diagnose."""
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.scores import OptionScores

from interop.test_lm_eval_import import DATE, TASK_A, TASK_B, results_json, write_lines

runner = CliRunner()


def test_eval_from_lm_eval_writes_a_run_folder(tmp_path):
    folder = tmp_path / "lm" / "org__tiny-model"
    write_lines(folder / f"samples_task_a_{DATE}.jsonl", TASK_A)
    write_lines(folder / f"samples_mmlu_b_{DATE}.jsonl", TASK_B)
    (folder / f"results_{DATE}.json").write_text(json.dumps(results_json(["task_a", "mmlu_b"])))
    out = tmp_path / "run"
    res = runner.invoke(app, ["eval", "--from", "lm-eval", str(tmp_path / "lm"), "--n-boot", "20",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("scores.npz", "metrics.json", "report.md", "report.html", "reliability.png"):
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 5 and {r["group"] for r in m["groups"]["rows"]} == {"task_a", "mmlu_b"}
    assert "lm-eval version" in (out / "report.md").read_text()
    # posthoc works unchanged on an imported run
    res = runner.invoke(app, ["posthoc", "--scores", str(out / "scores.npz"), "--fit-fraction",
                              "0.4", "--n-boot", "0", "--out", str(tmp_path / "ts")])
    assert res.exit_code == 0, res.output


def test_eval_from_table_refuses_unnormalised_probabilities(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,label,A,B,C\nq1,0,0.5,0.3,0.2\nq2,B,0.5,0.6,0.2\n")
    res = runner.invoke(app, ["eval", "--from", "table", str(path), "--kind", "prob",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "row 2" in res.output and not (tmp_path / "r").exists()
    res = runner.invoke(app, ["eval", "--from", "table", str(path), "--kind", "prob",
                              "--renormalise", "--n-boot", "0", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    s = OptionScores.load(tmp_path / "r" / "scores.npz")
    np.testing.assert_allclose(s.probs()[1], np.array([0.5, 0.6, 0.2]) / 1.3)


def make_run(path, logits, labels, ids):
    path.mkdir(parents=True)
    OptionScores(logits, labels, np.ones_like(logits, bool), ids).save(path / "scores.npz")


def test_report_pairs_runs_and_refuses_different_items(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 4)) * 3
    y = rng.integers(0, 4, 200)
    ids = [f"q{i}" for i in range(200)]
    make_run(tmp_path / "a", z, y, ids)
    make_run(tmp_path / "b", z / 3, y, ids)
    make_run(tmp_path / "c", z[:150], y[:150], ids[:150])
    res = runner.invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--n-boot",
                              "100", "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    paired = json.loads((tmp_path / "cmp" / "paired.json").read_text())
    assert paired[0]["changed_predictions"] == 0 and paired[0]["mcnemar"]["p_value"] == 1.0
    assert paired[0]["deltas"]["ece"]["high"] < 0  # softening an overconfident model
    assert (tmp_path / "cmp" / "report.html").exists()
    res = runner.invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "c"), "--out",
                              str(tmp_path / "cmp2")])
    assert res.exit_code == 2 and "200" in res.output and "150" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "c"), "--intersect",
                              "--n-boot", "50", "--out", str(tmp_path / "cmp2")])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("overconfident", [True, False])
def test_diagnose_writes_its_files_and_recommends(tmp_path, overconfident):
    # a calibrated model exceeds the noise q95 in 5% of draws by design (seed 1 is one of them);
    # seed 0 is a draw inside it, ECE 0.020 against q95 0.055
    rng = np.random.default_rng(0)
    z = rng.normal(size=(600, 4)) * 2
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (rng.random(600)[:, None] > np.cumsum(p, 1)).sum(1)  # calibrated by construction
    make_run(tmp_path / "run", z * (4 if overconfident else 1), y, [f"q{i}" for i in range(600)])
    res = runner.invoke(app, ["diagnose", str(tmp_path / "run"), "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "run" / "diagnosis.json").read_text())
    md = (tmp_path / "run" / "diagnosis.md").read_text()
    assert f"**Recommendation: {d['recommendation']}**" in md and d["rules"][0] in md
    if overconfident:  # logits × 4: far beyond the noise, and one temperature undoes it exactly
        assert not d["within_noise"] and d["direction"] == "overconfident"
        assert d["recommendation"] == "temperature" and d["crossfit"]["method"] == "temperature"
        assert d["crossfit"]["ece_after"] <= d["crossfit"]["noise_q95_after"]
    else:
        assert d["within_noise"] and d["recommendation"] == "none"
        assert d["ece"]["estimate"] <= d["noise_floor"]["q95"] and d["crossfit"] is None


def test_report_names_runs_apart_by_their_parent_folders(tmp_path, monkeypatch):
    """`eval` subfolders of two train runs (or their scores files) are named `a/eval` and
    `b/eval`, not `eval` twice; runs with distinct names keep their folder name."""
    from calibtune.workflows.compare import run_labels

    for run in ("a/eval", "b/eval", "c"):
        (tmp_path / run).mkdir(parents=True)
    assert run_labels([tmp_path / "a/eval", tmp_path / "b/eval"]) == ["a/eval", "b/eval"]
    assert run_labels([tmp_path / "a/eval/scores.npz", tmp_path / "c/scores.npz"]) == ["eval", "c"]
    assert run_labels([tmp_path / "a/eval/scores.npz", tmp_path / "b/eval/scores.npz"]) == [
        "a/eval", "b/eval"]
    assert run_labels([tmp_path / "c", tmp_path / "a/../c/."]) == ["c", "c"]  # one run, twice
    assert run_labels([tmp_path / "c/mmlu.npz", tmp_path / "c/medmcqa.npz"]) == [
        "mmlu.npz", "medmcqa.npz"]  # two splits' scores in one folder
    assert run_labels([tmp_path / "c", tmp_path / "c/scores.npz"]) == ["c", "scores.npz"]
    monkeypatch.chdir(tmp_path / "a")
    assert run_labels([Path("eval"), tmp_path / "b/eval"]) == ["a/eval", "b/eval"]
    rng = np.random.default_rng(0)
    ids, y = [f"q{i}" for i in range(50)], rng.integers(0, 4, 50)
    for run in ("x/eval", "y/eval"):
        make_run(tmp_path / run, rng.normal(size=(50, 4)), y, ids)
    res = runner.invoke(app, ["compare", str(tmp_path / "x/eval"), str(tmp_path / "y/eval"),
                              "--n-boot", "20", "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    paired = json.loads((tmp_path / "cmp" / "paired.json").read_text())
    assert (paired[0]["a"], paired[0]["b"]) == ("x/eval", "y/eval")
    assert "| x/eval |" in (tmp_path / "cmp" / "compare.md").read_text()
