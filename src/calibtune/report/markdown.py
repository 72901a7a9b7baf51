"""The short human-readable `report.md` of a run, from its metrics dict."""
from __future__ import annotations

from .reading import gap_sentence, noise_sentence


def _ci(metrics: dict, key: str) -> str:
    ci = metrics.get("ci", {}).get(key)
    return f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else ""


def render_report(metrics: dict, *, title: str, context: dict, figures: list[str]) -> str:
    """Markdown with the headline numbers, how to read them, and the figures."""
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in context.items()]
    lines += ["", "| metric | value |", "|---|---|"]
    lines.append(f"| items | {metrics['n']} |")
    lines.append(f"| accuracy | {metrics['accuracy']:.3f}{_ci(metrics, 'accuracy')} |")
    lines.append(f"| mean confidence | {metrics['mean_confidence']:.3f} |")
    lines.append(f"| ECE (top-label, {metrics['n_bins']} bins) | {metrics['ece']:.3f}"
                 f"{_ci(metrics, 'ece')} |")
    lines.append(f"| cw-ECE | {metrics['cw_ece']:.3f}{_ci(metrics, 'cw_ece')} |")
    for key, name in [("ece_adaptive", "ECE (equal-mass bins)"), ("mce", "MCE"),
                      ("rms_ce", "RMS-CE"), ("smooth_ece", "smooth ECE"), ("brier", "Brier"),
                      ("nll", "NLL"), ("auroc", "AUROC (confidence vs correct)"),
                      ("area_under_accuracy_coverage", "area under accuracy–coverage")]:
        lines.append(f"| {name} | {metrics[key]:.3f} |")
    lines += ["", noise_sentence(metrics)]
    gap = gap_sentence(metrics)
    if gap:
        lines.append(gap)
    lines.append("")
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
