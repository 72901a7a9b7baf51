"""Benchmark 4 (CUDA): scoring throughput, MFU and LoRA step cost of an 8B Llama-shaped model.

No download: the model is built from a Llama-3-8B-shaped config with random weights in bf16.
Measures (1) scoring items/s and model FLOP utilisation at prompt length 256 for batches
16–128 through calibtune's scorer path (decoder + K letter rows of the head), against a plain
transformers forward with full logits; (2) 5-shot scoring: items of the same length after a
shared exemplar prefix (`--prefix` tokens, computed once and its keys/values reused, as
`--num-fewshot` does per subject) against the same whole prompts scored without the cache;
(3) LoRA steps of cft and rcft (one forward each).
Designed to finish in under 5 minutes on one H100/H200. Prints a table and writes JSON.
Usage: python bench/gpu.py [--tiny]   (--tiny runs the same code on a small model, CPU or GPU)
"""
from __future__ import annotations

import argparse
import datetime
import time

import numpy as np
import torch

from common import save, table


def build_model(tiny: bool, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    if tiny:
        cfg = LlamaConfig(vocab_size=4096, hidden_size=128, intermediate_size=256,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    else:  # Llama-3-8B shapes
        cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                          num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                          max_position_embeddings=8192, rope_theta=500000.0)
    cfg._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    return model.eval(), cfg


def n_params_matmul(model) -> int:
    """Parameters that take part in matmuls per token (embeddings lookup excluded)."""
    emb = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - emb


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def peak_tflops(device: str) -> float:
    if device != "cuda":
        return float("nan")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    sync(device)
    return 20 * 2 * 8192 ** 3 / (time.perf_counter() - t) / 1e12


def time_it(fn, device, reps):
    fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / reps


def fewshot_case(model, cfg, device, args, n_mm, letters) -> list[dict]:
    """The letter scorer's own cached path (`LetterScorer._forward` with a `PrefixCache`; the
    prefix is computed once per group, as in a run) against whole prompts without the cache."""
    from calibtune.scoring.letter import LetterScorer
    from calibtune.scoring.prefix import PrefixCache

    scorer = LetterScorer(model, None)  # `_forward` reads the model only
    gen = torch.Generator().manual_seed(0)
    prefix_ids = torch.randint(0, cfg.vocab_size, (args.prefix,), generator=gen).tolist()
    rows = []
    with torch.inference_mode():
        prefix = PrefixCache(model, prefix_ids, device)
        for bs in map(int, args.fewshot_batches.split(",")):
            seqs = torch.randint(0, cfg.vocab_size, (bs, args.seq), generator=gen).tolist()
            whole_seqs = [prefix_ids + s for s in seqs]
            cached = time_it(lambda: scorer._forward(seqs, 0, letters, device, prefix),
                             device, args.reps)
            whole = time_it(lambda: scorer._forward(whole_seqs, 0, letters, device),
                            device, args.reps)
            diff = np.abs(scorer._forward(seqs, 0, letters, device, prefix)
                          - scorer._forward(whole_seqs, 0, letters, device)).max()
            rows.append({"batch": bs, "prefix": args.prefix, "item_tokens": args.seq,
                         "cached_items_per_s": bs / cached, "whole_items_per_s": bs / whole,
                         "speedup": whole / cached, "max_abs_diff": float(diff),
                         "cached_tflops_item_tokens": 2 * n_mm * bs * args.seq / cached / 1e12})
    return rows


def main() -> None:
    from calibtune.scoring.forward import answer_logits

    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batches", default="16,32,64,128")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prefix", type=int, default=1024,
                    help="exemplar prefix tokens of the 5-shot case (5 × ≈200)")
    ap.add_argument("--fewshot-batches", default="16,32")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, cfg = build_model(args.tiny, device)
    n_mm = n_params_matmul(model)
    ceiling = peak_tflops(device)
    letters = torch.tensor([32, 33, 34, 35], device=device)
    rows = []
    for bs in map(int, args.batches.split(",")):
        ids = torch.randint(0, cfg.vocab_size, (bs, args.seq), device=device)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            ours = time_it(lambda: answer_logits(model, ids, mask, letters),
                           device, args.reps)
            plain = time_it(lambda: model(input_ids=ids, attention_mask=mask).logits[:, -1],
                            device, args.reps)
        flops = 2 * n_mm * bs * args.seq  # forward, matmul FLOPs (attention scores excluded)
        rows.append({"batch": bs, "items_per_s": bs / ours, "plain_items_per_s": bs / plain,
                     "tflops": flops / ours / 1e12, "mfu": flops / ours / 1e12 / ceiling})

    fewshot = fewshot_case(model, cfg, device, args, n_mm, letters)

    train = {}
    from peft import LoraConfig, get_peft_model

    from calibtune.training.config import TrainConfig
    from calibtune.training.estep import RegulariserState
    from calibtune.training.objective import loss_terms, total_loss
    from calibtune.training.targets import estep_targets

    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                            task_type="CAUSAL_LM")).train()
    bs = 8 if not args.tiny else 4
    ids = torch.randint(0, cfg.vocab_size, (bs, args.seq), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "lm_labels": ids.clone(), "answer_pos": torch.full((bs,), args.seq - 2, device=device),
             "label": torch.zeros(bs, dtype=torch.long, device=device),
             "letter_ids": letters.expand(bs, 4).clone(),
             "option_mask": torch.ones(bs, 4, dtype=torch.bool, device=device),
             "item_index": torch.arange(bs, device=device)}
    state = RegulariserState()  # an E-step on random scores: only the targets' shape matters
    rng = np.random.default_rng(0)
    state.update(estep_targets(rng.normal(size=(bs, 4)), rng.integers(0, 4, bs),
                               np.ones((bs, 4), bool)), 0, 0)
    for method in ("cft", "rcft"):
        train_cfg = TrainConfig(method=method, sft_loss="completion")

        def step():
            loss, _ = total_loss(loss_terms(lora, batch, train_cfg), batch, train_cfg, state)
            loss.backward()
        s = time_it(step, device, args.reps)
        tokens = bs * args.seq
        train[method] = {"step_s": s, "tokens_per_s": tokens / s,
                         "mfu_6N": 6 * n_mm * tokens / s / 1e12 / ceiling}
    result = {"date": datetime.date.today().isoformat(),
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "model": "tiny" if args.tiny else "Llama-3-8B-shaped, random bf16",
              "matmul_params": n_mm, "bf16_matmul_tflops": ceiling, "seq": args.seq,
              "scoring": rows, "fewshot": fewshot, "lora_steps": train,
              "rcft_over_cft": train["rcft"]["step_s"] / train["cft"]["step_s"]}
    print(table([[r["batch"], r["items_per_s"], r["plain_items_per_s"], r["tflops"], r["mfu"]]
                 for r in rows], ["batch", "items/s", "plain fwd items/s", "TFLOP/s", "MFU"]))
    print(table([[r["batch"], r["prefix"], r["cached_items_per_s"], r["whole_items_per_s"],
                  r["speedup"], r["max_abs_diff"]] for r in fewshot],
                ["batch", "prefix", "cached items/s", "whole items/s", "speedup", "max |Δ|"]))
    print(table([[m, t["step_s"], t["tokens_per_s"], t["mfu_6N"]] for m, t in train.items()],
                ["method", "s/step", "tokens/s", "MFU (6N)"]))
    print("wrote", save("gpu_tiny" if args.tiny else "gpu", result))


if __name__ == "__main__":
    main()
