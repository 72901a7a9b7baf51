"""lm-eval's saved outputs imported vs calibtune's own scores, on the embedded model.

    python experiments/lm_eval_import.py --data socialiqa --limit 100

Writes an lm-eval task of the items (calibtune's cloze context and option texts), runs
lm-evaluation-harness 0.4.13 with --log_samples on SmolLM2-135M-Instruct, imports the samples
with `calibtune eval --from lm-eval`'s reader, scores the same items with calibtune's cloze
scorer, and compares log-likelihoods, predictions and the metrics both ways.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from lm_eval_task import write_lm_eval_task  # noqa: E402

import calibtune as ct  # noqa: E402
from calibtune.models.builtin import builtin_model_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="socialiqa")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/lm_eval_import.json"))
    args = parser.parse_args()
    items = list(ct.load_dataset(args.data, split="test", limit=args.limit))
    folder = builtin_model_folder("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_lm_eval_task(items, tmp / "tasks", "ct_import", "cloze")
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                   HF_DATASETS_CACHE=str(tmp / "hf-datasets"))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", "hf",
                               "--model_args", f"pretrained={folder},dtype=float32",
                               "--tasks", "ct_import", "--include_path", str(tmp / "tasks"),
                               "--device", "cpu", "--batch_size", "8", "--output_path",
                               str(tmp / "out"), "--log_samples"], env=env, capture_output=True,
                              text=True)
        lm_seconds = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        theirs = ct.load_lm_eval_samples(tmp / "out")
    start = time.perf_counter()
    ours = ct.score(ct.load_model("smollm2-135m-instruct"), items, scoring="cloze")
    ct_seconds = time.perf_counter() - start
    order = np.argsort([int(i.split("/")[1]) for i in theirs.ids])  # lm-eval doc_id = item order
    t_logits = theirs.logits[order]
    diff = np.abs(np.where(ours.mask, t_logits - ours.logits, 0.0)).max()
    same_pred = bool((np.where(ours.mask, t_logits, -np.inf).argmax(1)
                      == np.where(ours.mask, ours.logits, -np.inf).argmax(1)).all())
    keys = ("accuracy", "mean_confidence", "ece", "cw_ece", "brier", "nll")
    m_theirs = ct.evaluate(ct.OptionScores(t_logits, theirs.labels[order], theirs.mask[order],
                                           ours.ids), n_boot=0)
    m_ours = ct.evaluate(ours, n_boot=0)
    result = {"data": args.data, "n": len(items), "max_abs_loglik_diff": float(diff),
              "identical_predictions": same_pred,
              "metrics_lm_eval_import": {k: m_theirs[k] for k in keys},
              "metrics_calibtune": {k: m_ours[k] for k in keys},
              "max_abs_metric_diff": max(abs(m_theirs[k] - m_ours[k]) for k in keys),
              "lm_eval_version": theirs.meta.get("lm_eval_version"),
              "seconds": {"lm_eval_run": round(lm_seconds, 1), "calibtune_score": round(ct_seconds, 1)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
