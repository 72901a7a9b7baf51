"""Run folders are never silently replaced (docs/reliability.md): refusal, --overwrite, --resume, the lock.

Each test fails when its protection is removed: the refusal (RunFolder.check), the atomic
clearing (RunFolder.open), the settings comparison (config_differences), the lock (RunLock).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.errors import RunFolderError
from calibtune.run_guard import RunFolder, RunLock
from calibtune.scores import OptionScores

from conftest import items_to_rows, make_items, tiny_train_config, write_jsonl, write_train_eval

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run-folders")
    write_jsonl(folder / "d.jsonl", items_to_rows(make_items(12)))
    write_train_eval(folder, make_items(8, k=[4, 3], seed=1), make_items(6, seed=2))
    rng = np.random.default_rng(0)
    OptionScores(rng.normal(size=(30, 4)), rng.integers(0, 4, 30), np.ones((30, 4), bool),
                 [str(i) for i in range(30)]).save(folder / "scores.npz")
    return folder


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text
    return text


def eval_args(model, files, out, *more):
    return ["eval", "--model", str(model), "--data", str(files / "d.jsonl"), "--n-boot", "0",
            "--out", str(out), *more]


def test_a_second_eval_into_a_finished_run_is_refused_and_touches_nothing(tiny_llama, files,
                                                                        tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, eval_args(tiny_llama, files, out)).exit_code == 0
    before = snapshot(out)
    text = one_line_error(runner.invoke(app, eval_args(tiny_llama, files, out, "--seed", "1")))
    assert str(out) in text and "already holds a run" in text and "scores.npz" in text
    assert "--overwrite" in text and "--resume" in text
    assert snapshot(out) == before
    assert not list(tmp_path.glob(".*.lock"))  # the lock went with the refusal


# Every command that writes a run folder, with the arguments that reach its claim.
def command_args(name, model, files, out):
    data = ["--data", str(files / "train.jsonl"), "--eval-data", str(files / "eval.jsonl"),
            "--eval-limit", "3"]
    return {
        "eval": eval_args(model, files, out),
        "eval --from": ["eval", "--from", "table", str(files / "nowhere.csv"), "--out", str(out)],
        "eval --preferences": ["eval", "--model", str(model), "--preferences",
                               str(files / "nowhere.jsonl"), "--out", str(out)],
        "posthoc": ["posthoc", "--scores", str(files / "scores.npz"), "--out", str(out)],
        "train": ["train", "--model", str(model), *data, "--out", str(out)],
        "align": ["align", "--model", str(model), *data, "--out", str(out)],
        "compare": ["compare", str(files / "scores.npz"), "--out", str(out)],
    }[name]


@pytest.mark.parametrize("name", ["eval", "eval --from", "eval --preferences", "posthoc",
                                  "train", "align", "compare"])
def test_every_command_refuses_a_folder_holding_another_run(name, tiny_llama, files, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: another\nseed: 7\n")
    (out / "scores.npz").write_bytes(b"another run's scores")
    before = snapshot(out)
    text = one_line_error(runner.invoke(app, command_args(name, tiny_llama, files, out)))
    assert f"{out} already holds a run (model another, seed 7" in text
    assert snapshot(out) == before


def _reproduce_config(tiny_llama, files, tmp_path) -> tuple[dict, Path]:
    cfg = {"name": "tiny", "model": str(tiny_llama), "train": str(files / "train.jsonl"),
           "in_domain": str(files / "eval.jsonl")}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return cfg, path


def test_reproduce_refuses_a_folder_holding_another_comparison(tiny_llama, files, tmp_path):
    cfg, path = _reproduce_config(tiny_llama, files, tmp_path)
    out = tmp_path / "rep"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump({**cfg, "name": "other", "methods": []}))
    before = snapshot(out)
    text = one_line_error(runner.invoke(app, ["reproduce", "--config", str(path), "--out",
                                              str(out)]))
    assert f"{out} already holds a run" in text and snapshot(out) == before
    # reproduce has no --resume: the error says why the folder cannot be continued instead
    assert "--resume" not in text and "the comparison 'other', not 'tiny'" in text


def test_reproduce_names_a_folder_without_its_config(tiny_llama, files, tmp_path):
    _, path = _reproduce_config(tiny_llama, files, tmp_path)
    out = tmp_path / "rep"
    (out / "steps" / "score__aligned__eval").mkdir(parents=True)
    (out / "steps" / "score__aligned__eval" / "step.json").write_text("{}")
    text = one_line_error(runner.invoke(app, ["reproduce", "--config", str(path), "--out",
                                              str(out)]))
    assert "no reproduce config.yaml" in text and "--resume" not in text


def test_overwrite_replaces_the_whole_run_and_leaves_nothing_of_the_old(tiny_llama, files,
                                                                       tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, eval_args(tiny_llama, files, out)).exit_code == 0
    (out / "rejected.jsonl").write_text("{}\n")  # a file the new run does not write
    res = runner.invoke(app, eval_args(tiny_llama, files, out, "--limit", "5", "--overwrite"))
    assert res.exit_code == 0, res.output
    assert not (out / "rejected.jsonl").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["limit"] == 5
    assert json.loads((out / "metrics.json").read_text())["n"] == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no aside, no lock


def old_run(folder: Path) -> dict:
    folder.mkdir()
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "scores.npz").write_bytes(b"old")
    (folder / "rejected.jsonl").write_text("old\n")
    return snapshot(folder)


def test_overwrite_never_leaves_a_mix_of_two_runs(tmp_path, monkeypatch):
    out = tmp_path / "run"
    old = old_run(out)
    # a failure before the first write (a model that does not load): the old run is intact
    with pytest.raises(RuntimeError):
        with RunFolder(out, {"seed": 1}, command="t", overwrite=True):
            raise RuntimeError("model failed to load")
    assert snapshot(out) == old
    # a crash after the old run was renamed aside, before the copy was deleted
    real = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        with RunFolder(out, {"seed": 1}, command="t", overwrite=True) as folder:
            folder.open()
    monkeypatch.setattr(shutil, "rmtree", real)
    assert not out.exists() or not set(snapshot(out)) & set(old)  # old run gone, whole
    assert list(tmp_path.glob(".run.replaced-*"))  # the crash left the aside copy...
    with RunFolder(out, {"seed": 1}, command="t", overwrite=True) as folder:
        (folder.open() / "scores.npz").write_bytes(b"new")
    assert not list(tmp_path.glob(".run.replaced-*"))  # ...which the next claim deletes
    assert snapshot(out) == {"config.yaml": b"seed: 1\n", "scores.npz": b"new"}


def test_overwrite_never_clears_a_folder_that_is_not_a_run(tiny_llama, files, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    text = one_line_error(runner.invoke(app, eval_args(tiny_llama, files, out, "--overwrite")))
    assert "not a calibtune run (thesis.tex)" in text
    assert (out / "thesis.tex").read_text() == "months of work"


def test_resume_with_other_settings_names_the_fields_that_differ(tiny_llama, files, tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, eval_args(tiny_llama, files, out, "--limit", "6")).exit_code == 0
    before = snapshot(out)
    res = runner.invoke(app, eval_args(tiny_llama, files, out, "--limit", "7", "--seed", "2",
                                       "--batch-size", "3", "--resume"))
    text = one_line_error(res)
    assert "other settings" in text and "limit: 6 → 7" in text and "seed: 0 → 2" in text
    assert "batch_size" not in text  # how items are batched does not change the results
    assert snapshot(out) == before
    res = runner.invoke(app, eval_args(tiny_llama, files, out, "--limit", "6", "--batch-size",
                                       "3", "--resume"))
    assert res.exit_code == 0, res.output


def test_train_and_align_resume_with_other_settings_are_refused(tiny_llama, files, tmp_path):
    from calibtune.align.config import AlignConfig
    from calibtune.workflows.align import run_alignment
    from calibtune.workflows.train import run_training

    cfg = tiny_train_config(tiny_llama, files, tmp_path)
    out = Path(cfg.out)
    out.mkdir()
    (out / "checkpoints").mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(asdict(cfg) | {"learning_rate": 0.1}))
    with pytest.raises(RunFolderError, match=r"learning_rate: 0\.1 → 0\.005"):
        run_training(cfg, resume=True)
    acfg = AlignConfig(model=str(tiny_llama), data=str(files / "train.jsonl"), split=None,
                       eval_data=str(files / "eval.jsonl"), eval_split=None, out=str(out))
    (out / "config.yaml").write_text(yaml.safe_dump(asdict(acfg) | {"beta": 0.5}))
    with pytest.raises(RunFolderError, match=r"beta: 0\.5 → 0\.1"):
        run_alignment(acfg, resume=True)
    with pytest.raises(RunFolderError, match="already holds a run"):
        run_alignment(acfg)


def test_a_second_writer_is_refused_while_the_first_runs(tiny_llama, files, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = RunLock(out, "eval")
        lock.path.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                         "command": "eval", "started": "today"}))
        text = one_line_error(runner.invoke(app, eval_args(tiny_llama, files, out)))
        assert f"pid {holder.pid} on {socket.gethostname()}" in text
        assert "being written by another calibtune process" in text
        assert not out.exists() and lock.path.exists()  # nothing written, their lock kept
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_refuses_a_second_claim_in_the_same_process_and_another_host(tmp_path):
    out = tmp_path / "run"
    with RunFolder(out, None, command="first"):
        with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"):
            with RunFolder(out, None, command="second"):
                pass
    lock = RunLock(out, "x")
    lock.path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "train"}))
    with pytest.raises(RunFolderError, match="on elsewhere"):
        with RunFolder(out, None, command="second"):
            pass


def test_a_stale_lock_is_taken_over_with_one_warning(tmp_path, caplog):
    out = tmp_path / "run"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock = RunLock(out, "x")
    lock.path.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(),
                                     "command": "eval", "started": "yesterday"}))
    with RunFolder(out, {"seed": 0}, command="eval") as folder:
        folder.open()
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"pid {gone.pid}" in warnings[0] and "stale" in warnings[0]
    assert not lock.path.exists()  # released at the end


def test_resume_and_overwrite_together_are_refused(tiny_llama, files, tmp_path):
    text = one_line_error(runner.invoke(app, eval_args(tiny_llama, files, tmp_path / "o",
                                                       "--resume", "--overwrite")))
    assert "give one of them" in text
