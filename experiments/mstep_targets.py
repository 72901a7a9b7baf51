"""RCFT with live vs frozen M-step targets, read from two finished `calibtune train` runs.

    python experiments/mstep_targets.py runs/rcft-live runs/rcft-frozen

Both runs must score the same held-out items. Prints a Markdown table (accuracy, mean
confidence, ECE, cw-ECE with 95% bootstrap intervals; the untouched model from `eval_before`),
the paired difference live − frozen (items resampled jointly; McNemar on correctness), the
held-out trajectory per epoch and the training accuracy at each E-step, and writes JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from calibtune.metrics.paired import compare_scores
from calibtune.scores import OptionScores


def ci(m: dict, key: str) -> str:
    c = m["ci"][key]
    return f"{c['estimate']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"


def run_summary(run: Path) -> dict:
    log = json.loads((run / "train_log.json").read_text())
    history = json.loads((run / "estep_history.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    return {"run": str(run), "eval": json.loads((run / "eval" / "metrics.json").read_text()),
            "before": json.loads((run / "eval_before" / "metrics.json").read_text()),
            "epochs": [(e["epoch"], e["heldout_accuracy"], e["heldout_ece"]) for e in log
                       if "heldout_accuracy" in e],
            "estep_train_accuracy": [h.get("train_accuracy") for h in history],
            "train_seconds": summary.get("train_seconds"),
            "estep_seconds": summary.get("estep_seconds")}


def known(seconds: float | None) -> float | str:
    """A run's seconds as recorded; "unknown" where the run folder recorded none (null)."""
    return "unknown" if seconds is None else seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("live", type=Path)
    parser.add_argument("frozen", type=Path)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/mstep_targets.json"))
    args = parser.parse_args()
    live, frozen = run_summary(args.live), run_summary(args.frozen)
    paired = compare_scores(OptionScores.load(args.frozen / "eval" / "scores.npz"),
                            OptionScores.load(args.live / "eval" / "scores.npz"),
                            n_boot=2000).to_dict()
    print("| model | accuracy | mean conf. | ECE | cw-ECE |\n|---|---|---|---|---|")
    m = live["before"]
    print(f"| untouched | {ci(m, 'accuracy')} | {m['mean_confidence']:.3f} | {ci(m, 'ece')} | "
          f"{ci(m, 'cw_ece')} |")
    for name, r in (("RCFT, live targets (default)", live), ("RCFT, frozen targets", frozen)):
        m = r["eval"]
        print(f"| {name} | {ci(m, 'accuracy')} | {m['mean_confidence']:.3f} | {ci(m, 'ece')} | "
              f"{ci(m, 'cw_ece')} |")
    d = paired["deltas"]
    print("\nlive − frozen (paired, 95%): " + ", ".join(
        f"Δ{k} {d[k]['estimate']:+.3f} [{d[k]['low']:+.3f}, {d[k]['high']:+.3f}]"
        for k in ("accuracy", "ece", "cw_ece", "brier", "nll"))
        + f"; predictions changed {paired['changed_predictions']:.0%}; McNemar p "
          f"{paired['mcnemar']['p_value']:.3g}")
    for name, r in (("live", live), ("frozen", frozen)):
        print(f"{name}: held-out accuracy/ECE per epoch "
              + ", ".join(f"{a:.3f}/{e:.3f}" for _, a, e in r["epochs"])
              + "; training accuracy at each E-step "
              + ", ".join(f"{a:.3f}" for a in r["estep_train_accuracy"] if a is not None)
              + f"; training {known(r['train_seconds'])} s (E-steps {known(r['estep_seconds'])} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"live": live, "frozen": frozen, "paired_live_minus_frozen":
                                    paired}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
