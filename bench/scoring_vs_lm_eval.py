"""Benchmark 1: letter scoring, calibtune vs lm-evaluation-harness 0.4.13, in one run.

Same model (the embedded SmolLM2-135M-Instruct, converted to a local folder), the same MMLU
items, the same prompt (calibtune's plain template, letter continuation " A"…" D"), CPU, fp32,
batch 16. Each tool runs in its own process; we report the scoring phase and the whole process
(items/s), peak RSS, the ratios, and the agreement of predictions and renormalised option
log-probabilities. With `--scoring cloze`, the same comparison for option-text
log-likelihoods (lm-eval's usual multiple-choice mode), raw sums compared too.
Usage: python bench/scoring_vs_lm_eval.py [--items 200] [--scoring letter|cloze]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from common import run_child, save, table

# lm-eval in a child process, its scoring phase (HFLM.loglikelihood) timed; bench/fewshot.py too
LM_EVAL_TIMED = r"""
import json, sys, time
from lm_eval import evaluator
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
spent = {"s": 0.0}
real = HFLM.loglikelihood
def timed(self, *a, **k):
    t = time.perf_counter(); out = real(self, *a, **k); spent["s"] += time.perf_counter() - t
    return out
HFLM.loglikelihood = timed
"""

LM_EVAL = LM_EVAL_TIMED + r"""
folder, task_dir = sys.argv[1:3]
res = evaluator.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32",
    tasks=["calibtune_bench"], task_manager=TaskManager(include_path=task_dir), batch_size=16,
    device="cpu", bootstrap_iters=0, log_samples=True)
samples = sorted(res["samples"]["calibtune_bench"], key=lambda s: s["doc_id"])
lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
print(json.dumps({"scoring_s": spent["s"], "lls": lls}))
"""

CALIBTUNE = r"""
import json, sys, time
import calibtune.workflows.eval as ev
spent = {"s": 0.0}
real = ev.score_resumable
def timed(*a, **k):
    t = time.perf_counter(); out = real(*a, **k); spent["s"] += time.perf_counter() - t
    return out
ev.score_resumable = timed
from calibtune.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps({"scoring_s": spent["s"]}))
"""

def main() -> None:
    from calibtune.data import load_dataset, sample_items
    from calibtune.models import builtin_model_folder
    from lm_eval_task import write_lm_eval_task
    from calibtune.scores import OptionScores

    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scoring", choices=["letter", "cloze"], default="letter")
    args = ap.parse_args()
    cloze = args.scoring == "cloze"
    folder = builtin_model_folder("smollm2-135m-instruct")
    items = sample_items(load_dataset("mmlu", "test").items, args.items, args.seed)
    work = Path(tempfile.mkdtemp(prefix="calibtune-bench-"))
    (work / "items.jsonl").write_text("".join(json.dumps(
        {"id": it.id, "question": it.question, "options": list(it.options), "answer": it.answer})
        + "\n" for it in items))
    write_lm_eval_task(items, work / "task", "calibtune_bench", args.scoring)

    ours = run_child(CALIBTUNE, "eval", "--model", str(folder), "--data",
                     str(work / "items.jsonl"), "--batch-size", "16", "--n-boot", "0",
                     "--scoring", args.scoring,
                     "--out", str(work / "calibtune"))
    theirs = run_child(LM_EVAL, str(folder), str(work / "task"))

    def log_softmax(z):
        z = np.asarray(z, float)
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    ours_raw = OptionScores.load(work / "calibtune" / "scores.npz").logits
    theirs_raw = np.asarray(theirs.pop("lls"))
    ours_lp, theirs_lp = log_softmax(ours_raw), log_softmax(theirs_raw)
    n = len(items)
    result = {
        "items": n, "model": "smollm2-135m-instruct (fp32, CPU)", "batch_size": 16,
        "scoring": args.scoring,
        "calibtune": {"scoring_s": ours["scoring_s"], "wall_s": ours["wall_s"],
                      "peak_rss_mb": ours["peak_rss_mb"]},
        "lm_eval": {"scoring_s": theirs["scoring_s"], "wall_s": theirs["wall_s"],
                    "peak_rss_mb": theirs["peak_rss_mb"]},
        "agreement": {"same_prediction": float((ours_lp.argmax(1) == theirs_lp.argmax(1)).mean()),
                      "max_abs_logprob_diff": float(np.abs(ours_lp - theirs_lp).max()),
                      "max_abs_raw_diff": (float(np.abs(ours_raw - theirs_raw).max()) if cloze
                                           else None)},
    }
    for side in ("calibtune", "lm_eval"):
        r = result[side]
        r["scoring_items_per_s"] = n / r["scoring_s"]
        r["end_to_end_items_per_s"] = n / r["wall_s"]
    c, lm = result["calibtune"], result["lm_eval"]
    result["ratios"] = {"scoring_speedup": c["scoring_items_per_s"] / lm["scoring_items_per_s"],
                        "end_to_end_speedup": c["end_to_end_items_per_s"] / lm["end_to_end_items_per_s"],
                        "peak_memory_ratio": c["peak_rss_mb"] / lm["peak_rss_mb"]}
    print(table([[side, r["scoring_s"], r["scoring_items_per_s"], r["wall_s"],
                  r["end_to_end_items_per_s"], r["peak_rss_mb"]] for side, r in
                 (("calibtune", c), ("lm-eval", lm))],
                ["tool", "scoring s", "items/s", "process s", "items/s (e2e)", "peak RSS MB"]))
    print(json.dumps(result["ratios"]), json.dumps(result["agreement"]))
    print("wrote", save("scoring_vs_lm_eval" + ("_cloze" if cloze else ""), result))


if __name__ == "__main__":
    main()
