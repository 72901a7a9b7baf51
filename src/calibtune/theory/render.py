"""A diagnosis as markdown: the table of measured numbers, the bound checks, the rules applied."""
from __future__ import annotations

import math
from typing import Any

from ..metrics.collapse import letter
from .statistics import INTERVAL_KIND


def fmt(x, digits: int = 3, sign: bool = False) -> str:
    """x to `digits` decimals (signed with `sign`); n/a for None or NaN, ±inf spelled out."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a" if x is None or math.isnan(x) else ("+inf" if x > 0 else "−inf")
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def diagnosis_markdown(d: Any) -> str:
    """The diagnosis.md a run folder gets: recommendation first, then every number behind it.

    `d` is a `theory.diagnosis.Diagnosis` (not imported: that module imports this one)."""
    f = fmt
    lines = [
        f"## Calibration diagnosis (n = {d.n}, K ≤ {d.n_options}, M = {d.n_bins} bins)",
        "",
        f"**Recommendation: {d.recommendation}**"
        + (" (accuracy-keeping alternative: temperature scaling fitted on a held-out split)"
           if d.recommendation == "rcft" else "")
        + f" — regime: {d.regime}; gap: {d.gap_kind}.",
        "",
        "| quantity | value | 95% interval (bootstrap, see below) |",
        "|---|---|---|",
        f"| accuracy | {f(d.accuracy.estimate)} | [{f(d.accuracy.low)}, "
        f"{f(d.accuracy.high)}] |",
        f"| mean confidence | {f(d.mean_confidence)} | |",
        f"| mean gap (conf − acc) | {f(d.mean_gap, sign=True)} (z = {f(d.mean_gap_z, 2)}, "
        f"{d.direction}) | |",
        f"| ECE | {f(d.ece.estimate)} | [{f(d.ece.low)}, {f(d.ece.high)}] |",
        f"| cw-ECE | {f(d.cw_ece.estimate)} | [{f(d.cw_ece.low)}, {f(d.cw_ece.high)}] |",
        f"| ECE over / under part | {f(d.over)} / {f(d.under)} | |",
        f"| noise floor (calibrated model) | mean {f(d.noise.mean)}, q95 {f(d.noise.q95)} "
        "| |",
        "",
        f"Intervals: {INTERVAL_KIND}.",
        "",
        "| bound (calibtune's, docs/theory.md) | value | vs | holds |",
        "|---|---|---|---|",
    ]
    for b in d.bounds:
        rel = "≤" if b.kind == "lower" else "≥"
        statement = b.statement.replace("|", "\\|")
        lines.append(f"| {b.name}: {statement} | {f(b.value)} | {rel} {b.against} "
                     f"{f(b.against_value)} | {'yes' if b.holds else 'NO'} |")
    c = d.collapse
    lines += ["", f"Collapse: {f(c.top_pred_share)} of predictions on option "
                  f"{letter(c.top_option)} (gold share {f(c.top_gold_share)}, excess "
                  f"{f(c.excess, sign=True)}, McNemar p = {f(c.p_value, 4)}); prediction "
                  f"entropy {f(c.pred_entropy)} vs gold {f(c.gold_entropy)} (normalised).",
              "", "Rules applied:"]
    lines += [f"- {r}" for r in d.rules]
    if d.flags:
        lines += ["", "Flags:"] + [f"- {x}" for x in d.flags]
    return "\n".join(lines) + "\n"
