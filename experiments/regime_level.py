"""Level and power of diagnose's "fine-tuning-limited" verdict, old rule against new.

Population model per cell (A_H, C_H, A_T, n_H, n_T, K): held-out confidences
c = 1/K + (1 − 1/K)·Beta(4m, 4(1 − m)) with mean C_H, outcomes Y ~ Bernoulli(A_H·c/C_H) (mean A_H,
needs A_H ≤ C_H); training accuracy Binomial(n_T, A_T)/n_T. The population floor is
min(C_H − A_H, 2A_T − A_H − C_H)₊ (docs/theory.md §3, with G > 0).

Both verdicts need R0 first (binned ECE > the noise-floor q95; q95 is simulated once per cell on
one confidence draw, 1000 draws, an approximation of the per-sample q95 diagnose computes).
- old: P6 floor > q95 and |G| > 1.96·se(G) and G > 0 and D > 0 (the rule before this change);
- new: `theory.regime.floor_test` rejects (lower 95% bound of the floor > 0), as diagnose does
  with G₀ = 0 (exchangeable item sets). The test alone (without the R0 gate) is also reported.

A few cells with G₀ measured (`G0_CASES`, K = 4): the model before fine-tuning had accuracy
A_H on the held-out items and A_H + G₀ on the training items, each measured independently
(Binomial(n_H, ·)/n_H and Binomial(n_T, ·)/n_T); the test gets r = A_T − Ĝ₀ and the variance of
Ĝ₀ as diagnose computes it (`proportion_var` of each before-accuracy). A_T = (A_H + C_H)/2 + G₀
puts the population floor of the change of the gap exactly at 0.

Writes experiments/results/regime_level.json (about 2 min on one core at 2000 replicates).
Run: PYTHONPATH=src python experiments/regime_level.py [REPS]; `--markdown` prints the tables.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from calibtune.metrics.binning import assign_bins, bin_edges
from calibtune.metrics.uncertainty import ece_noise_floor
from calibtune.theory.regime import floor_test, proportion_var

REPS = int(sys.argv[1]) if sys.argv[1:2] and sys.argv[1].isdigit() else 2000
N_BINS = 10
OUT = Path(__file__).parent / "results" / "regime_level.json"
LEVEL_CASES = [  # population floor exactly 0: on the L2 = 0 boundary, or on D = 0
    (0.45, 0.65, 0.55), (0.45, 0.75, 0.60), (0.60, 0.80, 0.70), (0.30, 0.50, 0.40),
    (0.80, 0.96, 0.88), (0.60, 0.60, 0.80), (0.70, 0.70, 0.95)]
POWER_CASES = [(0.45, 0.65, a_t) for a_t in (0.565, 0.575, 0.60, 0.65)]  # floors .03 .05 .10 .20
N_H, N_T, KS = (100, 300, 1000), (50, 150, 1000), (2, 4)
G0_CASES = [(0.45, 0.65, 0.10), (0.60, 0.80, 0.10)]  # (A_H, C_H, G₀); A_T on the null's edge
G0_CELLS = [(100, 50), (300, 150), (1000, 1000)]     # (n_H, n_T); n_before = n_T, K = 4


def population_floor(a_h: float, c_h: float, a_t: float) -> float:
    return max(min(c_h - a_h, 2 * a_t - a_h - c_h), 0.0) if a_t > a_h else 0.0


def simulate(a_h, c_h, a_t, n_h, n_t, k, rng, g0=None) -> dict:
    m = (c_h - 1 / k) / (1 - 1 / k)
    conf = 1 / k + (1 - 1 / k) * rng.beta(4 * m, 4 * (1 - m), size=(REPS, n_h))
    y = (rng.random((REPS, n_h)) < a_h * conf / c_h).astype(np.float64)
    at = rng.binomial(n_t, a_t, size=REPS) / n_t
    ah, ch = y.mean(1), conf.mean(1)
    # R0: binned ECE of every replicate against one cell-level q95
    idx = assign_bins(conf.ravel(), bin_edges(None, N_BINS, "uniform")).reshape(REPS, n_h)
    flat = (idx + N_BINS * np.arange(REPS)[:, None]).ravel()
    s = np.bincount(flat, weights=(y - conf).ravel(), minlength=N_BINS * REPS)
    ece = np.abs(s.reshape(REPS, N_BINS)).sum(1) / n_h
    q95 = ece_noise_floor(conf[0], N_BINS, n_sim=1000, seed=1).q95
    r0 = ece > q95
    # old rule
    g, tau, d = at - ah, ch - at, ch - ah
    floor = np.maximum(np.abs(g) - np.abs(tau), 0.0)
    qh, qt = (ah * n_h + 1) / (n_h + 2), (at * n_t + 1) / (n_t + 2)
    se_g = np.sqrt(qh * (1 - qh) / n_h + qt * (1 - qt) / n_t)
    old = r0 & (floor > q95) & (np.abs(g) > 1.96 * se_g) & (g > 0) & (d > 0)
    if g0 is None:  # new test: theory.regime.floor_test on every replicate (G₀ = 0)
        test = np.array([floor_test(conf[i], y[i], float(at[i]), n_t).reject
                         for i in range(REPS)])
    else:  # G₀ measured before fine-tuning, independently on both item sets
        at0 = rng.binomial(n_t, a_h + g0, size=REPS) / n_t
        ah0 = rng.binomial(n_h, a_h, size=REPS) / n_h
        test = np.array([floor_test(
            conf[i], y[i], float(at[i]), n_t, baseline=float(at0[i] - ah0[i]),
            baseline_var=proportion_var(float(at0[i]), n_t) + proportion_var(float(ah0[i]), n_h)
        ).reject for i in range(REPS)])
    new = r0 & test

    def rate(x):
        p = float(x.mean())
        return {"rate": p, "mc_se": math.sqrt(max(p * (1 - p), 1 / REPS) / REPS)}
    extra = {} if g0 is None else {"G0": g0}
    return {"A_H": a_h, "C_H": c_h, "A_T": a_t, "n_H": n_h, "n_T": n_t, "K": k, **extra,
            "population_floor": population_floor(a_h, c_h, a_t - (g0 or 0.0)), "q95": q95,
            "old": rate(old), "new": rate(new), "new_test_alone": rate(test)}


def grid(cases, ks) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for a_h, c_h, a_t in cases:
        for k in ks:
            if c_h <= 1 / k + 0.05:
                continue
            for n_h in N_H:
                for n_t in N_T:
                    rows.append(simulate(a_h, c_h, a_t, n_h, n_t, k, rng))
    return rows


def g0_grid() -> list[dict]:
    rng = np.random.default_rng(0)
    return [simulate(a_h, c_h, (a_h + c_h) / 2 + g0, n_h, n_t, 4, rng, g0=g0)
            for a_h, c_h, g0 in G0_CASES for n_h, n_t in G0_CELLS]


def main() -> None:
    level = grid(LEVEL_CASES, KS)
    power = grid(POWER_CASES, (4,))
    level_g0 = g0_grid()
    worst = max(level, key=lambda r: r["new"]["rate"])
    OUT.write_text(json.dumps({"reps": REPS, "n_bins": N_BINS, "level": level, "power": power,
                               "max_new_level": worst, "level_g0_measured": level_g0},
                              indent=1) + "\n")
    for r in level:
        print(f"level A_H {r['A_H']:.2f} C_H {r['C_H']:.2f} A_T {r['A_T']:.3f} K {r['K']} "
              f"n_H {r['n_H']:4d} n_T {r['n_T']:4d}: old {r['old']['rate']:.3f} "
              f"new {r['new']['rate']:.3f} test {r['new_test_alone']['rate']:.3f}", file=sys.stderr)
    for r in power:
        print(f"power floor {r['population_floor']:.3f} n_H {r['n_H']:4d} n_T {r['n_T']:4d}: "
              f"old {r['old']['rate']:.3f} new {r['new']['rate']:.3f}", file=sys.stderr)
    for r in level_g0:
        print(f"G0 {r['G0']:+.2f} A_H {r['A_H']:.2f} C_H {r['C_H']:.2f} A_T {r['A_T']:.2f} "
              f"n_H {r['n_H']:4d} n_T {r['n_T']:4d}: new {r['new']['rate']:.3f} "
              f"test {r['new_test_alone']['rate']:.3f}", file=sys.stderr)



def markdown(path: Path = OUT) -> str:
    """The two tables of docs/theory.md §5 from the saved results."""
    res = json.loads(path.read_text())
    lines = ["| A_H | C_H | A_T | K | max over (n_H, n_T): old rule | new verdict | new test alone "
             "| reviewer's cell (n_H 300, n_T 150) old / new |", "|---|---|---|---|---|---|---|---|"]
    cells: dict = {}
    for r in res["level"]:
        cells.setdefault((r["A_H"], r["C_H"], r["A_T"], r["K"]), []).append(r)
    for (a_h, c_h, a_t, k), rows in cells.items():
        def worst(key):
            w = max(rows, key=lambda r: r[key]["rate"])
            return f"{w[key]['rate']:.3f} ± {w[key]['mc_se']:.3f} ({w['n_H']}, {w['n_T']})"
        mid = next(r for r in rows if (r["n_H"], r["n_T"]) == (300, 150))
        lines.append(f"| {a_h:.2f} | {c_h:.2f} | {a_t:.2f} | {k} | {worst('old')} | {worst('new')} "
                     f"| {worst('new_test_alone')} | {mid['old']['rate']:.3f} / "
                     f"{mid['new']['rate']:.3f} |")
    lines += ["", "| population floor | n_H | n_T 50: old / new | n_T 150: old / new "
              "| n_T 1000: old / new |", "|---|---|---|---|---|"]
    power: dict = {}
    for r in res["power"]:
        power.setdefault((r["population_floor"], r["n_H"]), {})[r["n_T"]] = r
    for (floor, n_h), by_t in power.items():
        lines.append(f"| {floor:.2f} | {n_h} | " + " | ".join(
            f"{by_t[t]['old']['rate']:.2f} / {by_t[t]['new']['rate']:.2f}" for t in N_T) + " |")
    if res.get("level_g0_measured"):
        lines += ["", "| A_H | C_H | G₀ | A_T | n_H | n_T | new verdict | new test alone |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in res["level_g0_measured"]:
            lines.append(f"| {r['A_H']:.2f} | {r['C_H']:.2f} | {r['G0']:+.2f} | {r['A_T']:.2f} "
                         f"| {r['n_H']} | {r['n_T']} | {r['new']['rate']:.3f} ± "
                         f"{r['new']['mc_se']:.3f} | {r['new_test_alone']['rate']:.3f} ± "
                         f"{r['new_test_alone']['mc_se']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        print(markdown())
    else:
        main()
