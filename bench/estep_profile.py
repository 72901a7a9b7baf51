"""Profile of RCFT's E-step against the training epoch it precedes (torch profiler, FLOPs).

One process, the embedded SmolLM2-135M-Instruct with LoRA r 16 on 64 MMLU train items: the
E-step (scoring all 64 items, no gradient) under the torch profiler with FLOP counting, and one
epoch of RCFT steps (8 batches of 8, the paper's full-sequence SFT + λ·L_ECE, AdamW), timed
whole, with one of its steps profiled (the profiler keeps every autograd event in memory: a
whole profiled epoch does not fit in 24 GB) and its FLOPs scaled by the number of steps.
It shows where the E-step's share of an epoch comes from: time per phase, the matmul FLOPs the
profiler counts, the FLOP rate, and the top operators of each phase.
Usage: python bench/estep_profile.py
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from common import save, table

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def phase(fn) -> dict:
    """Run fn under the profiler: counted GFLOPs (matmuls and elementwise ops, on the padded
    tokens) and each operator's share of CPU time. Its wall includes the profiler's overhead,
    so the phases are also timed without it."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    flops = sum(e.flops for e in events if e.flops)
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
    return {"wall_s": wall, "gflop": flops / 1e9, "gflop_per_s": flops / 1e9 / wall,
            "top_ops": {e.key: round(e.self_cpu_time_total / total, 3) for e in top}}


def main() -> None:
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

    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m-instruct", device="cpu")
    cfg = TrainConfig(method="rcft", lora_r=16, lora_alpha=32)
    model = wrap_lora(model, cfg)
    items = sample_items(load_dataset("mmlu", "train").items, 64, 0)
    ds = MCQTrainDataset(items, PromptEncoder(tok, "plain", 4), 384)
    collate = MCQCollator(tok, ds.letter_ids)
    batches = [collate([ds[i] for i in range(s, s + 8)]) for s in range(0, len(ds), 8)]
    state = RegulariserState()
    logits = np.zeros((len(items), 4))

    def estep() -> None:
        model.eval()
        for b, v in LetterScorer(model, tok, progress=False).iter_batches(items):
            logits[b] = v
        model.train()

    estep()  # warm-up (allocator, thread pool)
    start = time.perf_counter()
    estep()  # timed without the profiler (which slows CPU ops ~2x)
    estep_s = time.perf_counter() - start
    e = phase(estep)
    e |= {"profiled_s": e["wall_s"], "wall_s": estep_s, "gflop_per_s": e["gflop"] / estep_s}
    res = estep_targets(logits, np.array([it.answer for it in items]), np.ones((64, 4), bool))
    state.update(res, 0, 0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(batch) -> None:
        loss, _ = total_loss(loss_terms(model, batch, cfg), batch, cfg, state)
        loss.backward()
        opt.step()
        opt.zero_grad()

    step(batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches:  # the epoch, timed without the profiler
        step(batch)
    epoch_s = time.perf_counter() - start
    # The profiler holds every autograd event in memory: profile one step, scale by the steps.
    one = phase(lambda: step(batches[len(batches) // 2]))
    t = {"wall_s": epoch_s, "gflop": one["gflop"] * len(batches),
         "gflop_per_s": one["gflop"] * len(batches) / epoch_s, "top_ops": one["top_ops"],
         "profiled_s": one["wall_s"]}
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    summary = {"items": len(items), "tokens": tokens, "padded_tokens": padded, "estep": e,
               "epoch": t,
               "estep_share_of_epoch_time": e["wall_s"] / (e["wall_s"] + t["wall_s"]),
               "estep_share_of_epoch_flops": e["gflop"] / (e["gflop"] + t["gflop"])}
    rows = [[name, p["wall_s"], p["gflop"], p["gflop_per_s"]] for name, p in
            (("E-step (64 items)", e), ("RCFT epoch (8 steps)", t))]
    print(table(rows, ["phase", "seconds", "GFLOP", "GFLOP/s"]))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("estep", "epoch")}))
    print("E-step top ops:", e["top_ops"])
    print("epoch top ops:", t["top_ops"])
    print("wrote", save("estep_profile", summary))


if __name__ == "__main__":
    main()
