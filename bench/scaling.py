"""Benchmark 3: cost against size — scoring vs number of items and prompt length; metrics on 1M items.

Scoring should cost the same per item at any n (no per-item overhead growth) and grow with
prompt length; the metrics library should summarise a million items in about a second.
Usage: python bench/scaling.py [--sizes 1000,5000,14033]   (14,033 = every MMLU item)
Each size's row is saved as soon as it is measured, so a long sweep that is stopped keeps them.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import save, table


def metrics_on_synthetic(n: int = 1_000_000) -> dict:
    from calibtune.metrics import (accuracy, auroc, brier, classwise_ece, ece, nll, softmax)

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, 4)) * 2
    labels = rng.integers(0, 4, n)
    probs = softmax(logits)
    out = {}
    for name, fn in [("ece", lambda: ece(probs, labels)),
                     ("ece_quantile", lambda: ece(probs, labels, strategy="quantile")),
                     ("classwise_ece", lambda: classwise_ece(probs, labels)),
                     ("brier", lambda: brier(probs, labels)), ("nll", lambda: nll(probs, labels)),
                     ("accuracy", lambda: accuracy(probs, labels)),
                     ("auroc", lambda: auroc(probs, labels))]:
        t = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t
    return out


def main() -> None:
    from calibtune.data import load_dataset, sample_items
    from calibtune.models import load_model
    from calibtune.scoring.prompts import PromptEncoder
    from calibtune.scoring import LetterScorer

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,200,400")
    ap.add_argument("--skip-length", action="store_true", help="only the sweep over sizes")
    args = ap.parse_args()
    model, tok = load_model("smollm2-135m-instruct", device="cpu")
    pool = load_dataset("mmlu", "all").items
    scorer = LetterScorer(model, tok, batch_size=16, progress=False)
    scorer.score(sample_items(pool, 16, 99))  # warm-up
    by_n = []
    for n in map(int, args.sizes.split(",")):
        items = sample_items(pool, n, 1)
        tokens = sum(len(x) for x in PromptEncoder(tok, "plain", 4).encode_prompts(items))
        t = time.perf_counter()
        scorer.score(items)
        s = time.perf_counter() - t
        by_n.append({"items": len(items), "tokens": tokens, "seconds": s,
                     "items_per_s": len(items) / s, "tokens_per_s": tokens / s})
        print(by_n[-1], flush=True)
        save("scaling_items", {"by_items": by_n})
    if args.skip_length:
        return
    lengths = np.array([len(x) for x in PromptEncoder(tok, "plain", 4).encode_prompts(pool)])
    by_len = []
    for lo, hi in [(0, 64), (64, 128), (128, 256), (256, 512)]:
        idx = np.flatnonzero((lengths >= lo) & (lengths < hi))[:64]
        items = [pool[i] for i in idx]
        t = time.perf_counter()
        scorer.score(items)
        s = time.perf_counter() - t
        by_len.append({"prompt_tokens": f"{lo}-{hi}", "items": len(items),
                       "mean_tokens": float(lengths[idx].mean()), "items_per_s": len(items) / s,
                       "tokens_per_s": float(lengths[idx].sum()) / s})
    metrics = metrics_on_synthetic()
    print(table([[r["items"], r["seconds"], r["items_per_s"], r["tokens_per_s"]] for r in by_n],
                ["items", "seconds", "items/s", "tokens/s"]))
    print(table([[r["prompt_tokens"], r["mean_tokens"], r["items_per_s"], r["tokens_per_s"]]
                 for r in by_len], ["prompt tokens", "mean", "items/s", "tokens/s"]))
    print(table([[k, v] for k, v in metrics.items()], ["metric on 1M items", "seconds"]))
    print("wrote", save("scaling", {"by_items": by_n, "by_prompt_length": by_len,
                                    "metrics_1M_seconds": metrics}))


if __name__ == "__main__":
    main()
