"""Compare several runs: one overlay diagram and one Markdown table."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..integrity import atomic_write_text
from ..report.plots import prepare_reliability, save_overlay
from ..scores import OptionScores, evaluate


def compare_runs(runs: list[Path], out: Path, n_bins: int = 10) -> str:
    if not runs:
        raise ConfigError("give at least one run folder")
    rows, curves = [], []
    for run in runs:
        path = run / "scores.npz" if run.is_dir() else run
        scores = OptionScores.load(path)
        label = run.name if run.is_dir() else run.parent.name
        p = scores.probs()
        m = evaluate(scores, n_bins=n_bins, n_boot=0)
        rows.append(f"| {label} | {m['n']} | {m['accuracy']:.3f} | {m['mean_confidence']:.3f} | "
                    f"{m['ece']:.3f} | {m['cw_ece']:.3f} | {m['nll']:.3f} |")
        curves.append(prepare_reliability(p, scores.labels, scores.mask, n_bins, label))
    out.mkdir(parents=True, exist_ok=True)
    save_overlay(curves, out / "overlay.png")
    text = "\n".join(["| run | n | accuracy | mean conf. | ECE | cw-ECE | NLL |",
                      "|---|---|---|---|---|---|---|", *rows]) + "\n"
    atomic_write_text(out / "compare.md", text + "\n![overlay](overlay.png)\n")
    return text
