"""The comparison's tables, figures and page, from the finished steps of `calibtune reproduce`.

For each method and split the metrics are averaged over seeds; the 95% interval resamples the
(shared) evaluation items jointly across seeds, so it is the interval of the seed-averaged
value; `sd` is the spread over seeds. Differences against the aligned model are paired: the
same item resample enters both sides.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SavedFileError
from ..integrity import atomic_write, atomic_write_json, atomic_write_text
from ..metrics.calibration import classwise_ece, ece
from ..metrics.proper import brier, nll
from ..option_scores import OptionScores
from .reproduce_steps import (ReproduceConfig, scores_of)

METRICS = ("accuracy", "ece", "cw_ece", "brier", "nll")
NAMES = {"accuracy": "accuracy", "ece": "ECE", "cw_ece": "cw-ECE", "brier": "Brier",
         "nll": "NLL"}


def _values(s: OptionScores, idx: np.ndarray, n_bins: int) -> dict[str, float]:
    p, y, m = s.probs()[idx], s.labels[idx], s.mask[idx]
    return {"accuracy": float(np.mean(p.argmax(1) == y)), "ece": ece(p, y, n_bins, mask=m),
            "cw_ece": classwise_ece(p, y, n_bins, mask=m), "brier": brier(p, y, m),
            "nll": nll(p, y, m)}


@dataclass
class Cell:
    """One method on one split: seed-mean, spread over seeds, interval, and Δ vs aligned."""

    method: str
    split: str
    n: int
    seeds: int
    mean: dict
    sd: dict
    low: dict
    high: dict
    delta: dict | None  # {metric: (estimate, low, high)} against the aligned model
    changed_predictions: float | None


def summarise(cfg: ReproduceConfig, steps_dir: Path, n_boot: int | None = None, seed: int = 0
              ) -> list[Cell]:
    n_boot = cfg.n_boot if n_boot is None else n_boot
    rng = np.random.default_rng(seed)
    cells = []
    for split in cfg.splits:
        aligned = scores_of(cfg, steps_dir, "aligned", cfg.seeds[0], split)
        n = len(aligned)
        resamples = [np.arange(n)] + [rng.integers(0, n, n) for _ in range(n_boot)]
        base = np.array([[_values(aligned, idx, cfg.n_bins)[k] for k in METRICS]
                         for idx in resamples])
        for method in cfg.rows:
            runs = ([aligned] if method == "aligned" else
                    [scores_of(cfg, steps_dir, method, s, split) for s in cfg.seeds])
            for r in runs:
                if r.ids.tolist() != aligned.ids.tolist():
                    raise SavedFileError(f"{method} on {split.name} scored other items than "
                                         "the aligned model; delete that step's folder and rerun")
            # [resample, seed, metric]
            vals = np.array([[[_values(r, idx, cfg.n_bins)[k] for k in METRICS] for r in runs]
                             for idx in resamples])
            point, boot = vals[0].mean(0), vals[1:].mean(1)
            sd = vals[0].std(0, ddof=1) if len(runs) > 1 else np.zeros(len(METRICS))
            q = np.quantile(boot, [0.025, 0.975], axis=0) if n_boot else np.full((2, len(METRICS)),
                                                                                np.nan)
            delta, changed = None, None
            if method != "aligned":
                d = vals.mean(1) - base
                dq = np.quantile(d[1:], [0.025, 0.975], axis=0) if n_boot else np.full(
                    (2, len(METRICS)), np.nan)
                delta = {k: (float(d[0, j]), float(dq[0, j]), float(dq[1, j]))
                         for j, k in enumerate(METRICS)}
                ref = aligned.probs().argmax(1)
                changed = float(np.mean([np.mean(r.probs().argmax(1) != ref) for r in runs]))
            cells.append(Cell(method, split.name, n, len(runs),
                              dict(zip(METRICS, map(float, point))),
                              dict(zip(METRICS, map(float, sd))),
                              dict(zip(METRICS, map(float, q[0]))),
                              dict(zip(METRICS, map(float, q[1]))), delta, changed))
    return cells


def _fmt(c: Cell, k: str) -> str:
    sd = f" ± {c.sd[k]:.3f}" if c.seeds > 1 else ""
    ci = f" [{c.low[k]:.3f}, {c.high[k]:.3f}]" if np.isfinite(c.low[k]) else ""
    return f"{c.mean[k]:.3f}{sd}{ci}"


def _fmt_delta(c: Cell, k: str) -> str:
    if c.delta is None:
        return "—"
    e, lo, hi = c.delta[k]
    return f"{e:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def table_markdown(cells: list[Cell], cfg: ReproduceConfig) -> str:
    lines = [f"Seeds: {cfg.seeds}. Each cell: mean over seeds ± sd over seeds [95% bootstrap "
             "interval of the seed mean, items resampled]; Δ is paired against the aligned "
             "model on the same items.", ""]
    for split in cfg.splits:
        rows = [c for c in cells if c.split == split.name]
        lines += [f"### {split.name} ({rows[0].n} items)", "",
                  "| method | " + " | ".join(NAMES[k] for k in METRICS)
                  + " | Δ accuracy | Δ ECE | predictions changed |",
                  "|---" * (len(METRICS) + 4) + "|"]
        for c in rows:
            changed = "—" if c.changed_predictions is None else f"{c.changed_predictions:.0%}"
            lines.append(f"| {c.method} | " + " | ".join(_fmt(c, k) for k in METRICS)
                         + f" | {_fmt_delta(c, 'accuracy')} | {_fmt_delta(c, 'ece')} | {changed} |")
        lines.append("")
    return "\n".join(lines)


def table_csv(cells: list[Cell]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = ["method", "split", "n", "seeds"]
    for k in METRICS:
        header += [k, f"{k}_sd", f"{k}_low", f"{k}_high", f"delta_{k}", f"delta_{k}_low",
                   f"delta_{k}_high"]
    writer.writerow(header + ["changed_predictions"])
    for c in cells:
        row = [c.method, c.split, c.n, c.seeds]
        for k in METRICS:
            d = c.delta[k] if c.delta else ("", "", "")
            row += [c.mean[k], c.sd[k], c.low[k], c.high[k], *d]
        writer.writerow(row + ["" if c.changed_predictions is None else c.changed_predictions])
    return buf.getvalue()


def reliability_grid(cfg: ReproduceConfig, steps_dir: Path, path: Path) -> None:
    """Rows = methods, columns = splits; the first seed's scores in each panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.plots import draw_reliability, prepare_reliability

    rows, cols = len(cfg.rows), len(cfg.splits)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), squeeze=False)
    for i, method in enumerate(cfg.rows):
        for j, split in enumerate(cfg.splits):
            s = scores_of(cfg, steps_dir, method, cfg.seeds[0], split)
            data = prepare_reliability(s.probs(), s.labels, s.mask, cfg.n_bins,
                                       f"{method} · {split.name}")
            draw_reliability(axes[i, j], data)
            axes[i, j].set_title(f"{method} · {split.name}: ECE {data.ece:.3f}", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def reading(cells: list[Cell], cfg: ReproduceConfig) -> list[str]:
    """Plain sentences from the numbers: which differences clear their intervals, chance."""
    lines = []
    for split in cfg.splits:
        base = next(c for c in cells if c.split == split.name and c.method == "aligned")
        for c in cells:
            if c.split != split.name or c.delta is None:
                continue
            de, dlo, dhi = c.delta["ece"]
            da, alo, ahi = c.delta["accuracy"]
            ece_word = ("lowers" if dhi < 0 else "raises" if dlo > 0 else
                        "does not clearly change")
            acc_word = ("raises" if alo > 0 else "lowers" if ahi < 0 else
                        "does not clearly change")
            lines.append(f"{split.name}: **{c.method}** {ece_word} ECE ({base.mean['ece']:.3f} → "
                         f"{c.mean['ece']:.3f}, Δ {de:+.3f} [{dlo:+.3f}, {dhi:+.3f}]) and "
                         f"{acc_word} accuracy (Δ {da:+.3f} [{alo:+.3f}, {ahi:+.3f}]).")
    return lines


def write_outputs(cfg: ReproduceConfig, out: Path, cells: list[Cell], outcomes: list) -> None:
    from ..report.html import Details, Figure, Heading, Paragraph, Table, render_html
    from ..report.plane import prepare_plane, save_plane

    steps_dir = out / "steps"
    md = table_markdown(cells, cfg)
    atomic_write_text(out / "table.md", md)
    atomic_write_text(out / "table.csv", table_csv(cells))
    atomic_write_json(out / "results.json", {
        "config": cfg.name, "seeds": cfg.seeds,
        "cells": [c.__dict__ for c in cells],
        "steps": [o.__dict__ for o in outcomes]})
    reliability_grid(cfg, steps_dir, out / "reliability_grid.png")
    planes = []
    for method in [m for m in cfg.methods if (steps_dir / f"train__{m}__s{cfg.seeds[0]}").exists()]:
        planes.append(prepare_plane(steps_dir / f"train__{method}__s{cfg.seeds[0]}"))
    figures = [Figure(out / "reliability_grid.png", "reliability diagrams: rows = methods, "
                      f"columns = splits (seed {cfg.seeds[0]})")]
    if planes:
        save_plane(planes, out / "plane.png")
        figures.append(Figure(out / "plane.png", "accuracy–ECE plane of the training runs "
                              f"(seed {cfg.seeds[0]}, in-domain held-out items)"))
    blocks: list = [Paragraph(cfg.description or f"The comparison {cfg.name}.")]
    for split in cfg.splits:
        rows = [c for c in cells if c.split == split.name]
        blocks += [Heading(f"{split.name} ({rows[0].n} items)", 2),
                   Table(["method", *[NAMES[k] for k in METRICS], "Δ accuracy", "Δ ECE",
                          "changed"],
                         [[c.method, *[(_fmt(c, k), c.mean[k]) for k in METRICS],
                           (_fmt_delta(c, "accuracy"), c.delta["accuracy"][0] if c.delta else 0),
                           (_fmt_delta(c, "ece"), c.delta["ece"][0] if c.delta else 0),
                           "—" if c.changed_predictions is None else
                           (f"{c.changed_predictions:.0%}", c.changed_predictions)]
                          for c in rows],
                         caption="mean over seeds ± sd [95% interval]; Δ paired vs aligned")]
    blocks += [Heading("Reading", 2)] + [Paragraph(x) for x in reading(cells, cfg)]
    blocks += [Paragraph("Intervals: 95% bootstrap over the evaluation items, resampled jointly "
                         "for all seeds and for the aligned model, so a Δ interval that excludes "
                         "0 is a difference on these items, not a claim about other models or "
                         "datasets.", "note")]
    blocks += [Heading("Diagrams", 2), figures]
    blocks.append(Details("Steps", [Table(["step", "status", "seconds"],
                                          [[o.id, o.status, o.seconds] for o in outcomes])]))
    page = render_html(f"calibtune reproduce — {cfg.name}", blocks,
                       context={"model": cfg.model, "scoring": cfg.scoring,
                                "prompt": cfg.prompt, "seeds": str(cfg.seeds)},
                       footer="Written by calibtune reproduce.")
    atomic_write_text(out / "report.html", page)
