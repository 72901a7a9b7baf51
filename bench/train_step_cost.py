"""Benchmark 2: cost of one training step — sft, cft, rcft, and the reference code's RCFT step.

`rcft` uses the paper's full-sequence SFT term, so compare it with `sft` for the cost of the
regulariser; `rcft_completion` (RCFT on the completion-only loss) compares with `cft`.

Equal batch (8 MMLU train items) on the embedded SmolLM2-135M-Instruct with LoRA r 16, CPU.
Each method runs in its own process (peak RSS is per process). The "reference" step is a
reimplementation of the reference code's step: two forward passes, full-vocabulary logits at every
position, letter logits read at a fixed position. Also: E-step time against an epoch.
Usage: python bench/train_step_cost.py [--steps 5]
"""
from __future__ import annotations

import argparse
import json

from common import run_child, save, table

CHILD = r"""
import json, sys, time
import torch
from calibtune.data import load_dataset, sample_items
from calibtune.models import load_model
from calibtune.scoring.prompts import PromptEncoder
from calibtune.scoring import LetterScorer
from calibtune.training.config import TrainConfig
from calibtune.training.dataset import MCQCollator, MCQTrainDataset
from calibtune.training.estep import RegulariserState
from calibtune.models.lora import wrap_lora
from calibtune.training.objective import loss_terms, total_loss
from calibtune.training.targets import estep_targets
import numpy as np
method, steps, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model, tok = load_model("smollm2-135m-instruct", device="cpu")
kind = {"reference": "rcft", "rcft_completion": "rcft"}.get(method, method)
sft_loss = "completion" if method == "rcft_completion" else None
cfg = TrainConfig(method=kind, sft_loss=sft_loss, lora_r=16, lora_alpha=32)
model = wrap_lora(model, cfg).train()
items = sample_items(load_dataset("mmlu", "train").items, 64, 0)
enc = PromptEncoder(tok, "plain", 4)
ds = MCQTrainDataset(items, enc, 384)
batch = MCQCollator(tok, ds.letter_ids)([ds[i] for i in range(bs)])
state = RegulariserState()
model.eval()
logits = np.zeros((len(items), 4))
t = time.perf_counter()
for b, v in LetterScorer(model, tok, progress=False).iter_batches(items):
    logits[b] = v
estep_s = time.perf_counter() - t
model.train()
res = estep_targets(logits, np.array([it.answer for it in items]), np.ones((len(items), 4), bool))
state.update(res, 0, 0)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
letters = torch.tensor(ds.letter_ids)
def reference_step():
    # the reference code: a forward for the SFT loss, a second for the regulariser, full logits
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                labels=batch["lm_labels"])
    out2 = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    rows = torch.arange(bs)
    opt_logits = out2.logits[rows, batch["answer_pos"]][:, letters]
    p = torch.softmax(opt_logits, -1)
    q = state.targets[batch["item_index"]]
    return out.loss + ((p - q) ** 2).sum(-1).mean()
def our_step():
    return total_loss(loss_terms(model, batch, cfg), batch, cfg, state)[0]
step = reference_step if method == "reference" else our_step
times = []
for i in range(steps + 1):
    t = time.perf_counter()
    loss = step(); loss.backward(); opt.step(); opt.zero_grad()
    times.append(time.perf_counter() - t)
tokens = int(batch["attention_mask"].sum())
epoch_s = float(np.median(times[1:])) * len(items) / bs
print(json.dumps({"step_s": float(np.median(times[1:])), "tokens_per_step": tokens,
                  "estep_s_64_items": estep_s, "epoch_s_64_items": epoch_s}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    results = {}
    for method in ("sft", "cft", "rcft", "rcft_completion", "reference"):
        results[method] = run_child(CHILD, method, str(args.steps), str(args.batch_size))
        print(method, json.dumps(results[method]), flush=True)
    cft = results["cft"]["step_s"]
    rows = [[m, r["step_s"], r["step_s"] / cft, r["peak_rss_mb"]] for m, r in results.items()]
    print(table(rows, ["method", "s/step", "× cft", "peak RSS MB"]))
    rc = results["rcft"]
    summary = {"batch_size": args.batch_size, "methods": results,
               "rcft_over_cft": rc["step_s"] / cft,
               "rcft_over_sft": rc["step_s"] / results["sft"]["step_s"],
               "rcft_completion_over_cft": results["rcft_completion"]["step_s"] / cft,
               "reference_over_rcft": results["reference"]["step_s"] / rc["step_s"],
               "reference_memory_over_rcft": results["reference"]["peak_rss_mb"] / rc["peak_rss_mb"],
               "estep_share_of_epoch": rc["estep_s_64_items"] / (rc["estep_s_64_items"]
                                                                  + rc["epoch_s_64_items"])}
    print(json.dumps({k: v for k, v in summary.items() if k != "methods"}))
    print("wrote", save("train_step_cost", summary))


if __name__ == "__main__":
    main()
