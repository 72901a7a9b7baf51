"""What a run's numbers say, in words and rows: shared by report.md and report.html."""
from __future__ import annotations

from pathlib import Path

from .html import Details, Figure, Heading, Paragraph, Table, render_html

HEADLINE = [("accuracy", "accuracy"), ("mean_confidence", "mean confidence"),
            ("ece", "ECE (top-label)"), ("cw_ece", "cw-ECE (classwise)")]
MORE = [("ece_adaptive", "ECE (equal-mass bins)"), ("mce", "MCE"), ("rms_ce", "RMS-CE"),
        ("smooth_ece", "smooth ECE"), ("brier", "Brier"), ("nll", "NLL"),
        ("auroc", "AUROC (confidence vs correct)"),
        ("area_under_accuracy_coverage", "area under accuracy–coverage")]


def metric_rows(metrics: dict, keys: list[tuple[str, str]]) -> list[list]:
    """[name, value, 95% interval or ''] for each key present in `metrics`."""
    rows = []
    for key, name in keys:
        if key not in metrics or metrics[key] is None:
            continue
        ci = metrics.get("ci", {}).get(key)
        interval = (f"[{ci['low']:.3f}, {ci['high']:.3f}]", ci["low"]) if ci else ""
        rows.append([name, float(metrics[key]), interval])
    return rows


def reading(metrics: dict) -> list[str]:
    """The sentences a reader needs: the noise floor and the direction of the gap."""
    lines = []
    floor = metrics.get("ece_noise_floor")
    if floor:
        lines.append(f"A perfectly calibrated model with these confidences would still show an "
                     f"ECE of {floor['mean']:.3f} ± {floor['std']:.3f} on {metrics['n']} items "
                     f"(95% of simulations below {floor['q95']:.3f}): ECE below that is noise.")
        if metrics["ece"] <= floor["q95"]:
            lines.append(f"Here ECE = {metrics['ece']:.3f} is **within the noise floor**: these "
                         "items cannot tell this model from a calibrated one.")
    gap = metrics["mean_confidence"] - metrics["accuracy"]
    if gap > 0.05:
        lines.append(f"The model is **overconfident**: mean confidence exceeds accuracy by "
                     f"{gap:.3f}.")
    elif gap < -0.05:
        lines.append(f"The model is **underconfident**: accuracy exceeds mean confidence by "
                     f"{-gap:.3f}.")
    k = metrics.get("n_options_max")
    if k and metrics["accuracy"] < 1.5 / k:
        lines.append(f"Accuracy {metrics['accuracy']:.3f} is close to chance (1/K = {1 / k:.3f} "
                     "for the largest K): calibration here says more about the option prior than "
                     "about knowledge.")
    return lines


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
    blocks += extra_blocks or []
    blocks.append(Details("All metrics", [Table(["metric", "value", "95% interval"],
                                                metric_rows(metrics, HEADLINE + MORE))]))
    return render_html(title, blocks, context={k: str(v) for k, v in context.items()},
                       footer="Written by calibtune. Intervals are 95% bootstrap percentile "
                              "intervals over items.")
