"""The multi-process path on CPU: 2 processes over gloo (torchrun or `accelerate launch`)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import items_to_rows, make_items, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def write_data(tmp_path: Path, n_train: int) -> Path:
    """train.jsonl (mixed K) and eval.jsonl (disjoint ids) in tmp_path/data."""
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", items_to_rows(make_items(n_train, k=[4, 3], seed=3)))
    rows = items_to_rows(make_items(6, seed=4))
    for r in rows:
        r["id"] = "eval-" + r["id"]
    write_jsonl(data / "eval.jsonl", rows)
    return data


def test_two_cpu_processes_share_estep_statistics(tmp_path, tiny_llama):
    data = write_data(tmp_path, 16)
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


def run_worker(model, data, out, scoring, engine, port):
    """`accelerate launch` with the repo's sample config of `engine`, on 2 CPU processes."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / f"{engine}.yaml"), "--num_processes", "2",
           "--main_process_port", str(port), "--mixed_precision", "no",
           str(ROOT / "tests" / "fsdp_worker.py"), str(model), str(data), str(out), scoring]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_fsdp_trains_the_same_adapter_as_ddp(scoring, tmp_path, tiny_llama):
    """RCFT with the model sharded by FSDP2 (losses and option scores computed inside the
    forward call, E-step dealt in lockstep) ends where DDP ends, and its adapter is whole."""
    from safetensors.torch import load_file

    from calibtune.scores import OptionScores

    # 40 items: the E-step deals several batch-sized chunks, one rank runs a chunk short
    data = write_data(tmp_path, 40)
    port = 29540 if scoring == "letter" else 29550
    fsdp = run_worker(tiny_llama, data, tmp_path / "fsdp", scoring, "fsdp", port)
    ddp = run_worker(tiny_llama, data, tmp_path / "ddp", scoring, "ddp", port + 1)
    assert fsdp[0]["world"] == ddp[0]["world"] == 2
    assert "DTensor" in fsdp[0]["head_types"]  # the head really was sharded between forwards
    assert "DTensor" not in ddp[0]["head_types"]
    history = [json.loads((tmp_path / e / "estep_history.json").read_text())
               for e in ("fsdp", "ddp")]
    assert [h["step"] for h in history[0]] == [0, 2, 4]
    assert [h["bins"]["count"] for h in history[0]] == [h["bins"]["count"] for h in history[1]]
    assert sum(history[0][0]["bins"]["count"]) == 40
    adapters = [load_file(tmp_path / e / "adapter" / "adapter_model.safetensors")
                for e in ("fsdp", "ddp")]
    assert adapters[0].keys() == adapters[1].keys() and adapters[0]
    for name, value in adapters[0].items():
        assert value.shape == adapters[1][name].shape, name  # whole, not a shard
        torch.testing.assert_close(value, adapters[1][name], atol=1e-5, rtol=1e-4)
    assert max(float(v.abs().max()) for k, v in adapters[0].items() if "lora_B" in k) > 1e-3
    scores = [OptionScores.load(tmp_path / e / "eval" / "scores.npz") for e in ("fsdp", "ddp")]
    np.testing.assert_allclose(scores[0].logits, scores[1].logits, atol=1e-4)
    assert fsdp[0]["after"]["ece"] == pytest.approx(ddp[0]["after"]["ece"], abs=1e-4)
