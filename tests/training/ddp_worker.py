"""Run by test_distributed.py under torchrun with 2 CPU processes (gloo)."""
import json
import os
import sys

import numpy as np

from calibtune.training import estep as estep_module
from calibtune.workflows.config import TrainRunConfig
from calibtune.workflows.train import run_training

model, data, out = sys.argv[1:4]
rank = int(os.environ.get("RANK", "0"))
record = []
original = estep_module.RegulariserState.update


def recording_update(self, result, step, epoch, extra=None):
    record.append({"step": step, "counts": result.table.count.tolist(),
                   "accuracy": np.nan_to_num(result.table.accuracy, nan=-1).tolist(),
                   "targets_sum": float(result.targets.sum()),
                   "targets_hash": float((result.targets * np.arange(1, result.targets.size + 1)
                                          .reshape(result.targets.shape)).sum())})
    return original(self, result, step, epoch, extra)


estep_module.RegulariserState.update = recording_update
cfg = TrainRunConfig(model=model, data=f"{data}/train.jsonl", split=None,
                  eval_data=f"{data}/eval.jsonl", eval_split=None, eval_limit=None,
                  method="rcft", max_steps=4, estep_every_steps=2, batch_size=2, lora_r=4,
                  lora_alpha=8, learning_rate=5e-3, save_steps=100, eval_before=False, out=out,
                  max_step_tokens=40)  # ignored on 2 processes, with one warning
run_training(cfg)
with open(f"{out}/estep_rank{rank}.json", "w") as f:
    json.dump({"world": int(os.environ.get("WORLD_SIZE", "1")), "record": record}, f)
