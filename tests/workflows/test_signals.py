"""SIGINT / SIGTERM (docs/reliability.md, Signals): every long command stops between units of
work, keeps its folder resumable, prints one line with the command that resumes, and exits 130 / 143.

Real signals: sent to a subprocess once its first saved unit (a chunk, a checkpoint) is on disk,
or sent by a command to itself inside the CLI. Each test fails when the protection is removed:
without `stop_on_signals` SIGTERM ends the process silently with -15, without the resume line
the user is not told, without `finish_saves_first` a save can be cut.
"""
import importlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.interrupts import Interrupted, finish_first, stop_on_signals
from calibtune.scores import OptionScores

from conftest import items_to_rows, make_items, write_jsonl, write_train_eval
from workflows.test_robustness import SLOW_EVAL

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
# The command line as the user runs it, with patches that make each unit of work slow
# (the signal then reliably lands inside the run, after its first saved unit).
SLOW = SLOW_EVAL.replace("from calibtune.cli import main", """
from calibtune.training.trainer import CalibTrainer
real_step = CalibTrainer.training_step
def slow_step(self, *a, **k):
    time.sleep(0.4)
    return real_step(self, *a, **k)
CalibTrainer.training_step = slow_step
from calibtune.cli import main""")


def start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-c", SLOW, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def signal_when(proc: subprocess.Popen, ready, signum: int, limit: float = 180) -> tuple[str, str]:
    deadline = time.time() + limit
    while not ready():
        assert proc.poll() is None, "the run ended before the signal: " + proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return out, err


def resume_line(err: str, signum: int) -> str:
    lines = [x for x in err.replace("\r", "\n").splitlines() if "interrupted" in x]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"interrupted ({signal.Signals(signum).name}):")
    assert "Traceback" not in err
    return line.split("to go on: ", 1)[1]


@pytest.mark.slow  # a subprocess: 20-75 s on a loaded 2-core machine
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_eval_stops_between_chunks_says_how_to_resume_and_resumes(signum, tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", items_to_rows(make_items(80, k=[4, 3])))
    out = tmp_path / "run"
    args = ["eval", "--model", str(tiny_llama), "--data", str(data), "--n-boot", "0",
            "--batch-size", "2", "--chunk-size", "10", "--out", str(out), "--overwrite"]
    proc = start(args)
    _, err = signal_when(proc, lambda: (out / ".partial" / "chunk-00000.npy").exists(), signum)
    assert proc.returncode == 128 + signum
    command = resume_line(err, signum)
    assert command == shlex.join(["calibtune", *args[:-1], "--resume"])  # --overwrite dropped
    saved = sorted((out / ".partial").glob("chunk-*.npy"))
    assert saved and not (out / "scores.npz").exists()
    assert not list((out / ".partial").glob(".*tmp"))  # the chunk in progress was discarded
    res = runner.invoke(app, shlex.split(command)[1:])  # the printed command, as it is
    assert res.exit_code == 0, res.output
    assert len(OptionScores.load(out / "scores.npz")) == 80 and not (out / ".partial").exists()


@pytest.mark.slow
def test_train_stops_after_a_whole_checkpoint_and_resumes_from_it(tiny_llama, tmp_path):
    data = write_train_eval(tmp_path, make_items(16, k=[4, 3], seed=1), make_items(6, seed=2))
    out = tmp_path / "run"
    args = ["train", "--model", str(tiny_llama), "--data", str(data / "train.jsonl"),
            "--split", "all", "--eval-data", str(data / "eval.jsonl"), "--eval-split", "all",
            "--method", "rcft", "--max-steps", "6", "--save-steps", "2", "--batch-size", "4",
            "--lora-r", "4", "--lora-alpha", "8", "--out", str(out)]
    proc = start(args)
    ckpt = out / "checkpoints" / "checkpoint-2"
    _, err = signal_when(proc, lambda: (ckpt / "trainer_state.json").exists(), signal.SIGTERM)
    assert proc.returncode == 143
    command = resume_line(err, signal.SIGTERM)
    assert command == shlex.join(["calibtune", *args, "--resume"])
    for folder in (out / "checkpoints").glob("checkpoint-*"):  # every checkpoint is whole
        assert (folder / "trainer_state.json").exists()
        assert (folder / "calibtune_estep.npz").exists()
    assert not (out / "adapter").exists()
    res = runner.invoke(app, shlex.split(command)[1:])
    assert res.exit_code == 0, res.output
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "eval" / "metrics.json").exists()


def in_process_signal(signum):
    def workflow(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("the signal was not turned into Interrupted")
    return workflow


@pytest.mark.parametrize("name, target, args", [
    ("posthoc", "calibtune.workflows.posthoc.run_posthoc", ["posthoc", "--scores", "s.npz"]),
    ("train", "calibtune.workflows.train.run_training", ["train", "--model", "m"]),
    ("align", "calibtune.workflows.align.run_alignment", ["align", "--model", "m"]),
    ("compare", "calibtune.workflows.compare.compare_runs", ["compare", "a", "b"]),
])
def test_every_command_turns_a_signal_into_one_resume_line(name, target, args, monkeypatch,
                                                           tmp_path):
    module, attr = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), attr, in_process_signal(signal.SIGTERM))
    monkeypatch.setattr(sys, "argv", ["calibtune", *args, "--out", str(tmp_path / "o")])
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert res.exit_code == 143, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted (SIGTERM)")
    assert lines[0].endswith(shlex.join(["calibtune", *args, "--out", str(tmp_path / "o"),
                                         "--resume"]))


def test_reproduce_says_rerun_the_same_command(monkeypatch, tmp_path):
    import calibtune.workflows.reproduce as rr

    monkeypatch.setattr(rr, "run_reproduce", in_process_signal(signal.SIGINT))
    args = ["reproduce", "--config", "c.yaml", "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", ["calibtune", *args])
    res = runner.invoke(app, args)
    assert res.exit_code == 130, res.output
    assert res.output.strip().endswith(shlex.join(["calibtune", *args]))


def test_a_save_in_progress_finishes_before_the_signal_stops_it():
    done = []
    with pytest.raises(Interrupted) as caught, stop_on_signals():
        with finish_first():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            done.append("the whole save")  # reached: the signal waits for the save
        done.append("after the save")  # not reached: the signal stops the command here
    assert done == ["the whole save"] and caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_checkpoint_saves_of_the_trainer_run_inside_finish_first():
    from calibtune.training.finetune import finish_saves_first

    saved = []

    class Trainer:
        def _maybe_log_save_evaluate(self, *args, **kwargs):  # the step that writes checkpoints
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            saved.append("whole checkpoint")

    trainer = Trainer()
    finish_saves_first(trainer)
    with pytest.raises(Interrupted), stop_on_signals():
        trainer._maybe_log_save_evaluate("model", "trial")
    assert saved == ["whole checkpoint"]
