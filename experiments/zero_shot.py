"""Zero-shot calibration table: letter vs cloze (raw and length-normalised), per model and set.

    python experiments/zero_shot.py [--limit 150] [--models smollm2-135m-instruct,gemma-3-270m]
                                    [--data socialiqa,quartz,mmlu]

Items: a seeded sample of each built-in set's `test` split. One cloze pass per model and set
gives the raw option log-likelihood sums; the token and character normalisations divide those
sums, so all three cloze rows score the very same forward passes. Prints a Markdown table and
writes experiments/results/zero_shot.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from calibtune.scoring.cloze import ClozeScorer, normalise  # noqa: E402
from calibtune.data import load_dataset, sample_items  # noqa: E402
from calibtune.metrics import accuracy, ece  # noqa: E402
from calibtune.metrics.validation import softmax  # noqa: E402
from calibtune.models import load_model  # noqa: E402
from calibtune.scoring import LetterScorer  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def row(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict:
    p = softmax(logits, mask)
    return {"accuracy": accuracy(p, labels, mask), "mean_confidence": float(p.max(1).mean()),
            "ece": ece(p, labels, 10, mask=mask)}


def measure(model_name: str, data: str, limit: int, seed: int) -> dict:
    model, tok = load_model(model_name, device="cpu")
    items = sample_items(load_dataset(data, "test").items, limit, seed)
    labels = np.array([it.answer for it in items])
    out = {}
    start = time.perf_counter()
    letter = LetterScorer(model, tok, progress=False).score(items)
    out["letter"] = row(letter.logits, labels, letter.mask) | {
        "seconds": time.perf_counter() - start}
    scorer = ClozeScorer(model, tok, progress=False)
    encoded = scorer.encode(items)
    k = max(it.n_options for it in items)
    sums, mask = np.zeros((len(items), k)), np.zeros((len(items), k), bool)
    start = time.perf_counter()
    for batch, block in scorer.iter_raw(items, encoded):
        sums[batch] = block
    seconds = time.perf_counter() - start
    for i, e in enumerate(encoded):
        mask[i, : len(e.continuations)] = True
    n_tok = np.array([e.n_tokens + [1] * (k - len(e.n_tokens)) for e in encoded])
    n_chr = np.array([e.n_chars + [1] * (k - len(e.n_chars)) for e in encoded])
    for norm in ("none", "token", "char"):
        out[f"cloze_{norm}"] = row(normalise(sums, n_tok, n_chr, norm), labels, mask) | {
            "seconds": seconds}
    out["chance"] = float(np.mean([1 / it.n_options for it in items]))
    out["n"] = len(items)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    ap.add_argument("--data", default="socialiqa,quartz,mmlu")
    args = ap.parse_args()
    results = {}
    for model_name in args.models.split(","):
        for data in args.data.split(","):
            results[f"{model_name}/{data}"] = measure(model_name, data, args.limit, args.seed)
            print(model_name, data, json.dumps(results[f"{model_name}/{data}"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "zero_shot.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "limit": args.limit, "seed": args.seed,
         "split": "test", "results": results}, indent=2) + "\n")
    print("\n| model | set (chance) | scoring | accuracy | mean conf. | ECE |\n|---|---|---|---|---|---|")
    names = {"letter": "letter", "cloze_none": "cloze raw", "cloze_token": "cloze / token",
             "cloze_char": "cloze / char"}
    for key, r in results.items():
        model_name, data = key.split("/")
        for mode, label in names.items():
            m = r[mode]
            print(f"| {model_name} | {data} ({r['chance']:.2f}) | {label} | {m['accuracy']:.3f} | "
                  f"{m['mean_confidence']:.3f} | {m['ece']:.3f} |")


if __name__ == "__main__":
    main()
