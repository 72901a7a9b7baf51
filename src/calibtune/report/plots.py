"""Reliability diagrams in three steps: `prepare_*` (plain data), `draw_*(ax, data)` (onto any
matplotlib axes, e.g. a panel of a paper figure) and `save_*` (a figure of them, to a file)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..defaults import N_BINS
from ..data.items import LETTERS  # noqa: E402
from ..integrity import atomic_write  # noqa: E402
from ..metrics.binning import (BinTable, bin_edges, bin_statistics,  # noqa: E402
                               calibration_error_from_table)
from ..metrics.validation import check_inputs  # noqa: E402
from ..metrics.calibration import bin_table, classwise_tables  # noqa: E402


@dataclass(frozen=True)
class ReliabilityData:
    """What a reliability diagram draws: one bin table, a label and its ECE."""

    table: BinTable
    label: str
    ece: float


def prepare_reliability(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None,
                        n_bins: int = N_BINS, label: str = "model") -> ReliabilityData:
    table = bin_table(probs, labels, n_bins, "uniform", mask)
    return ReliabilityData(table, label, calibration_error_from_table(table, "l1"))


def prepare_classwise(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None,
                      n_bins: int = N_BINS) -> list[ReliabilityData]:
    """One panel per option class (p_ij against the frequency of y = j), then all classes pooled."""
    panels = [ReliabilityData(t, f"option {LETTERS[j]}", calibration_error_from_table(t, "l1"))
              for j, t in enumerate(classwise_tables(probs, labels, n_bins, mask))]
    p, y, m = check_inputs(probs, labels, mask)
    onehot = np.arange(p.shape[1])[None, :] == y[:, None]
    pooled = bin_statistics(p[m], onehot[m], bin_edges(None, n_bins, "uniform"))
    panels.append(ReliabilityData(pooled, "all options", calibration_error_from_table(pooled, "l1")))
    return panels


def _draw_bins(ax, data: ReliabilityData, color: str = "C0", show_gap: bool = True) -> None:
    t = data.table
    left, width = t.edges[:-1], np.diff(t.edges)
    full = t.count > 0
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.bar(left[full], t.accuracy[full], width=width[full], align="edge", color=color, alpha=0.8,
           edgecolor="black", lw=0.5, label="accuracy")
    if show_gap:
        bottom = np.minimum(t.accuracy[full], t.confidence[full])
        ax.bar(left[full], np.abs(t.gap[full]), bottom=bottom, width=width[full], align="edge",
               color="red", alpha=0.25, hatch="//", edgecolor="red", lw=0.5, label="gap")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)


# ---- draw_*: onto the caller's axes, nothing saved ------------------------------------------

def draw_reliability(ax, data: ReliabilityData, title: str | None = None) -> None:
    """Accuracy per confidence bin against the diagonal, gaps shaded, ECE in the title."""
    _draw_bins(ax, data)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left")
    ax.set_title(title or f"{data.label}: ECE {data.ece:.3f}, n = {data.table.n}")


def draw_bin_counts(ax, data: ReliabilityData) -> None:
    """How many items fall in each confidence bin (drawn under a reliability diagram)."""
    t = data.table
    ax.bar(t.edges[:-1], t.count, width=np.diff(t.edges), align="edge", color="grey",
           edgecolor="black", lw=0.5)
    ax.set_xlabel("confidence")
    ax.set_ylabel("items")


def draw_classwise(axes, panels: list[ReliabilityData]) -> None:
    """One reliability panel per option class on `axes` (the last, pooled, in green); axes
    left over are switched off."""
    axes = list(axes)
    k = len(panels)
    for i, (ax, data) in enumerate(zip(axes, panels)):
        _draw_bins(ax, data, color="C2" if i == k - 1 else "C0")  # blue options, green pooled
        ax.set_title(f"{data.label}: ECE {data.ece:.3f}", fontsize=9)
    for ax in axes[k:]:
        ax.axis("off")


def draw_overlay(ax, runs: list[ReliabilityData]) -> None:
    """Several runs (e.g. aligned vs CFT vs RCFT) as accuracy-vs-confidence curves on one axis."""
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for i, data in enumerate(runs):
        t = data.table
        full = t.count > 0
        ax.plot(t.confidence[full], t.accuracy[full], marker="o", color=f"C{i}",
                label=f"{data.label} (ECE {data.ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy in bin")
    ax.legend(loc="upper left", fontsize=8)


# ---- save_*: a figure of the draw_* above, written atomically (PNG or SVG by suffix) ---------

def save_figure(fig, path: str | Path) -> None:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png",
                                               dpi=120, bbox_inches="tight"))
    plt.close(fig)


def save_reliability(data: ReliabilityData, path: str | Path, title: str | None = None) -> None:
    """The reliability diagram with its bin counts below."""
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5, 6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    draw_reliability(ax, data, title)
    draw_bin_counts(axh, data)
    save_figure(fig, path)


def save_classwise(panels: list[ReliabilityData], total: float, path: str | Path) -> None:
    """One reliability panel per option class and the pooled one; cw-ECE in the title."""
    k = len(panels)
    cols = min(k, 4)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    draw_classwise(axes.ravel(), panels)
    fig.suptitle(f"classwise reliability — cw-ECE {total:.3f}")
    fig.supxlabel("predicted probability of the option")
    fig.supylabel("frequency of the option being correct")
    save_figure(fig, path)


def save_overlay(runs: list[ReliabilityData], path: str | Path) -> None:
    """Several runs' reliability curves on one axis."""
    fig, ax = plt.subplots(figsize=(5, 5))
    draw_overlay(ax, runs)
    save_figure(fig, path)
