"""How often do calibtune's ECE intervals cover the *population* calibration error?

    PYTHONPATH=src python experiments/ece_coverage.py   # defaults: --reps 300 --n-boot 1000

That exact command wrote experiments/results/ece_coverage.json and the table in docs/metrics.md.

Synthetic top-label data with a known calibration function f(c) = E[Y | C = c]: confidences
C = 0.25 + 0.75·Beta(2.5, 1.5) (a four-option question, mostly confident), outcomes
Y ~ Bernoulli(f(C)). Models: calibrated f(c) = c; overconfident by a constant 0.05 and 0.10
(f(c) = c − δ); "tilted" f(c) = c − 0.4·(c − 0.55), overconfident above 0.55 and
underconfident below (the gap changes sign inside one bin, so the binned error is a little
below the unbinned one); and "wiggle" f(c) = c + 0.08·sin(40πc), miscalibrated everywhere
but by zero on average over every bin of width 0.1 — what no binned estimate can see.

Population targets, by numerical integration over the density of C:
  ℓ1 error      E|f(C) − C|                     ℓ2 error      √E[(f(C) − C)²]
  binned ℓ1     Σ_b P_b |E[f(C) − C | C ∈ B_b]|  binned ℓ2     √Σ_b P_b (E[f(C) − C | C ∈ B_b])²
with the equal-width bins B_b = [b/M, (b+1)/M) that calibtune uses.

Intervals (95%, n_boot item resamples each, one resample set per replication shared by all):
  plain ECE      percentile bootstrap of the plug-in ECE (metrics.json "ci"/"ece")
  plain RMS-CE   percentile bootstrap of the plug-in RMS-CE
  debiased ℓ2    calibtune.metrics.debiased_ce_interval [low, high]
  ℓ1 bracket     its [ece_low, ece_high] (lower side |d̄| − z_{1−α/4}·se)
Writes experiments/results/ece_coverage.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import beta

from calibtune.metrics.binning import assign_bins, bin_edges
from calibtune.metrics.debiased import interval_from_sums, resampled_sums

A, B = 2.5, 1.5
LOW = 0.25
MODELS = {
    "calibrated": lambda c: c,
    "shift 0.05": lambda c: c - 0.05,
    "shift 0.10": lambda c: c - 0.10,
    "tilted": lambda c: c - 0.4 * (c - 0.55),
    "wiggle": lambda c: np.clip(c + 0.08 * np.sin(40 * np.pi * c), 0.0, 1.0),
}


def draw_conf(rng: np.random.Generator, n: int) -> np.ndarray:
    return LOW + (1 - LOW) * rng.beta(A, B, size=n)


def population_targets(f, n_bins: int, grid: int = 400_001) -> dict:
    """The four population errors of model f (midpoint rule on a fine grid of C)."""
    u = (np.arange(grid) + 0.5) / grid
    c = LOW + (1 - LOW) * u
    w = beta.pdf(u, A, B)
    w /= w.sum()
    gap = f(c) - c
    idx = assign_bins(c, bin_edges(None, n_bins, "uniform"))
    mass = np.bincount(idx, weights=w, minlength=n_bins)
    gsum = np.bincount(idx, weights=w * gap, minlength=n_bins)
    bgap = np.where(mass > 0, gsum / np.where(mass > 0, mass, 1), 0.0)
    return {"l1": float(np.sum(w * np.abs(gap))), "l2": float(np.sqrt(np.sum(w * gap ** 2))),
            "binned_l1": float(np.sum(mass * np.abs(bgap))),
            "binned_l2": float(np.sqrt(np.sum(mass * bgap ** 2)))}


def cell(f, n: int, n_bins: int, reps: int, n_boot: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    t = population_targets(f, n_bins)
    edges = bin_edges(None, n_bins, "uniform")
    hit = {k: np.zeros(reps, bool) for k in
           ("plain_ece_binned_l1", "plain_ece_l1", "plain_rms_binned_l2",
            "debiased_binned_l2", "debiased_l2", "bracket_binned_l1", "bracket_l1",
            "debiased_upper_binned_l2", "plain_ece_upper_binned_l1")}
    est = {k: np.zeros(reps) for k in ("ece", "rms_ce", "debiased", "width_plain",
                                       "width_debiased", "width_bracket", "ece_low",
                                       "ece_high")}
    for r in range(reps):
        conf = draw_conf(rng, n)
        correct = (rng.random(n) < f(conf)).astype(np.float64)
        idx = assign_bins(conf, edges)
        sums = (np.bincount(idx, minlength=n_bins).astype(np.float64),
                np.bincount(idx, weights=correct, minlength=n_bins),
                np.bincount(idx, weights=conf, minlength=n_bins))
        boot = resampled_sums(conf, correct, idx, n_bins, n_boot, rng)
        ece_b = np.abs(boot[1] - boot[2]).sum(axis=1) / n
        rms_b = np.sqrt(np.sum(np.where(boot[0] > 0, (boot[1] - boot[2]) ** 2
                                        / np.maximum(boot[0], 1), 0), axis=1) / n)
        e_lo, e_hi = np.quantile(ece_b, [0.025, 0.975])
        r_lo, r_hi = np.quantile(rms_b, [0.025, 0.975])
        d = interval_from_sums(sums, boot, conf, correct, 0.05)
        est["ece"][r] = np.abs(sums[1] - sums[2]).sum() / n
        est["rms_ce"][r] = np.sqrt(np.sum(np.where(sums[0] > 0, (sums[1] - sums[2]) ** 2
                                                   / np.maximum(sums[0], 1), 0)) / n)
        est["debiased"][r] = d.estimate
        est["width_plain"][r] = e_hi - e_lo
        est["width_debiased"][r] = d.high - d.low
        est["width_bracket"][r] = d.ece_high - d.ece_low
        est["ece_low"][r], est["ece_high"][r] = d.ece_low, d.ece_high
        hit["plain_ece_binned_l1"][r] = e_lo <= t["binned_l1"] <= e_hi
        hit["plain_ece_upper_binned_l1"][r] = t["binned_l1"] <= e_hi
        hit["plain_ece_l1"][r] = e_lo <= t["l1"] <= e_hi
        hit["plain_rms_binned_l2"][r] = r_lo <= t["binned_l2"] <= r_hi
        hit["debiased_binned_l2"][r] = d.low <= t["binned_l2"] <= d.high
        hit["debiased_upper_binned_l2"][r] = t["binned_l2"] <= d.high
        hit["debiased_l2"][r] = d.low <= t["l2"] <= d.high
        hit["bracket_binned_l1"][r] = d.ece_low <= t["binned_l1"] <= d.ece_high
        hit["bracket_l1"][r] = d.ece_low <= t["l1"] <= d.ece_high
    return {"n": n, "n_bins": n_bins, "targets": t,
            "coverage": {k: float(v.mean()) for k, v in hit.items()},
            "mean": {k: float(v.mean()) for k, v in est.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--ns", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--bins", type=int, nargs="+", default=[10, 15])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/ece_coverage.json"))
    args = parser.parse_args()
    t0 = time.time()
    rows = []
    for i, (name, f) in enumerate(MODELS.items()):
        for n_bins in args.bins:
            for n in args.ns:
                row = {"model": name, **cell(f, n, n_bins, args.reps, args.n_boot,
                                             seed=1000 * i + 10 * n_bins + n)}
                rows.append(row)
                c, t = row["coverage"], row["targets"]
                print(f"| {name} | {n} | {n_bins} | {t['binned_l1']:.3f} | "
                      f"{c['plain_ece_binned_l1']:.2f} | {c['plain_rms_binned_l2']:.2f} | "
                      f"{c['debiased_binned_l2']:.2f} | {c['bracket_binned_l1']:.2f} | "
                      f"{c['bracket_l1']:.2f} | {row['mean']['ece']:.3f} | "
                      f"{row['mean']['debiased']:.3f} |", flush=True)
    mc = float(np.sqrt(0.95 * 0.05 / args.reps))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["experiments/ece_coverage.py", *sys.argv[1:]])
    args.out.write_text(json.dumps({"command": command, "reps": args.reps,
                                    "n_boot": args.n_boot, "alpha": 0.05,
                                    "monte_carlo_se_at_0.95": mc,
                                    "confidence": f"0.25 + 0.75 Beta({A}, {B})",
                                    "seconds": round(time.time() - t0, 1), "rows": rows},
                                   indent=1) + "\n")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s; Monte Carlo se of a 0.95 coverage "
          f"{mc:.3f})")


if __name__ == "__main__":
    main()
