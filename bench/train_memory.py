"""Benchmark: peak resident memory of a whole `calibtune train` run, phase by phase.

One child process runs `run_training` (the workflow behind `calibtune train --config …`) with
the phases marked: model load, the E-step (rcft), the training steps, checkpoints, the
epoch-end check, saving the adapter, the held-out evaluations before and after. Each phase's
peak is exact, not sampled: Linux resets a process's high-water mark (VmHWM) when "5" is written
to /proc/self/clear_refs, so the mark is reset as a phase starts and read as it ends (a phase
that runs several times reports its highest). The whole run's peak is the highest phase peak
(the reset also resets what ru_maxrss reports, so that cannot serve).

Usage: python bench/train_memory.py [--config configs/cpu-demo.yaml] [--method cft]
       [--train-limit 64] [--eval-limit 64] [--epochs 1] [--save-steps 4]
       [--max-step-tokens N (0: whole batches; default: the config's)] [--name NAME]
"""
from __future__ import annotations

import argparse
import json

from common import PHASES, run_child, save, table

CHILD = PHASES + r"""
watchdog()
config_path, method, train_limit, eval_limit, epochs, save_steps, step_tokens = sys.argv[1:8]
with phases("import"):
    from calibtune.config import build_config
    from calibtune.training import estep, monitor, trainer
    from calibtune.workflows import train as train_workflow
    from calibtune.workflows.config import TrainRunConfig

marked(train_workflow, "load_model", "load model")
marked(trainer.CalibTrainer, "train", "training steps")
steps = []  # (padded tokens, real tokens, peak MB) of every forward+backward
original_step = trainer.CalibTrainer.training_step


def recorded_step(self, model, inputs, *args, **kwargs):
    with phases("forward+backward"):
        open("/proc/self/clear_refs", "w").write("5")
        loss = original_step(self, model, inputs, *args, **kwargs)
        peak = rss_mb("VmHWM")
    steps.append([int(inputs["input_ids"].numel()), int(inputs["attention_mask"].sum()), peak])
    return loss


trainer.CalibTrainer.training_step = recorded_step
marked(trainer.CalibTrainer, "_save_checkpoint", "checkpoint")
marked(estep.EStepCallback, "run_estep", "E-step")
marked(monitor.EpochEvalCallback, "on_epoch_end", "epoch-end check")
marked(train_workflow, "save_adapter", "save adapter")
marked(train_workflow, "evaluate_items",
       lambda a, k: "evaluation before" if "before" in a[5] else "evaluation after")
out = tempfile.mkdtemp(prefix="train-memory-")
cfg = build_config(TrainRunConfig, config_path, {
    "method": method, "train_limit": int(train_limit), "eval_limit": int(eval_limit),
    "epochs": float(epochs), "save_steps": int(save_steps), "out": out,
    **({"max_step_tokens": int(step_tokens) or None} if step_tokens != "config" else {})})
start = time.perf_counter()
result = train_workflow.run_training(cfg)
wall = time.perf_counter() - start
order = list(phases.peak)
print(json.dumps({"phases": [{"phase": p, "peak_mb": phases.peak[p], "calls": phases.count[p],
                              "seconds": phases.seconds[p], "end_rss_mb": phases.end_rss[p],
                              "end_malloc_free_mb": phases.end_free[p]} for p in order],
                  "steps": steps, "run_s": wall, "ece_after": result.metrics_after.get("ece"),
                  "accuracy_after": result.metrics_after.get("accuracy")}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/cpu-demo.yaml")
    ap.add_argument("--method", default="cft")
    ap.add_argument("--train-limit", type=int, default=64)
    ap.add_argument("--eval-limit", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--save-steps", type=int, default=4)
    ap.add_argument("--max-step-tokens", default="config",
                    help="Override the config's max_step_tokens (0: the whole batch).")
    ap.add_argument("--name", default="train_memory")
    args = ap.parse_args()
    result = run_child(CHILD, args.config, args.method, str(args.train_limit),
                       str(args.eval_limit), str(args.epochs), str(args.save_steps),
                       str(args.max_step_tokens), quiet=False)
    rows = [[p["phase"], p["calls"], p["seconds"], p["peak_mb"] / 1024, p["end_rss_mb"] / 1024,
             p["end_malloc_free_mb"] / 1024] for p in result["phases"]]
    peak = max(p["peak_mb"] for p in result["phases"])
    rows.append(["whole run (highest phase peak)", 1, result["wall_s"], peak / 1024, "", ""])
    print(table(rows, ["phase", "calls", "seconds", "peak RSS GiB", "RSS at end GiB",
                       "malloc free at end GiB"]))
    steps = sorted(result["steps"])
    print(table([[padded, real, peak / 1024] for padded, real, peak in steps],
                ["padded tokens", "real tokens", "forward+backward peak RSS GiB"]))
    summary = {"args": vars(args), **result, "peak_mb": peak}
    print(json.dumps({k: v for k, v in summary.items() if k not in ("phases", "steps")}))
    print("wrote", save(args.name, summary))


if __name__ == "__main__":
    main()
