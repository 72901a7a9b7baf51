"""Benchmark: the cost of one CFT / RCFT LoRA step on a large model, by how many layers are adapted.

`--lora-layers N` adapts only the top N decoder layers, so the backward pass stops at the lowest
of them; the forward pass still runs through every layer (its share is reported: `forward_s`,
the loss's forward alone, backward and optimiser excluded). This measures what that buys on the
machine it runs on: seconds per optimiser step (median of `--steps` after one warm-up step) and
peak RSS, at batch 8, LoRA r 16 / α 32 (the studies' adapter), on MMLU letter items and on
SocialIQA cloze items (the training lengths of the two settings). With N < all, the same
batches are also timed with the frozen layers' output read from the cache (`--frozen-cache-mb`:
what every epoch after the first costs). Every configuration runs in
its own process; ratios are against all layers adapted, measured in the same run.

Usage: python bench/lora_step_cost.py [--model qwen2.5-coder-1.5b-instruct] [--layers all 4]
       [--settings mmlu-letter socialiqa-cloze] [--checkpointing] [--steps 2]
The default model is the optional built-in: fetch it first (`calibtune models --fetch ...`).
"""
from __future__ import annotations

import argparse
import json

from common import run_child, save, table

CHILD = r"""
import json, sys, time
import numpy as np
import torch
from calibtune.data import load_dataset, sample_items
from calibtune.models import load_model
from calibtune.models.lora import stop_backward_below_adapters, wrap_lora
from calibtune.training.config import TrainConfig
from calibtune.training.estep import RegulariserState
from calibtune.training.finetune import build_dataset
from calibtune.training.objective import loss_terms, total_loss
from calibtune.training.targets import estep_targets

model_name, setting, layers, method, steps, bs, ckpt = sys.argv[1:8]
steps, bs, ckpt = int(steps), int(bs), ckpt == "1"
torch.manual_seed(0)
t = time.perf_counter()
model, tok = load_model(model_name, device="cpu")
load_s = time.perf_counter() - t
data, scoring = {"mmlu-letter": ("mmlu", "letter"), "socialiqa-cloze": ("socialiqa", "cloze")}[setting]
cfg = TrainConfig(method=method, scoring=scoring, prompt="chat", cloze_norm="token", lora_r=16,
                  lora_alpha=32, lora_layers=None if layers == "all" else int(layers),
                  gradient_checkpointing=ckpt)
model.config.use_cache = False
model = wrap_lora(model, cfg).train()
if ckpt:
    model.activation_checkpointing_enable()
    if cfg.lora_layers is not None:
        stop_backward_below_adapters(model)
items = sample_items(load_dataset(data, "train").items, bs * (steps + 1), 0)
ds, collator = build_dataset(cfg, items, tok)
state = RegulariserState()
if method == "rcft":  # targets of a uniform model: the step's cost does not depend on them
    k = max(it.n_options for it in items)
    res = estep_targets(np.zeros((len(items), k)), np.array([it.answer for it in items]),
                        np.ones((len(items), k), bool))
    state.update(res, 0, 0)
trainable = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(trainable, lr=1e-5)
batches = [collator([ds[j] for j in range(i * bs, (i + 1) * bs)]) for i in range(steps + 1)]
times, forward, tokens = [], [], []
for batch in batches:
    t = time.perf_counter()
    loss = total_loss(loss_terms(model, batch, cfg), batch, cfg, state)[0]
    forward.append(time.perf_counter() - t)
    loss.backward(); opt.step(); opt.zero_grad()
    times.append(time.perf_counter() - t)
    tokens.append(int(batch["attention_mask"].sum()))
cached = {}
if cfg.lora_layers is not None:  # the same batches again, frozen layers read from the cache
    from calibtune.models import frozen_prefix
    from calibtune.models.lora import decoder_layer_count
    frozen_prefix.install(model, decoder_layer_count(model) - cfg.lora_layers, 8192)
    with torch.no_grad():
        for b in batches:
            loss_terms(model, b, cfg)
    c_times, c_forward = [], []
    for b in batches[1:]:
        t = time.perf_counter()
        loss = total_loss(loss_terms(model, b, cfg), b, cfg, state)[0]
        c_forward.append(time.perf_counter() - t)
        loss.backward(); opt.step(); opt.zero_grad()
        c_times.append(time.perf_counter() - t)
    cached = {"cached_step_s": float(np.median(c_times)),
              "cached_forward_s": float(np.median(c_forward))}
print(json.dumps({**cached, "step_s": float(np.median(times[1:])), "step_s_each": times,
                  "forward_s": float(np.median(forward[1:])),
                  "tokens_per_step": float(np.mean(tokens[1:])), "load_s": load_s,
                  "trainable_params": int(sum(p.numel() for p in trainable))}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--layers", nargs="+", default=["all", "4"])
    ap.add_argument("--settings", nargs="+", default=["mmlu-letter", "socialiqa-cloze"])
    ap.add_argument("--method", default="cft", choices=["cft", "rcft"])
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--name", default="lora_step_cost")
    args = ap.parse_args()
    results: dict = {}
    for setting in args.settings:
        for layers in args.layers:
            key = f"{setting} layers={layers}"
            results[key] = run_child(CHILD, args.model, setting, layers, args.method,
                                     str(args.steps), str(args.batch_size),
                                     "1" if args.checkpointing else "0")
            print(key, json.dumps(results[key]), flush=True)
    rows = []
    for setting in args.settings:
        full = results.get(f"{setting} layers=all")
        for layers in args.layers:
            r = results[f"{setting} layers={layers}"]
            rows.append([setting, layers, r["step_s"], r["step_s"] / full["step_s"] if full else "",
                         r["forward_s"], r.get("cached_step_s", ""), r["tokens_per_step"],
                         r["trainable_params"], r["peak_rss_mb"]])
    print(table(rows, ["setting", "layers", "s/step", "× all layers", "forward s",
                       "s/step, frozen layers cached", "tokens/step", "trainable", "peak RSS MB"]))
    summary = {"model": args.model, "method": args.method, "batch_size": args.batch_size,
               "checkpointing": args.checkpointing, "steps": args.steps, "results": results}
    print("wrote", save(args.name, summary))


if __name__ == "__main__":
    main()
