"""Run folders of `calibtune eval`, `posthoc` and `train` on a tiny model, normalised to compare.

The pre-refactor commit 42a46d2 wrote `tests/workflows/golden/` with this script (from a
checkout of that commit, with this file copied in):

    PYTHONPATH=src:tests python tests/golden_runs.py tests/workflows/golden

`tests/workflows/test_golden.py` makes the same runs with the current code and compares them
file by file. Only deterministic files are kept; absolute paths become `<root>` and `<model>`.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from conftest import build_model_folder, items_to_rows, make_items, write_jsonl, write_train_eval

KEPT = {
    "eval": ["config.yaml", "metrics.json", "report.md", "scores.npz"],
    "posthoc": ["before_metrics.json", "calibrator.json", "config.yaml", "metrics.json",
                "report.md", "scores.npz"],
    "train": ["config.yaml", "estep_history.json", "eval_before/metrics.json",
              "eval_before/report.md", "eval_before/scores.npz", "eval/scores.npz"],
}


def eval_args(model: Path, root: Path) -> list[str]:
    return ["eval", "--model", str(model), "--data", str(root / "items.jsonl"), "--limit", "30",
            "--seed", "3", "--batch-size", "4", "--bins", "8", "--n-boot", "50",
            "--out", str(root / "eval")]


def posthoc_args(root: Path) -> list[str]:
    return ["posthoc", "--scores", str(root / "eval" / "scores.npz"), "--method", "temperature",
            "--fit-fraction", "0.5", "--bins", "8", "--n-boot", "50", "--out", str(root / "posthoc")]


def train_args(model: Path, root: Path) -> list[str]:
    data = root / "train-data"
    return ["train", "--model", str(model), "--data", str(data / "train.jsonl"), "--split", "all",
            "--eval-data", str(data / "eval.jsonl"), "--eval-split", "all", "--method", "rcft",
            "--max-steps", "2", "--batch-size", "4", "--lora-r", "4", "--lora-alpha", "8",
            "--n-bins", "8", "--lambda", "0.5", "--learning-rate", "0.005",
            "--out", str(root / "train")]


def make_runs(root: Path, model: Path) -> None:
    """The three run folders under `root`, made through the command line in this process."""
    from calibtune.cli import app

    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "items.jsonl", items_to_rows(make_items(40, k=[4, 3], seed=11)))
    (root / "train-data").mkdir(parents=True, exist_ok=True)
    write_train_eval(root / "train-data", make_items(24, k=[4, 3], seed=1), make_items(10, seed=2))
    runner = CliRunner()
    for args in (eval_args(model, root), posthoc_args(root), train_args(model, root)):
        res = runner.invoke(app, args)
        if res.exit_code != 0:
            raise RuntimeError(f"{args[0]} failed: {res.output}\n{res.exception!r}")


def normalise_text(text: str, root: Path, model: Path) -> str:
    return text.replace(str(model), "<model>").replace(str(root), "<root>")


def read_scores(path: Path, root: Path, model: Path) -> dict[str, np.ndarray]:
    """The arrays of a scores.npz with paths in its meta normalised."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta"] = np.array(normalise_text(str(arrays["meta"]), root, model))
    return arrays


def collect(root: Path, model: Path, dest: Path) -> None:
    """Copy the kept files of the runs under `root` into `dest`, normalised."""
    for run, names in KEPT.items():
        for name in names:
            src, out = root / run / name, dest / run / name
            out.parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".npz"):
                np.savez_compressed(out, **read_scores(src, root, model))
            else:
                out.write_text(normalise_text(src.read_text(encoding="utf-8"), root, model),
                               encoding="utf-8")
    listing = sorted(p.name for p in (root / "train").iterdir())
    (dest / "train" / "files.json").write_text(json.dumps(listing, indent=1) + "\n")


if __name__ == "__main__":
    import tempfile

    dest = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_model_folder(tmp / "tiny-llama", "llama")
        make_runs(tmp / "runs", model)
        shutil.rmtree(dest, ignore_errors=True)
        collect(tmp / "runs", model, dest)
