"""`calibtune report RUN [RUN ...]`: compare runs — overlay, table, paired differences, plane.

Every run is set against the first on the same items: paired bootstrap intervals of Δaccuracy,
ΔECE, Δcw-ECE, ΔBrier, ΔNLL (items resampled jointly), the share of changed predictions and an
exact McNemar test. Runs on different items are refused unless `intersect`. With `plane`,
training run folders are drawn in the accuracy–ECE plane. Writes compare.md, paired.json,
overlay.png, plane.png and report.html.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..defaults import N_BINS, N_BOOT
from ..errors import ConfigError
from ..integrity import atomic_write_json, atomic_write_text
from ..metrics.paired import compare_scores
from ..report.html import Figure, Heading, Paragraph, Table, render_html
from ..report.plots import prepare_reliability, save_overlay
from ..run_guard import RunFolder
from ..option_scores import OptionScores, evaluate

DELTAS = ("accuracy", "ece", "cw_ece", "brier", "nll")


def run_scores(run: Path) -> OptionScores:
    """The scores of a run folder (a train folder gives its held-out eval) or a file."""
    if run.is_dir():
        path = run / "scores.npz" if (run / "scores.npz").exists() else run / "eval" / "scores.npz"
        return OptionScores.load(path)
    return OptionScores.load(run)


def run_labels(runs: list[Path]) -> list[str]:
    """Each run's name: the fewest trailing path parts that tell it from the other runs, so
    `a/eval` and `b/eval` are not both `eval`. A scores file is named by its folder, and by its
    own name too when another input lies in the same folder; the same run given twice (however
    the path is written) keeps one name."""
    paths = [Path(os.path.normpath(r.absolute())) for r in runs]
    folders = [p if p.is_dir() else p.parent for p in paths]
    shared = {f for f in folders if len({p for p, g in zip(paths, folders) if g == f}) > 1}
    parts = [f.parts[1:] + ((p.name,) if p != f and f in shared else ())
             for p, f in zip(paths, folders)]
    labels: list[str] = []
    for depth in range(1, max(len(x) for x in parts) + 1):
        labels = ["/".join(x[-depth:]) for x in parts]
        if len(set(labels)) == len(set(paths)):
            break
    return labels


def _delta_text(d: dict) -> str:
    return f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def compare_runs(runs: list[Path], out: Path, n_bins: int = N_BINS, *, plane: bool = False,
                 intersect: bool = False, n_boot: int = N_BOOT, seed: int = 0,
                 resume: bool = False, overwrite: bool = False) -> str:
    """Compare `runs` and write the folder `out` (a folder holding another run is refused
    unless `overwrite`, or `resume` with the same settings)."""
    settings = {"runs": [str(r) for r in runs], "out": str(out), "n_bins": n_bins,
                "plane": plane, "intersect": intersect, "n_boot": n_boot, "seed": seed}
    with RunFolder(out, settings, command="report", resume=resume, overwrite=overwrite) as folder:
        return _compare_into(folder, runs, n_bins, plane=plane, intersect=intersect,
                             n_boot=n_boot, seed=seed)


def _compare_into(folder: RunFolder, runs: list[Path], n_bins: int, *, plane: bool,
                  intersect: bool, n_boot: int, seed: int) -> str:
    if not runs:
        raise ConfigError("give at least one run folder")
    paths = [Path(r) for r in runs]
    loaded = list(zip(run_labels(paths), [run_scores(p) for p in paths]))
    planes = None
    if plane:  # every input is read before anything is written
        from ..report.plane import prepare_plane

        planes = [prepare_plane(p) for p in paths if (p / "train_log.json").exists()]
        if not planes:
            raise ConfigError("--plane draws training run folders (with train_log.json); none "
                              "of the runs given is one")
    rows, curves, table = [], [], []
    for label, scores in loaded:
        m = evaluate(scores, n_bins=n_bins, n_boot=0)
        rows.append(f"| {label} | {m['n']} | {m['accuracy']:.3f} | {m['mean_confidence']:.3f} | "
                    f"{m['ece']:.3f} | {m['cw_ece']:.3f} | {m['nll']:.3f} |")
        table.append([label, m["n"], m["accuracy"], m["mean_confidence"], m["ece"], m["cw_ece"],
                      m["nll"]])
        curves.append(prepare_reliability(scores.probs(), scores.labels, scores.mask, n_bins,
                                          label))
    paired = []
    base_label, base = loaded[0]
    for label, scores in loaded[1:]:
        result = compare_scores(base, scores, intersect=intersect, n_bins=n_bins, n_boot=n_boot,
                                seed=seed).to_dict()
        paired.append({"a": base_label, "b": label, **result})
    out = folder.open()
    save_overlay(curves, out / "overlay.png")
    text = "\n".join(["| run | n | accuracy | mean conf. | ECE | cw-ECE | NLL |",
                      "|---|---|---|---|---|---|---|", *rows]) + "\n"
    paired_rows = []
    if paired:
        text += ("\nPaired against " + base_label + " on the same items (B − A, 95% paired "
                 "bootstrap intervals; McNemar exact on correctness):\n\n| B | n | "
                 + " | ".join(f"Δ {k}" for k in DELTAS) + " | changed | McNemar p |\n"
                 + "|---" * (len(DELTAS) + 4) + "|\n")
        for p in paired:
            text += (f"| {p['b']} | {p['n']} | "
                     + " | ".join(_delta_text(p["deltas"][k]) for k in DELTAS)
                     + f" | {p['changed_predictions']:.0%} | {p['mcnemar']['p_value']:.3g} |\n")
            paired_rows.append([p["b"], p["n"], *[(_delta_text(p["deltas"][k]),
                                                   p["deltas"][k]["estimate"]) for k in DELTAS],
                                (f"{p['changed_predictions']:.0%}", p["changed_predictions"]),
                                p["mcnemar"]["p_value"]])
        atomic_write_json(out / "paired.json", paired)
    figures = [Figure(out / "overlay.png", "reliability curves of every run")]
    if planes:
        from ..report.plane import save_plane

        save_plane(planes, out / "plane.png")
        atomic_write_json(out / "plane.json", [p.to_dict() for p in planes])
        figures.append(Figure(out / "plane.png", "accuracy–ECE plane (docs/theory.md)"))
        text += "\n![accuracy–ECE plane](plane.png)\n"
    atomic_write_text(out / "compare.md", text + "\n![overlay](overlay.png)\n")
    blocks: list = [Table(["run", "n", "accuracy", "mean conf.", "ECE", "cw-ECE", "NLL"], table)]
    if paired_rows:
        blocks += [Heading(f"Paired against {base_label}"),
                   Paragraph("B − A on the same items, with 95% paired bootstrap intervals "
                             "(items resampled jointly); an interval that excludes 0 is a "
                             "difference on these items. McNemar: exact test on correctness."),
                   Table(["B", "n", *[f"Δ {k}" for k in DELTAS], "changed", "McNemar p"],
                         paired_rows)]
    blocks += [Heading("Diagrams"), figures]
    atomic_write_text(out / "report.html", render_html("calibtune compare", blocks,
                                                       context={"runs": ", ".join(map(str, runs))}))
    return text
