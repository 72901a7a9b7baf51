"""Zero-shot calibration of one model under each prompt style, read from `calibtune eval` runs.

    for s in plain reference chat; do
      calibtune eval --model smollm2-135m-instruct --data mmlu --split test --limit 500 \\
        --prompt $s --out runs/prompt-$s
    done
    python experiments/prompt_styles.py runs/prompt-plain runs/prompt-reference runs/prompt-chat

Prints a Markdown table (accuracy, mean confidence, ECE, cw-ECE with 95% bootstrap intervals, the
noise floor's 95th percentile and the most frequent predicted letter) and writes it as JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from calibtune.scores import OptionScores


def row(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    scores = OptionScores.load(run / "scores.npz")
    pred = scores.probs().argmax(1)
    top = np.bincount(pred, minlength=scores.logits.shape[1])
    return {"run": str(run), "prompt": json.loads(json.dumps(scores.meta)).get("prompt"),
            "n": m["n"], "accuracy": m["ci"]["accuracy"], "mean_confidence": m["mean_confidence"],
            "ece": m["ci"]["ece"], "cw_ece": m["ci"]["cw_ece"],
            "noise_floor_q95": m["ece_noise_floor"]["q95"],
            "top_letter": "ABCDEFGHIJ"[int(top.argmax())], "top_letter_share": float(top.max() / len(pred))}


def fmt(ci: dict) -> str:
    return f"{ci['estimate']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/prompt_styles.json"))
    args = parser.parse_args()
    rows = [row(r) for r in args.runs]
    print("| prompt | n | accuracy | mean conf. | ECE | cw-ECE | noise floor (q95) | most predicted |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['prompt']} | {r['n']} | {fmt(r['accuracy'])} | {r['mean_confidence']:.3f} | "
              f"{fmt(r['ece'])} | {fmt(r['cw_ece'])} | {r['noise_floor_q95']:.3f} | "
              f"{r['top_letter']} ({r['top_letter_share']:.0%}) |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
