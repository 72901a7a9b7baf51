"""The accuracy–ECE plane: each training run's trajectory, the bounds and the noise band.

`prepare_plane(run_folder)` reads a finished `calibtune train` folder and returns plain data (the
held-out points before training, at each epoch end and after; the training-item points; the
bounds of docs/theory.md evaluated at each point; the empirical critical accuracy).
`draw_plane(ax, planes)` only draws. Statements and proofs: docs/theory.md (calibtune's own).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, SavedFileError
from ..integrity import read_json_file, read_json_records, saved_interval, saved_number
from ..theory import critical_accuracy, generalisation_gap_floor


@dataclass
class PlanePoint:
    label: str  # "before", "epoch 1.0", ..., "after"
    accuracy: float
    ece: float
    confidence: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    ece_ci: tuple[float, float] | None = None
    noise_q95: float | None = None
    gap_floor: float | None = None  # Proposition 6 at this point, when training items were scored


@dataclass
class PlaneData:
    run: str
    method: str
    n_options: int
    heldout: list[PlanePoint] = field(default_factory=list)
    train: list[PlanePoint] = field(default_factory=list)
    critical_accuracy: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _eval_point(folder: Path, label: str) -> PlanePoint | None:
    path = folder / "metrics.json"
    if not path.exists():
        return None
    m = read_json_file(path, dict)
    ci = m.get("ci") or {}
    noise = m.get("ece_noise_floor") or {}
    if not isinstance(ci, dict) or not isinstance(noise, dict):
        raise SavedFileError(f"{path}: field 'ci' or 'ece_noise_floor' is not a JSON object")
    intervals = []
    for key in ("accuracy", "ece"):
        entry = ci.get(key)
        if entry is not None and not isinstance(entry, dict):
            raise SavedFileError(f"{path}: field 'ci.{key}' is not a JSON object")
        intervals.append(None if entry is None else
                         (saved_number(entry, "low", path, where=f"ci.{key} "),
                          saved_number(entry, "high", path, where=f"ci.{key} ")))
    return PlanePoint(label, saved_number(m, "accuracy", path), saved_number(m, "ece", path),
                      saved_number(m, "mean_confidence", path), *intervals,
                      saved_number(noise, "q95", path, optional=True, where="ece_noise_floor "))


def _log_points(path: Path, prefix: str, label: str, entry: dict, where: str,
                floor: float | None = None) -> PlanePoint:
    """One epoch-end point of train_log.json, held-out (`prefix` heldout) or training items."""
    def num(key: str, optional: bool = False) -> float | None:
        return saved_number(entry, f"{prefix}_{key}", path, optional=optional, where=where)

    return PlanePoint(label, num("accuracy"), num("ece"), num("confidence", True),
                      saved_interval(entry, f"{prefix}_accuracy_ci", path, where=where),
                      saved_interval(entry, f"{prefix}_ece_ci", path, where=where),
                      num("noise_q95", True), floor)


def prepare_plane(run: str | Path) -> PlaneData:
    """The trajectory of one training run folder in the (accuracy, ECE) plane. A file of the
    folder cut short, edited by hand or of another shape is a `SavedFileError` naming it."""
    run = Path(run)
    if not (run / "train_log.json").exists():
        raise ConfigError(f"{run} holds no train_log.json: `report --plane` reads training run "
                          "folders (calibtune train --out RUN)")
    log_path = run / "train_log.json"
    log = read_json_records(log_path)
    summary = read_json_file(run / "summary.json", dict) if (run / "summary.json").exists() \
        else {}
    before = _eval_point(run / "eval_before", "before")
    after = _eval_point(run / "eval", "after")
    k = 0
    if (run / "eval" / "metrics.json").exists():
        k = int(saved_number(read_json_file(run / "eval" / "metrics.json", dict),
                             "n_options_max", run / "eval" / "metrics.json", optional=True) or 0)
    data = PlaneData(str(run), str(summary.get("method", "?")), k)
    if before:
        data.heldout.append(before)
    for where, e in log:
        if "heldout_accuracy" not in e:
            continue
        label = f"epoch {saved_number(e, 'epoch', log_path, where=where):g}"
        point = _log_points(log_path, "heldout", label, e, where)
        if "train_accuracy" in e and point.confidence is not None:
            point.gap_floor = generalisation_gap_floor(
                saved_number(e, "train_accuracy", log_path, where=where), point.accuracy,
                point.confidence).floor
        data.heldout.append(point)
        if "train_accuracy" in e:
            data.train.append(_log_points(log_path, "train", label, e, where))
    if not data.train and (run / "estep_history.json").exists():  # RCFT runs of older versions
        history = run / "estep_history.json"
        for where, h in read_json_records(history):
            if "train_accuracy" in h:
                step = saved_number(h, "step", history, where=where)
                data.train.append(PlanePoint(f"E-step {step:g}",
                                             saved_number(h, "train_accuracy", history, where=where),
                                             saved_number(h, "train_ece", history, where=where)))
    if after:
        data.heldout.append(after)
    usable = [p for p in data.heldout if p.noise_q95 is not None]
    if usable:
        crit = critical_accuracy([p.accuracy for p in usable], [p.ece for p in usable],
                                 [p.noise_q95 for p in usable])
        data.critical_accuracy = crit.to_dict()
    return data


COLORS = ["#0b63ce", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#495057"]


def draw_plane(ax, planes: list[PlaneData]) -> None:
    """Trajectories (held-out: solid with 95% intervals; training items: dashed), the
    accuracy-only floor (1/K − accuracy)₊, the noise band and each run's critical accuracy."""
    k = max([p.n_options for p in planes if p.n_options] or [4])
    acc = np.linspace(0, 1, 201)
    ax.fill_between(acc, 0, np.maximum(1 / k - acc, 0), color="#adb5bd", alpha=0.35,
                    label=f"unreachable: ECE < (1/K − acc)₊, K = {k}")
    q95 = [pt.noise_q95 for p in planes for pt in p.heldout if pt.noise_q95 is not None]
    if q95:
        band = float(np.median(q95))
        ax.axhspan(0, band, color="#74c0fc", alpha=0.25,
                   label=f"noise band (median q95 = {band:.3f})")
    ax.axvline(1 / k, color="#868e96", lw=0.8, ls=":")
    for i, plane in enumerate(planes):
        color = COLORS[i % len(COLORS)]
        name = f"{Path(plane.run).name} ({plane.method})"
        xs = [p.accuracy for p in plane.heldout]
        ys = [p.ece for p in plane.heldout]
        ax.plot(xs, ys, "-o", color=color, ms=4, lw=1.5, label=f"{name}: held-out")
        for p in plane.heldout:
            if p.ece_ci and p.accuracy_ci:
                ax.errorbar(p.accuracy, p.ece, xerr=[[p.accuracy - p.accuracy_ci[0]],
                                                     [p.accuracy_ci[1] - p.accuracy]],
                            yerr=[[max(p.ece - p.ece_ci[0], 0)], [max(p.ece_ci[1] - p.ece, 0)]],
                            color=color, alpha=0.35, lw=0.8, capsize=0)
            if p.gap_floor:
                ax.plot(p.accuracy, p.gap_floor, "v", color=color, ms=4, alpha=0.7)
        if plane.heldout:
            ax.annotate("start", (xs[0], ys[0]), fontsize=7, color=color,
                        xytext=(3, 3), textcoords="offset points")
            ax.annotate("end", (xs[-1], ys[-1]), fontsize=7, color=color,
                        xytext=(3, 3), textcoords="offset points")
        if plane.train:
            ax.plot([p.accuracy for p in plane.train], [p.ece for p in plane.train], "--s",
                    color=color, ms=3, lw=1, alpha=0.6, label=f"{name}: training items")
        crit = (plane.critical_accuracy or {}).get("critical")
        if crit is not None:
            ax.axvline(crit, color=color, lw=1, ls="--", alpha=0.8)
            ax.annotate(f"a* = {crit:.3f}", (crit, ax.get_ylim()[1] if ax.get_ylim()[1] < 1 else 0.95),
                        fontsize=7, color=color, rotation=90, va="top", ha="right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.1, min(1.0, 1.15 * max([p.ece for pl in planes for p in pl.heldout + pl.train]
                                                  or [0.1]))))
    ax.set_xlabel("accuracy")
    ax.set_ylabel("ECE (top-label)")
    ax.set_title("accuracy–ECE plane (▼: generalisation-gap floor, Prop. 6)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)


def save_plane(planes: list[PlaneData], path: str | Path) -> None:
    """Draw the plane into a PNG or SVG file, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..integrity import atomic_write

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    draw_plane(ax, planes)
    fig.tight_layout()
    fmt = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=130))
    plt.close(fig)
