"""What a run's numbers say, in words and rows: shared by report.md and report.html."""
from __future__ import annotations

from pathlib import Path

from .html import Details, Figure, Heading, Paragraph, Table, render_html

HEADLINE = [("accuracy", "accuracy"), ("mean_confidence", "mean confidence"),
            ("ece", "ECE (top-label)"), ("cw_ece", "cw-ECE (classwise)")]
MORE = [("ece_adaptive", "ECE (equal-mass bins)"), ("mce", "MCE"), ("rms_ce", "RMS-CE"),
        ("smooth_ece", "smooth ECE"), ("brier", "Brier"), ("nll", "NLL"),
        ("auroc", "AUROC (confidence vs correct)"),
        ("area_under_accuracy_coverage", "area under accuracy–coverage"),
        ("rms_ce_debiased", "RMS-CE, debiased (interval: population binned error)")]


def metric_rows(metrics: dict, keys: list[tuple[str, str]]) -> list[list]:
    """[name, value, 95% interval or ''] for each key present in `metrics`."""
    rows = []
    for key, name in keys:
        if key not in metrics or metrics[key] is None:
            continue
        ci = (metrics.get("ci", {}).get(key) if key != "rms_ce_debiased"
              else metrics.get("rms_ce_debiased_ci"))
        interval = (f"[{ci['low']:.3f}, {ci['high']:.3f}]", ci["low"]) if ci else ""
        rows.append([name, float(metrics[key]), interval])
    return rows


def noise_sentence(metrics: dict) -> str:
    """What ECE a perfectly calibrated model would show on these items (the noise floor)."""
    floor = metrics["ece_noise_floor"]
    return (f"A perfectly calibrated model with these confidences would still show an ECE "
            f"of {floor['mean']:.3f} ± {floor['std']:.3f} on {metrics['n']} items (95% of "
            f"simulations below {floor['q95']:.3f}): ECE below that is noise.")


def gap_sentence(metrics: dict) -> str | None:
    """Over- or underconfidence beyond 0.05, in words (None when the gap is smaller)."""
    gap = metrics["mean_confidence"] - metrics["accuracy"]
    if gap > 0.05:
        return f"The model is **overconfident**: mean confidence exceeds accuracy by {gap:.3f}."
    if gap < -0.05:
        return (f"The model is **underconfident**: accuracy exceeds mean confidence by "
                f"{-gap:.3f}.")
    return None


def reading(metrics: dict) -> list[str]:
    """The sentences a reader needs: the noise floor and the direction of the gap."""
    lines = []
    floor = metrics.get("ece_noise_floor")
    if floor:
        lines.append(noise_sentence(metrics))
        if metrics["ece"] <= floor["q95"]:
            lines.append(f"Here ECE = {metrics['ece']:.3f} is **within the noise floor**: these "
                         "items cannot tell this model from a calibrated one.")
    gap = gap_sentence(metrics)
    if gap:
        lines.append(gap)
    k = metrics.get("n_options_max")
    if k and metrics["accuracy"] < 1.5 / k:
        lines.append(f"Accuracy {metrics['accuracy']:.3f} is close to chance (1/K = {1 / k:.3f} "
                     "for the largest K): calibration here says more about the option prior than "
                     "about knowledge.")
    return lines


def collapse_sentence(c: dict) -> str:
    letter = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[c["top_option"]]
    verdict = ("a **letter prior**: predictions pile onto one option far beyond its share of the "
               "gold answers" if c["letter_prior"] else "no strong letter prior")
    return (f"Option {letter} takes {c['top_pred_share']:.0%} of the predictions but is the gold "
            f"answer of {c['top_gold_share']:.0%} of the items; mean top-option mass exceeds "
            f"accuracy by {c['gap_beyond_accuracy']:.3f}: {verdict}.")


def conformal_rows(metrics: dict) -> list[list]:
    rows = []
    for method, r in (metrics.get("conformal") or {}).items():
        rows.append([method.upper(), r["alpha"], r["coverage"], r["mean_set_size"],
                     r["n_cal"], r["n_test"], "full sets" if r.get("full_sets") else ""])
    return rows


def group_rows(metrics: dict, limit: int | None = None) -> list[list]:
    rows = (metrics.get("groups") or {}).get("rows", [])[:limit]
    return [[r["group"], r["n"], r["accuracy"], r["mean_confidence"], r["ece"],
             (f"[{r['ece_low']:.3f}, {r['ece_high']:.3f}]", r["ece_low"]), r["noise_floor_q95"],
             r["flag"]] for r in rows]


GROUP_COLUMNS = ["group", "n", "accuracy", "mean conf.", "ECE", "95% interval",
                 "noise q95", "caution"]
CONFORMAL_COLUMNS = ["method", "α", "coverage", "mean set size", "calibration items",
                     "test items", ""]


def detail_blocks(metrics: dict) -> list:
    """Collapse measures, conformal sets and the per-group table, as page blocks."""
    blocks: list = []
    if "collapse" in metrics:
        blocks += [Heading("Letter prior or spread overconfidence?"),
                   Paragraph(collapse_sentence(metrics["collapse"]))]
    if metrics.get("conformal"):
        blocks += [Heading("Conformal prediction sets"),
                   Table(CONFORMAL_COLUMNS, conformal_rows(metrics),
                         caption="split-conformal on a seeded half of the items, reported on the "
                                 "other half; coverage should be at least 1 − α")]
    if metrics.get("groups"):
        blocks += [Heading("Per group (worst-calibrated first)"),
                   Table(GROUP_COLUMNS, group_rows(metrics),
                         caption="groups with too few items or an ECE within their noise floor "
                                 "are listed last and flagged")]
    return blocks


def markdown_sections(metrics: dict) -> str:
    """The same details for report.md."""
    out = []
    if "collapse" in metrics:
        out += ["", "## Letter prior or spread overconfidence?", "",
                collapse_sentence(metrics["collapse"])]
    if metrics.get("conformal"):
        out += ["", "## Conformal prediction sets", "",
                "| " + " | ".join(c or "note" for c in CONFORMAL_COLUMNS) + " |",
                "|---" * len(CONFORMAL_COLUMNS) + "|"]
        out += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row)
                + " |" for row in conformal_rows(metrics)]
    if metrics.get("groups"):
        out += ["", "## Per group (worst-calibrated first, 20 shown)", "",
                "| " + " | ".join(GROUP_COLUMNS) + " |", "|---" * len(GROUP_COLUMNS) + "|"]
        for row in group_rows(metrics, 20):
            cells = [v[0] if isinstance(v, tuple) else f"{v:.3f}" if isinstance(v, float)
                     else str(v) for v in row]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + ("\n" if out else "")


def run_page(metrics: dict, *, title: str, context: dict, figures: list[str], folder: Path,
             extra_blocks: list | None = None) -> str:
    """The HTML page of one run folder (figures are files in `folder`)."""
    blocks: list = [Table(["metric", "value", "95% interval"], metric_rows(metrics, HEADLINE),
                          caption=f"{metrics['n']} items, {metrics.get('n_bins', 10)} bins",
                          sortable=False)]
    blocks += [Paragraph(line, "note" if i == 0 else "") for i, line in enumerate(reading(metrics))]
    blocks += [Heading("Diagrams")]
    blocks.append([Figure(Path(folder) / f, caption=Path(f).stem.replace("_", " "))
                   for f in figures if (Path(folder) / f).exists()])
    blocks += detail_blocks(metrics)
    blocks += extra_blocks or []
    blocks.append(Details("All metrics", [Table(["metric", "value", "95% interval"],
                                                metric_rows(metrics, HEADLINE + MORE))]))
    return render_html(title, blocks, context={k: str(v) for k, v in context.items()},
                       footer="Written by calibtune. Intervals: the debiased RMS-CE interval is not a "
                              "percentile interval but √max(0, Ŝ ± 1.96·sd), Ŝ the debiased "
                              "squared error and sd its standard deviation over item resamples: "
                              "a 95% interval for the population binned error (docs/metrics.md). "
                              "Every other interval is a 95% percentile bootstrap interval over "
                              "items; for ECE and cw-ECE it is an interval of the binned "
                              "estimator at this n, not of the true calibration error.")
