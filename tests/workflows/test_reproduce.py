"""`calibtune reproduce`: the whole comparison on a tiny model, cached steps, kill and resume."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.errors import ConfigError
from calibtune.workflows.reproduce import execute, load_reproduce_config
from calibtune.workflows.reproduce import run_reproduce

from conftest import items_to_rows, make_items, write_jsonl
from report.test_html import page_check

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama):
    folder = tmp_path_factory.mktemp("reproduce")
    write_jsonl(folder / "train.jsonl", items_to_rows(make_items(16, k=[4, 3], seed=21)))
    rows = items_to_rows(make_items(12, seed=22))
    for r in rows:
        r["id"] = "in-" + r["id"]
    write_jsonl(folder / "in.jsonl", rows)
    rows = items_to_rows(make_items(10, k=3, seed=23))
    for r in rows:
        r["id"] = "out-" + r["id"]
    write_jsonl(folder / "out.jsonl", rows)
    config = {"name": "tiny", "model": str(tiny_llama),
              "train": {"data": str(folder / "train.jsonl")},
              "in_domain": {"data": str(folder / "in.jsonl"), "name": "in"},
              "out_of_domain": [{"data": str(folder / "out.jsonl"), "name": "out"}],
              "methods": ["aligned", "temperature", "cft", "rcft"],
              "training": {"max_steps": 2, "batch_size": 4, "lora_r": 4, "lora_alpha": 8,
                           "learning_rate": 0.005, "save_steps": 1, "epoch_eval_limit": 4,
                           "epoch_train_limit": 4},
              "seeds": [0, 1], "n_boot": 20}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


@pytest.mark.browser
def test_the_whole_comparison_and_a_rerun_that_recomputes_nothing(setup, tmp_path):
    path, _ = setup
    out = tmp_path / "rep"
    text = run_reproduce(path, out=out)
    assert "| cft |" in text and "| temperature |" in text
    for name in ("table.md", "table.csv", "results.json", "report.html", "reliability_grid.png",
                 "plane.png", "config.yaml"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    cells = {(c["method"], c["split"]): c for c in results["cells"]}
    assert set(cells) == {(m, s) for m in ("aligned", "temperature", "cft", "rcft")
                          for s in ("in", "out")}
    assert cells[("cft", "in")]["seeds"] == 2 and cells[("aligned", "in")]["delta"] is None
    acc = cells[("temperature", "in")]["delta"]["accuracy"]
    assert acc[0] == pytest.approx(0.0, abs=1e-12)  # temperature cannot move accuracy
    again = execute(load_reproduce_config(path), out)
    assert {o.status for o in again} == {"done"}
    page = page_check(out / "report.html", screenshot=tmp_path / "shot.png")
    assert page["errors"] == [] and page["requests"] == []
    assert len(page["images"]) == 2 and all(w > 0 and h > 0 for w, h in page["images"])


def test_kill_halfway_then_rerun_recomputes_nothing_finished(setup, tmp_path):
    path, _ = setup
    out = tmp_path / "rep"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "calibtune", "reproduce", "--config", str(path),
                             "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list((out / "steps").glob("*/step.json"))) < 4:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name for p in (out / "steps").glob("*/step.json")}
    outcomes = execute(load_reproduce_config(path), out)
    status = {o.id.replace("/", "__"): o.status for o in outcomes}
    assert all(status[name] == "done" for name in finished)
    assert sum(s != "done" for s in status.values()) == len(status) - len(finished)


def test_a_config_change_reruns_only_the_steps_it_touches(setup, tmp_path):
    path, config = setup
    out = tmp_path / "rep"
    changed = dict(config, seeds=[0], methods=["aligned", "cft", "rcft"])
    first = tmp_path / "a.yaml"
    first.write_text(yaml.safe_dump(changed))
    execute(load_reproduce_config(first), out)
    changed["training"] = dict(config["training"])
    changed["method_training"] = {"rcft": {"ece_lambda": 2.0}}
    second = tmp_path / "b.yaml"
    second.write_text(yaml.safe_dump(changed))
    status = {o.id: o.status for o in execute(load_reproduce_config(second), out)}
    assert status["train/rcft/s0"] == "ran" and status["score/rcft/s0/out"] == "ran"
    assert all(s == "done" for i, s in status.items() if "rcft" not in i)


def test_steps_share_the_frozen_layers_states_and_give_the_numbers_computed_without(
        setup, tmp_path, caplog):
    """With `lora_layers`, the aligned model's scoring leaves the frozen layers' output on
    disk; the training steps (their steps, E-steps and evaluation) and the adapters' scoring
    read it. Every table number equals that of a run that keeps nothing."""
    import logging

    import numpy as np

    path, config = setup
    results = {}
    for mb in (0.0, 64.0):
        changed = dict(config, seeds=[0], methods=["aligned", "cft", "rcft"],
                       training=dict(config["training"], lora_layers=1, frozen_cache_mb=mb))
        cfg_path = tmp_path / f"mb{mb:g}.yaml"
        cfg_path.write_text(yaml.safe_dump(changed))
        out = tmp_path / f"rep{mb:g}"
        with caplog.at_level(logging.INFO, logger="calibtune.training.finetune"):
            execute(load_reproduce_config(cfg_path), out)
        results[mb] = {p.relative_to(out / "steps"): np.load(p)["logits"]
                       for p in sorted((out / "steps").rglob("scores.npz"))}
    states = list((tmp_path / "rep64" / "frozen-states").rglob("*.safetensors"))
    assert len(states) > 0 and not (tmp_path / "rep0" / "frozen-states").exists()
    lines = [r.getMessage() for r in caplog.records if "frozen layers run for" in r.getMessage()]
    # the CFT run's evaluation: every held-out sequence read from disk, none computed
    assert any("run for 0 sequences" in m and "12 read from and 0 written" in m for m in lines), lines
    assert results[0].keys() == results[64.0].keys() and len(results[0]) >= 4
    for name, logits in results[0].items():
        np.testing.assert_allclose(results[64.0][name], logits, atol=1e-4, err_msg=str(name))


def test_training_and_adapter_steps_run_without_the_aligned_model_held(setup, tmp_path,
                                                                       monkeypatch):
    """The aligned model is dropped before a step that loads its own (a training run, an
    adapter's scoring), and loaded again when a later seed's step scores it."""
    from calibtune.workflows import reproduce_steps, train

    path, config = setup
    held, events = [], []
    real_aligned, real_train = reproduce_steps.ModelCache.aligned, train.run_training

    def aligned(self):
        held.append(self)
        events.append("load" if self._model is None else "reuse")
        return real_aligned(self)

    def run_training(cfg, **kwargs):
        events.append("train with the aligned model held" if any(m._model is not None
                                                                   for m in held) else "train")
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(reproduce_steps.ModelCache, "aligned", aligned)
    monkeypatch.setattr(train, "run_training", run_training)
    changed = dict(config, methods=["aligned", "temperature", "cft"],
                   training=dict(config["training"], max_steps=1))
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(changed))
    execute(load_reproduce_config(cfg_path), tmp_path / "rep")
    assert events == ["load", "reuse", "reuse", "train", "load", "train"]


def test_every_shipped_config_dry_runs_without_a_model(monkeypatch):
    import calibtune.models

    def refuse(*a, **k):
        raise AssertionError("--dry-run loaded a model")

    monkeypatch.setattr(calibtune.models, "load_model", refuse)
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    shipped = [c for c in configs if "in_domain" in yaml.safe_load(c.read_text())]
    assert {c.name for c in shipped} >= {"smollm2-mmlu.yaml", "smollm2-socialiqa-cloze.yaml",
                                         "paper-tulu3-8b.yaml", "paper-olmo2-7b.yaml",
                                         "qwen-1.5b-mmlu.yaml", "qwen-1.5b-socialiqa-cloze.yaml"}
    for c in shipped:
        res = CliRunner().invoke(app, ["reproduce", "--config", str(c), "--dry-run", "--seeds",
                                       "0", "1", "2"])
        assert res.exit_code == 0, (c, res.output)
        assert "steps:" in res.output and "seeds [0, 1, 2]" in res.output


@pytest.mark.parametrize("change, match", [
    ({"methods": ["aligned", "dpo"]}, "unknown method"),
    ({"training": {"nonsense": 1}}, "unknown training option"),
    ({"training": {"seed": 3}}, "set by reproduce itself"),
    ({"surprise": 1}, "unknown key"),
])
def test_bad_configs_are_refused_with_one_line(setup, tmp_path, change, match):
    _, config = setup
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(dict(config, **change)))
    with pytest.raises(ConfigError, match=match):
        load_reproduce_config(path)


def test_options_added_later_leave_zero_shot_training_keys_unchanged():
    """Steps cached by an earlier version stay cached: a zero-shot training step's key holds
    none of the options added since (few-shot, base adapter), and never max_step_tokens."""
    from dataclasses import replace

    from calibtune.workflows.config import TrainRunConfig
    from calibtune.workflows.reproduce import _train_key

    later = {"num_fewshot", "fewshot_seed", "fewshot_data", "base_adapter", "max_step_tokens",
             "frozen_cache_dir", "ece_bin_prior"}
    cfg = TrainRunConfig()
    assert not later & set(_train_key(cfg))
    assert _train_key(replace(cfg, max_step_tokens=512)) == _train_key(cfg)
    assert _train_key(replace(cfg, frozen_cache_dir="states")) == _train_key(cfg)
    assert _train_key(replace(cfg, base_adapter="a"))["base_adapter"] == "a"
    assert _train_key(replace(cfg, num_fewshot=2))["num_fewshot"] == 2
    assert _train_key(replace(cfg, ece_bin_prior=10.0))["ece_bin_prior"] == 10.0


def test_the_plan_says_when_the_model_is_not_at_hand(monkeypatch, tmp_path):
    """An optional built-in not fetched, or a model path that does not exist, is named in the
    dry-run's plan with what to do; a model at hand adds no line."""
    from calibtune.workflows.reproduce_steps import describe_plan

    monkeypatch.setenv("CALIBTUNE_CACHE", str(tmp_path / "empty-cache"))
    qwen = load_reproduce_config(ROOT / "configs" / "qwen-1.5b-mmlu.yaml")
    assert "NOT FETCHED (optional built-in): run `calibtune models --fetch " \
           "qwen2.5-coder-1.5b-instruct` first" in describe_plan(qwen)
    smollm2 = load_reproduce_config(ROOT / "configs" / "smollm2-mmlu.yaml")
    assert "  model " not in describe_plan(smollm2)
    missing = dataclasses.replace(smollm2, model=str(tmp_path / "no-such-model"))
    assert "model          NOT FOUND" in describe_plan(missing)
