"""The same model and items scored through an OpenAI-compatible server and in-process.

Start a server first, e.g. llama-cpp-python's on the built-in GGUF:

    python tests/serve_llama.py --model "$(python -c 'from calibtune.models import BUILTIN_MODELS;
        print(BUILTIN_MODELS["smollm2-135m-instruct"].locate())')" --model_alias smollm2 \
        --host 127.0.0.1 --port 8765 --n_ctx 2048 --logits_all true

(tests/serve_llama.py is `python -m llama_cpp.server` with llama.cpp's AMX kernels off; see
there), then `python bench/served_vs_local.py --url http://127.0.0.1:8765/v1 --alias smollm2`.
Each side is a whole `calibtune eval` run (n_boot 0); the in-process wall time includes loading
the model (seconds), the served one the server's prompt processing over HTTP. Prints a table and
writes bench/results/served_vs_local[_PROMPT_SCORING].json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from calibtune.metrics.validation import softmax
from calibtune.workflows.config import EvalConfig
from calibtune.workflows.eval import run_eval
from common import save, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--alias", default="smollm2")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--prompt", default="plain")
    ap.add_argument("--scoring", default="letter")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--top-logprobs", type=int, nargs="+", default=[20, 1000])
    args = ap.parse_args()
    common = dict(data="mmlu", split="test", limit=args.limit, prompt=args.prompt,
                  scoring=args.scoring, n_boot=0, seed=0)
    rows, runs = [], {}
    sides = [("in-process", "smollm2-135m-instruct", 20)] + [
        (f"served top {k}", f"openai:{args.url}/{args.alias}", k) for k in args.top_logprobs]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (side, model, top) in enumerate(sides):
            start = time.perf_counter()
            result = run_eval(EvalConfig(model=model, out=str(Path(tmp) / str(i)),
                                         concurrency=args.concurrency, top_logprobs=top,
                                         device="cpu", **common), progress=False)
            wall = time.perf_counter() - start
            saved = np.load(result.folder / "scores.npz")
            runs[side] = {"wall_s": wall, "accuracy": result.metrics["accuracy"],
                          "ece": result.metrics["ece"],
                          "probs": softmax(saved["logits"], saved["mask"]), "mask": saved["mask"],
                          "served": result.metrics.get("served")}
            rows.append([side, args.limit, result.metrics["accuracy"], result.metrics["ece"],
                         wall])
    local = runs["in-process"]
    out = {"items": args.limit, "prompt": args.prompt, "scoring": args.scoring,
           "in-process": {k: local[k] for k in ("accuracy", "ece", "wall_s")}}
    for side, run in runs.items():
        if side == "in-process":
            continue
        diff = np.abs(local["probs"] - run["probs"])[local["mask"]]
        out[side] = {k: run[k] for k in ("accuracy", "ece", "wall_s", "served")} | {
            "agreement": float((local["probs"].argmax(1) == run["probs"].argmax(1)).mean()),
            "max_abs_prob_diff": float(diff.max()), "mean_abs_prob_diff": float(diff.mean())}
    print(table(rows, ["side", "items", "accuracy", "ECE", "wall s"]))
    print(json.dumps(out, indent=2))
    name = "served_vs_local" + ("" if (args.prompt, args.scoring) == ("plain", "letter")
                                else f"_{args.prompt}_{args.scoring}")
    save(name, out)


if __name__ == "__main__":
    main()
