"""The multi-process path on CPU: 2 processes over gloo (torchrun; the Trainer runs on accelerate)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import items_to_rows, make_items, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_two_cpu_processes_share_estep_statistics(tmp_path, tiny_llama):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", items_to_rows(make_items(16, k=[4, 3], seed=3)))
    rows = items_to_rows(make_items(6, seed=4))
    for r in rows:
        r["id"] = "eval-" + r["id"]
    write_jsonl(data / "eval.jsonl", rows)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", str(ROOT / "tests" / "ddp_worker.py"), str(tiny_llama),
           str(data), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"estep_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    r0, r1 = ranks[0]["record"], ranks[1]["record"]
    assert [e["step"] for e in r0] == [0, 2, 4]
    assert r0 == r1  # every rank holds the same bins, accuracies and targets
    assert sum(r0[0]["counts"]) == 16  # the gathered E-step covers the whole training set
    assert (out / "adapter" / "adapter_config.json").exists()
