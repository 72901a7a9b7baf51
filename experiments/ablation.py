"""The paper's ablation read from finished `calibtune train` runs: does L_ECE alone drive accuracy
toward chance, where L_SFT + L_ECE (RCFT) and L_SFT alone (CFT) do not?

    python experiments/ablation.py runs/socialiqa-cloze-ece-only-5ep runs/socialiqa-cloze-rcft-5ep \
        runs/socialiqa-cloze-cft-5ep [--out experiments/results/ablation.json]

Every run must score the same held-out items. The untouched model is each run's `eval_before`
(the adapter disabled); accuracy changes are paired on items, with a 95% bootstrap interval.
Also prints the held-out accuracy after every epoch and the training set's accuracy at every
E-step (RCFT runs), so the trajectory shows, not only the end point.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from calibtune.metrics import accuracy, ece
from calibtune.scores import OptionScores


def correct(scores: OptionScores) -> np.ndarray:
    return (scores.probs().argmax(1) == scores.labels).astype(float)


def paired_difference(after: np.ndarray, before: np.ndarray, n_boot: int = 2000,
                      seed: int = 0) -> dict:
    """Mean of after − before (per-item 0/1 correctness) with a 95% bootstrap interval."""
    diff = after - before
    rng = np.random.default_rng(seed)
    boots = rng.choice(diff, size=(n_boot, diff.size)).mean(1)
    return {"estimate": float(diff.mean()), "low": float(np.quantile(boots, 0.025)),
            "high": float(np.quantile(boots, 0.975))}


def estep_accuracies(run: Path) -> list[tuple[int, float]]:
    path = run / "estep_history.json"
    if not path.exists():
        return []
    out = []
    for entry in json.loads(path.read_text()):
        count = np.array(entry["bins"]["count"], float)
        acc = np.nan_to_num(np.array(entry["bins"]["accuracy"], float))
        out.append((entry["step"], float((count * acc).sum() / count.sum())))
    return out


def summarise(run: Path, base: OptionScores) -> dict:
    scores = OptionScores.load(run / "eval" / "scores.npz")
    if not np.array_equal(scores.ids, base.ids):
        raise SystemExit(f"{run}: scored other items than the first run")
    probs = scores.probs()
    log = json.loads((run / "train_log.json").read_text())
    config = json.loads((run / "summary.json").read_text())
    return {"run": run.name, "method": config["method"], "steps": config["steps"],
            "accuracy": accuracy(probs, scores.labels, scores.mask),
            "mean_confidence": float(probs.max(1).mean()),
            "ece": ece(probs, scores.labels, mask=scores.mask),
            "delta_accuracy": paired_difference(correct(scores), correct(base)),
            "changed_predictions": float((probs.argmax(1) != base.probs().argmax(1)).mean()),
            "heldout_by_epoch": [(e["epoch"], e["heldout_accuracy"], e["heldout_ece"])
                                 for e in log if "heldout_accuracy" in e],
            "train_accuracy_by_estep": estep_accuracies(run)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ablation.json")
    args = ap.parse_args()
    base = OptionScores.load(args.runs[0] / "eval_before" / "scores.npz")
    chance = float(np.mean(1.0 / base.mask.sum(1)))
    probs = base.probs()
    rows = [summarise(run, base) for run in args.runs]
    result = {"n_items": len(base), "chance": chance,
              "untouched": {"accuracy": accuracy(probs, base.labels, base.mask),
                            "mean_confidence": float(probs.max(1).mean()),
                            "ece": ece(probs, base.labels, mask=base.mask)},
              "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    u = result["untouched"]
    print(f"{len(base)} held-out items, chance {chance:.3f}\n")
    print("| model | accuracy | Δ accuracy vs untouched [95% CI] | predictions changed | "
          "mean conf. | ECE |")
    print("|---|---|---|---|---|---|")
    print(f"| untouched | {u['accuracy']:.3f} | | | {u['mean_confidence']:.3f} | {u['ece']:.3f} |")
    for r in rows:
        d = r["delta_accuracy"]
        print(f"| {r['run']} | {r['accuracy']:.3f} | {d['estimate']:+.3f} [{d['low']:+.3f}, "
              f"{d['high']:+.3f}] | {r['changed_predictions']:.2f} | {r['mean_confidence']:.3f} "
              f"| {r['ece']:.3f} |")
    for r in rows:
        epochs = ", ".join(f"{a:.3f}" for _, a, _ in r["heldout_by_epoch"])
        esteps = ", ".join(f"{a:.3f}" for _, a in r["train_accuracy_by_estep"])
        print(f"\n{r['run']}: held-out accuracy by epoch {epochs}"
              + (f"; training accuracy at each E-step {esteps}" if esteps else ""))


if __name__ == "__main__":
    main()
