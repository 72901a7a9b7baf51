"""How calibration moves with the number of exemplars: accuracy, mean confidence and ECE with
95% bootstrap intervals at k = 0, 1, 3, 5 for the embedded model, on MMLU (letter, plain prompt)
and SocialIQA (cloze: raw sums and per-character normalisation, from the same forward passes).

The same seeded test items at every k; exemplars drawn as `calibtune eval --num-fewshot k`
draws them (seed = the item seed): per subject for MMLU, from the split's unscored items; one
group for SocialIQA (no subjects). One process, the model loaded once.
Usage: python bench/fewshot_sweep.py [--items 300] [--ks 0 1 3 5] [--n-boot 1000]
Writes bench/results/fewshot_sweep.json (or --name).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import save, table

SETS = [("mmlu", "letter"), ("socialiqa", "cloze")]
KEYS = ("accuracy", "mean_confidence", "ece")


def point(scores, n_boot: int, seed: int) -> dict:
    from calibtune.scores import evaluate

    m = evaluate(scores, n_bins=10, n_boot=n_boot, seed=seed)
    ci = m.get("ci", {})
    return {k: {"value": float(m[k]), **({"low": ci[k]["low"], "high": ci[k]["high"]}
                                          if k in ci else {})} for k in KEYS}


def char_normalised(scores, items):
    """Cloze sums divided by each option's characters (lm-eval's acc_norm)."""
    from calibtune.scores import OptionScores

    chars = np.ones_like(scores.logits)
    for r, it in enumerate(items):
        chars[r, : it.n_options] = [max(1, len(o.strip())) for o in it.options]
    return OptionScores(logits=scores.logits / chars, labels=scores.labels, mask=scores.mask,
                        ids=scores.ids, meta=dict(scores.meta, cloze_norm="char"),
                        groups=scores.groups)


def main() -> None:
    from calibtune.data import load_dataset, sample_items
    from calibtune.data.fewshot import draw_fewshot
    from calibtune.models import load_model
    from calibtune.scoring import make_scorer

    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--ks", type=int, nargs="+", default=[0, 1, 3, 5])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--name", default="fewshot_sweep", help="bench/results/NAME.json")
    args = ap.parse_args()
    model, tokenizer = load_model("smollm2-135m-instruct", device="cpu")
    rows, out = [], {"model": "smollm2-135m-instruct (fp32, CPU)", "items": args.items,
                     "seed": args.seed, "n_boot": args.n_boot, "points": []}
    for data, scoring in SETS:
        pool = load_dataset(data, "test").items
        items = sample_items(pool, args.items, args.seed)
        for k in args.ks:
            fewshot = draw_fewshot(items, pool, k, args.seed, f"{data} (test)") if k else None
            scorer = make_scorer(model, tokenizer, scoring, fewshot=fewshot, progress=False)
            start = time.perf_counter()
            scores = scorer.score(items)
            seconds = time.perf_counter() - start
            variants = [("raw" if scoring == "cloze" else "plain", scores)]
            if scoring == "cloze":
                variants.append(("char", char_normalised(scores, items)))
            for variant, s in variants:
                p = point(s, args.n_boot, args.seed)
                out["points"].append({"data": data, "scoring": scoring, "variant": variant,
                                      "k": k, "n": len(items), "scoring_s": seconds, **p})
                rows.append([data, f"{scoring} ({variant})", k] + [
                    f"{p[key]['value']:.3f}" + (f" [{p[key]['low']:.3f}, {p[key]['high']:.3f}]"
                                                if "low" in p[key] else "") for key in KEYS])
                print(rows[-1], flush=True)
    print(table(rows, ["data", "scoring", "k", "accuracy", "mean conf.", "ECE"]))
    print("wrote", save(args.name, out))


if __name__ == "__main__":
    main()
