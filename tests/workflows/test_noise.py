"""Progress and noise (docs/reliability.md): a minutes-long phase shows a bar saying what it does, and
nothing else the user did not ask for reaches the terminal.

Run as a user runs it, in a subprocess, on the tiny model. Without `cli._quiet_libraries`
DeepSpeed's accelerator notice (stdout) and a transformers FutureWarning (stderr) appear;
without the labelled scorers of `training.finetune.train`, RCFT's first E-step and the
per-epoch checks run without a bar.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_items, write_train_eval

ROOT = Path(__file__).resolve().parents[2]
BAR = re.compile(r"^(\x1b\[A)*([\w:() -]+: )?\s*\d+%\|.*\|")  # a tqdm line, labelled or not


def lines(text: str) -> list[str]:
    return [x for x in text.replace("\r", "\n").splitlines() if x.strip()]


@pytest.mark.slow
def test_train_shows_its_phases_and_nothing_else(tiny_llama, tmp_path):
    data = write_train_eval(tmp_path, make_items(8, k=[4, 3], seed=1), make_items(6, seed=2))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-m", "calibtune", "train", "--model", str(tiny_llama),
         "--data", str(data / "train.jsonl"), "--split", "all", "--eval-data",
         str(data / "eval.jsonl"), "--eval-split", "all", "--method", "rcft", "--epochs", "1",
         "--batch-size", "4", "--lora-r", "4", "--lora-alpha", "8", "--out", str(tmp_path / "o")],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    err = lines(run.stderr)
    unexpected = [x for x in err if not BAR.match(x)]
    assert unexpected == [], unexpected  # warnings, notices, tracebacks
    labels = {m.group(2) for m in map(BAR.match, err) if m.group(2)}
    assert {"E-step: training items: ", "epoch check: ", "scoring: "} <= labels
    assert not [x for x in lines(run.stdout) if "WARNING" in x or "Warning" in x]


def test_preference_scoring_and_the_kl_check_show_a_bar(tiny_llama, capfd):
    from calibtune.align.pairs import pairs_from_items
    from calibtune.align.retention import kl_divergence, preference_accuracy
    from calibtune.models import load_model

    model, tok = load_model(str(tiny_llama), device="cpu")
    pairs = pairs_from_items(make_items(4), scoring="letter", style="plain", tokenizer=tok,
                             seed=0)
    preference_accuracy(model, tok, pairs, batch_size=2)
    kl_divergence(model, tok, pairs, reference=model, batch_size=2)
    err = capfd.readouterr().err
    assert "preference log-probs" in err and "KL check" in err


@pytest.mark.parametrize("module, dropped", [
    ("transformers.modeling_utils", True), ("kernels", True), ("deepspeed.runtime", True),
    ("httpx._client", True), ("calibtune.training", False), ("trlx", False)])
def test_library_deprecations_are_dropped_and_ours_are_kept(module, dropped, capsys):
    """The warning filter is built from the same list as the logger filter (cli.QUIET): every
    library named there is silenced by module, a module merely starting with a name is not."""
    import warnings

    from calibtune import cli

    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.simplefilter("always")
        cli._quiet_libraries(verbose=False)
        warnings.warn_explicit("old API\nsecond line", FutureWarning, "x.py", 1, module=module)
    assert capsys.readouterr().err == ("" if dropped else "warning: old API\n")
