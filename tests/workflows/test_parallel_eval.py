"""Evaluation beyond one device: `accelerate launch` data-parallel scoring on 2 CPU processes
(gloo), and `--device-map auto` placement."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.errors import ConfigError, ModelError
from calibtune.models.loading import load_model, parse_max_memory
from calibtune.scores import OptionScores
from calibtune.workflows.config import EvalConfig
from calibtune.workflows.eval import _fingerprint, load_eval_items, run_eval

from conftest import items_to_rows, make_items, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
# 30 items in chunks of 7: 5 chunks, so one of the two processes sits out the last round
ARGS = ["--n-boot", "0", "--batch-size", "3", "--chunk-size", "7"]


def eval_args(model, data, out, *extra):
    return ["eval", "--model", str(model), "--data", str(data), "--out", str(out), *ARGS, *extra]


def launch_eval(args, port, ok=True):
    """`accelerate launch --num_processes 2 -m calibtune.cli eval …` on CPU processes."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", "2",
           "--main_process_port", str(port), "--mixed_precision", "no", "-m", "calibtune.cli",
           *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == ok, proc.stderr[-3000:]
    return proc


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "d.jsonl", items_to_rows(make_items(30, k=[4, 3, 5])))


@pytest.mark.distributed
@pytest.mark.parametrize("scoring,port", [("letter", 29561), ("cloze", 29563)])
def test_two_processes_score_as_one(scoring, port, tiny_llama, data, tmp_path):
    single = runner.invoke(app, eval_args(tiny_llama, data, tmp_path / "one", "--scoring", scoring))
    assert single.exit_code == 0, single.output
    proc = launch_eval(eval_args(tiny_llama, data, tmp_path / "two", "--scoring", scoring), port)
    assert proc.stdout.count("wrote ") == 1  # rank 0 reports, the other rank stays quiet
    one, two = (OptionScores.load(tmp_path / d / "scores.npz") for d in ("one", "two"))
    assert (one.ids == two.ids).all() and (one.labels == two.labels).all()
    np.testing.assert_allclose(two.logits, one.logits, rtol=0, atol=1e-5)
    assert (one.probs().argmax(1) == two.probs().argmax(1)).all()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one").iterdir())  # one run folder, no .partial left
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert m2["accuracy"] == m1["accuracy"] and m2["ece"] == pytest.approx(m1["ece"], abs=1e-6)


@pytest.mark.distributed
def test_two_processes_resume_the_saved_chunks(tiny_llama, data, tmp_path):
    """Chunks saved by an interrupted run are reused (a tampered chunk shows through) and only
    the others are scored, by both processes."""
    whole = runner.invoke(app, eval_args(tiny_llama, data, tmp_path / "whole"))
    assert whole.exit_code == 0, whole.output
    reference = OptionScores.load(tmp_path / "whole" / "scores.npz")
    out = tmp_path / "resumed"
    cfg = EvalConfig(model=str(tiny_llama), data=str(data), batch_size=3, chunk_size=7,
                     n_boot=0, out=str(out))
    partial = out / ".partial"
    partial.mkdir(parents=True)
    (partial / "fingerprint.txt").write_text(_fingerprint(cfg, load_eval_items(cfg)[0]))
    saved = reference.logits[7:14] + 3.0  # chunk 1, as if an earlier run had saved it
    np.save(partial / "chunk-00001.npy", saved)
    launch_eval(eval_args(tiny_llama, data, out, "--resume", "-v"), 29565)
    resumed = OptionScores.load(out / "scores.npz")
    np.testing.assert_allclose(resumed.logits[7:14], np.where(reference.mask[7:14], saved, 0))
    keep = np.r_[0:7, 14:30]
    np.testing.assert_allclose(resumed.logits[keep], reference.logits[keep], rtol=0, atol=1e-5)
    assert not partial.exists()


@pytest.mark.distributed
def test_a_folder_refused_by_rank_0_stops_every_rank_with_its_reason(tiny_llama, data,
                                                                     tmp_path):
    """No rank loads the model or waits to be killed: each says why, nobody says 'resume'."""
    out = tmp_path / "taken"
    assert runner.invoke(app, eval_args(tiny_llama, data, out)).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    proc = launch_eval(eval_args(tiny_llama, data, out), 29567, ok=False)
    text = proc.stdout + proc.stderr
    assert text.count("already holds") == 2 and "rank 0 refused; rank 1 stops too" in text
    assert "interrupted" not in text and "to go on:" not in text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched


def test_device_map_auto_scores_as_the_default_load(tiny_llama, data, tmp_path):
    default = run_eval(EvalConfig(model=str(tiny_llama), data=str(data), n_boot=0,
                                  out=str(tmp_path / "default")), progress=False)
    placed = run_eval(EvalConfig(model=str(tiny_llama), data=str(data), n_boot=0,
                                 device_map="auto", max_memory="cpu=2GiB",
                                 out=str(tmp_path / "placed")), progress=False)
    a, b = (OptionScores.load(r.folder / "scores.npz") for r in (default, placed))
    np.testing.assert_allclose(b.logits, a.logits, rtol=0, atol=1e-6)
    assert placed.metrics["accuracy"] == default.metrics["accuracy"]
    model = load_model(str(tiny_llama), device_map="auto", max_memory="cpu=2GiB").model
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_device_map_auto_cloze_from_the_command_line(tiny_llama, data, tmp_path):
    outs = []
    for name, extra in (("default", []), ("placed", ["--device-map", "auto", "--max-memory",
                                                     "cpu=2GiB"])):
        res = runner.invoke(app, eval_args(tiny_llama, data, tmp_path / name, "--scoring",
                                           "cloze", *extra))
        assert res.exit_code == 0, res.output
        outs.append(OptionScores.load(tmp_path / name / "scores.npz"))
    np.testing.assert_allclose(outs[1].logits, outs[0].logits, rtol=0, atol=1e-6)


def test_max_memory_is_parsed_and_checked(tiny_llama):
    assert parse_max_memory("0=20GiB, cpu=60GiB") == {0: "20GiB", "cpu": "60GiB"}
    assert parse_max_memory(None) is None
    for bad in ("20GiB", "gpu=1GiB", "cpu="):
        with pytest.raises(ConfigError, match="--max-memory"):
            parse_max_memory(bad)
    with pytest.raises(ConfigError, match="--device-map auto too"):
        load_model(str(tiny_llama), max_memory="cpu=2GiB")
    with pytest.raises(ConfigError, match="--device-map must be"):
        load_model(str(tiny_llama), device_map="everywhere")
    with pytest.raises(ModelError):  # no room on any device: refused, not written to disk
        load_model(str(tiny_llama), device_map="auto", max_memory="cpu=1KiB")
