"""Benchmark: peak resident memory of converting a GGUF, loading the converted model, scoring.

One child process runs, phase by phase (exact peaks, as in train_memory.py): the GGUF →
safetensors cache conversion (`convert_gguf`), loading the converted folder (`load_model`, fp32,
CPU), and scoring N MMLU test items with the chat prompt. `--src` picks the calibtune source
tree, so the same script measures an older checkout (before) and this one (after); the option
logits come back too, so the two conversions can be checked to give the same scores.

Peaks are VmHWM: resident pages, memory-mapped file pages included (the GGUF while it is read,
the safetensors shards while they are loaded).

Usage: python bench/load_memory.py GGUF [--src src] [--items 5] [--name load_memory]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from common import PHASES, run_child, save, table

CHILD = PHASES + r"""
watchdog()
gguf, cache, n_items = sys.argv[1], sys.argv[2], int(sys.argv[3])
from pathlib import Path

with phases("import"):
    from calibtune.data import load_dataset, sample_items
    from calibtune.models import builtin, load_model
    from calibtune.scoring import LetterScorer
items = sample_items(load_dataset("mmlu", "test").items, n_items, seed=0)
folder = Path(cache) / "models" / "bench"
with phases("convert"):
    builtin.convert_gguf(Path(gguf), folder)
with phases("load from cache"):
    model, tokenizer = load_model(str(folder), device="cpu")
with phases(f"score {n_items} items"):
    scores = LetterScorer(model, tokenizer, prompt="chat", progress=False).score(items)
fp32 = sum(p.numel() * 4 for p in model.parameters()) / 2**20  # tied weights counted once
print(json.dumps({"phases": [{"phase": p, "peak_mb": phases.peak[p], "seconds": phases.seconds[p],
                              "end_rss_mb": phases.end_rss[p]} for p in phases.peak],
                  "fp32_weights_mb": fp32, "calibtune": builtin.__file__, "logits": scores.logits.tolist(),
                  "labels": scores.labels.tolist()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src"),
                    help="The calibtune source tree to measure (default: this checkout's).")
    ap.add_argument("--items", type=int, default=5)
    ap.add_argument("--name", default="load_memory")
    args = ap.parse_args()
    cache = tempfile.mkdtemp(prefix="load-memory-")
    try:
        result = run_child(CHILD, str(Path(args.gguf).resolve()), cache, str(args.items),
                           env={"PYTHONPATH": str(Path(args.src).resolve()),
                                "CALIBTUNE_CACHE": cache}, quiet=False)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    fp32 = result["fp32_weights_mb"]
    rows = [[p["phase"], p["seconds"], p["peak_mb"] / 1024, p["peak_mb"] / fp32,
             p["end_rss_mb"] / 1024] for p in result["phases"]]
    print(table(rows, ["phase", "seconds", "peak RSS GiB", "peak / fp32 weights",
                       "RSS at end GiB"]))
    if not result["calibtune"].startswith(str(Path(args.src).resolve())):
        raise SystemExit(f"the child imported calibtune from {result['calibtune']}, not {args.src}")
    summary = {"args": vars(args), "src_head": _git_head(args.src), **result}
    print(json.dumps({k: v for k, v in summary.items() if k not in ("phases", "logits")}))
    print("wrote", save(args.name, summary))


def _git_head(src: str) -> str:
    head = os.popen(f"git -C {src} rev-parse --short HEAD 2>/dev/null").read().strip()
    return head or "unknown"


if __name__ == "__main__":
    main()
