"""The multi-process path on CPU: 2 processes over gloo (torchrun or `accelerate launch`)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import items_to_rows, make_items, write_jsonl

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# the workers import this checkout's calibtune, whatever is installed
WORKER_PATH = os.pathsep.join([str(ROOT / "src"), str(HERE)])


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
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=WORKER_PATH)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", str(HERE / "ddp_worker.py"), str(tiny_llama),
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
    # micro-batches are one process's: said once (rank 0), not silently dropped
    assert proc.stderr.count("--max-step-tokens 40 is ignored on 2 processes") == 1


def launch_config(engine: str, folder: Path) -> Path:
    """The repo's sample accelerate config of `engine`. For ZeRO-3 the same settings go through
    a DeepSpeed JSON file that also partitions small parameters (DeepSpeed keeps parameters
    under 1e5 elements whole by default, and the tiny model's head is one of them)."""
    sample = ROOT / "configs" / "accelerate" / f"{engine}.yaml"
    if engine != "deepspeed_zero3":
        return sample
    config = yaml.safe_load(sample.read_text())
    zero = config.pop("deepspeed_config")
    ds_json = folder / "zero3.json"
    ds_json.write_text(json.dumps({
        "zero_optimization": {"stage": zero["zero_stage"], "stage3_param_persistence_threshold": 0,
                              "stage3_gather_16bit_weights_on_model_save":
                                  zero["zero3_save_16bit_model"]},
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto"}))
    config["deepspeed_config"] = {"deepspeed_config_file": str(ds_json),
                                  "zero3_init_flag": zero["zero3_init_flag"]}
    path = folder / "zero3.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_worker(model, data, out, scoring, engine, port):
    """`accelerate launch` with the repo's sample config of `engine`, on 2 CPU processes."""
    out.mkdir(parents=True)
    launch = out.with_name(out.name + "-launch")  # beside the run folder: calibtune refuses
    launch.mkdir()                                 # to write into a folder holding other files
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=WORKER_PATH,
               DS_ACCELERATOR="cpu")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(launch_config(engine, launch)), "--num_processes", "2",
           "--main_process_port", str(port), "--mixed_precision", "no",
           str(HERE / "engine_worker.py"), str(model), str(data), str(out), scoring]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory, tiny_llama):
    """run(engine, scoring) -> the run folder and rank 0's record; each run made once. 40 items:
    the E-step deals several batch-sized chunks, and one rank runs a chunk short."""
    root = tmp_path_factory.mktemp("engines")
    data = write_data(root, 40)
    done = {}

    def run(engine, scoring):
        if (engine, scoring) not in done:
            out = root / f"{engine}-{scoring}"
            ranks = run_worker(tiny_llama, data, out, scoring, engine, 29540 + 3 * len(done))
            assert all(r["world"] == 2 for r in ranks)
            done[engine, scoring] = (out, ranks[0])
        return done[engine, scoring]

    return run


@pytest.mark.parametrize("engine,sharded", [("fsdp", lambda k: k == "DTensor"),
                                            ("deepspeed_zero3", lambda k: k.startswith("zero3")
                                             and k.endswith("holds-0"))])
@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_sharded_engines_train_the_same_adapter_as_ddp(engine, sharded, scoring, engine_runs):
    """RCFT with the model sharded by FSDP2 or ZeRO-3 (losses and option scores computed inside
    the forward call, E-step dealt in lockstep) ends where DDP ends, and its adapter is whole."""
    from safetensors.torch import load_file

    from calibtune.scores import OptionScores

    (out, record), (ddp_out, ddp_record) = engine_runs(engine, scoring), engine_runs("ddp", scoring)
    assert any(sharded(k) for k in record["head_kinds"])  # the head was sharded between forwards
    assert ddp_record["head_kinds"] and not any(sharded(k) for k in ddp_record["head_kinds"])
    history = [json.loads((o / "estep_history.json").read_text()) for o in (out, ddp_out)]
    assert [h["step"] for h in history[0]] == [0, 2, 4]
    counts = [np.array([h["bins"]["count"] for h in run]) for run in history]
    np.testing.assert_array_equal(counts[0][0], counts[1][0])  # step 0: the same model
    assert (counts[0].sum(axis=1) == 40).all() and (counts[1].sum(axis=1) == 40).all()
    # after steps the adapters agree to ~1e-5 (another reduction order): on some CPU an item's
    # confidence may sit that close to a bin edge, so at most one item may change bin
    assert (np.abs(counts[0] - counts[1]).sum(axis=1) <= 2).all(), counts
    adapters = [load_file(o / "adapter" / "adapter_model.safetensors") for o in (out, ddp_out)]
    assert adapters[0].keys() == adapters[1].keys() and adapters[0]
    for name, value in adapters[0].items():
        assert value.shape == adapters[1][name].shape, name  # whole, not a shard
        torch.testing.assert_close(value, adapters[1][name], atol=1e-5, rtol=1e-4)
    assert max(float(v.abs().max()) for k, v in adapters[0].items() if "lora_B" in k) > 1e-3
    scores = [OptionScores.load(o / "eval" / "scores.npz") for o in (out, ddp_out)]
    np.testing.assert_allclose(scores[0].logits, scores[1].logits, atol=1e-4)
    # (not the ECEs: binning is discontinuous, and the logits above are the stronger check)
