"""A run directory: scores, metrics, diagrams and report, written atomically.

Every command that produces option scores (eval, posthoc, train) ends here, so their outputs
have the same shape and can be compared.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..defaults import N_BINS, N_BOOT
from ..integrity import atomic_write_json, atomic_write_text
from ..run_guard import write_config  # noqa: F401  (workflows import it from here)
from ..report.markdown import render_report
from ..report.reading import markdown_sections, run_page
from ..report.plots import (prepare_classwise, prepare_reliability, save_classwise,
                            save_reliability)
from ..option_scores import OptionScores, evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutputs:
    folder: Path
    metrics: dict


def write_run(folder: str | Path, scores: OptionScores, *, title: str, context: dict,
              n_bins: int = N_BINS, n_boot: int = N_BOOT, seed: int = 0, label: str = "model",
              extra_metrics: dict | None = None) -> RunOutputs:
    """Write scores.npz, metrics.json, reliability.png/.svg, classwise.png and report.md."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probs = scores.probs()
    metrics = evaluate(scores, n_bins=n_bins, n_boot=n_boot, seed=seed)
    if extra_metrics:
        metrics.update(extra_metrics)
    scores.save(folder / "scores.npz")
    atomic_write_json(folder / "metrics.json", metrics)
    rel = prepare_reliability(probs, scores.labels, scores.mask, n_bins, label)
    save_reliability(rel, folder / "reliability.png")
    save_reliability(rel, folder / "reliability.svg")
    save_classwise(prepare_classwise(probs, scores.labels, scores.mask, n_bins), metrics["cw_ece"],
                   folder / "classwise.png")
    figures = ["reliability.png", "classwise.png"]
    atomic_write_text(folder / "report.md", render_report(
        metrics, title=title, context=context, figures=figures) + markdown_sections(metrics))
    write_page(folder, metrics, title=title, context=context, figures=figures)
    return RunOutputs(folder, metrics)


def write_page(folder: Path, metrics: dict, *, title: str, context: dict, figures: list[str],
               extra_blocks: list | None = None) -> None:
    """report.html: the run folder as one self-contained page (see report/html.py)."""
    atomic_write_text(folder / "report.html", run_page(
        metrics, title=title, context=context, figures=figures, folder=folder,
        extra_blocks=extra_blocks))
