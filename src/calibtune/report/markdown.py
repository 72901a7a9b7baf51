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
    lines += debiased_rows(metrics)
    lines += ["", noise_sentence(metrics)]
    gap = gap_sentence(metrics)
    if gap:
        lines.append(gap)
    lines.append("")
    lines += [f"![{f}]({f})" for f in figures]
    if metrics.get("ci"):
        lines += ["", BOOTSTRAP_FOOTNOTE]
    return "\n".join(lines) + "\n"


BOOTSTRAP_FOOTNOTE = (
    "Intervals: the bracketed ECE and cw-ECE intervals are 95% percentile bootstrap intervals: "
    "interval of the binned estimator at this n, not of the true calibration error (it sits "
    "above zero even for a perfectly calibrated model). The debiased rows are not percentile "
    "intervals and are for the population binned error itself: RMS-CE √max(0, Ŝ ± 1.96·sd), sd "
    "the standard deviation of the debiased squared error Ŝ over item resamples; the ECE bracket "
    "from two bounds that may each miss with probability 2.5%, so it covers with at least 95% "
    "(docs/metrics.md).")


def debiased_rows(metrics: dict) -> list[str]:
    """Rows for the debiased ℓ2 error and, when intervals were computed, the ℓ1 ECE bracket."""
    if metrics.get("rms_ce_debiased") is None:
        return []
    d = metrics.get("rms_ce_debiased_ci")
    if not d:
        return [f"| RMS-CE, debiased | {metrics['rms_ce_debiased']:.3f} |"]
    return [f"| RMS-CE, debiased (95% interval for the population binned error) | "
            f"{d['estimate']:.3f} [{d['low']:.3f}, {d['high']:.3f}] |",
            f"| ECE, population binned error: 95% bracket | [{d['ece_low']:.3f}, "
            f"{d['ece_high']:.3f}] |"]
