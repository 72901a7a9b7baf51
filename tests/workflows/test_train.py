"""Training on a tiny model: every method runs, one forward per step, resume is exact."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.errors import ConfigError
from calibtune.scores import OptionScores, evaluate
from calibtune.training.config import TrainConfig
from calibtune.workflows.config import TrainRunConfig
from calibtune.workflows.train import run_training

from conftest import make_items, tiny_train_config, write_train_eval


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_eval(tmp_path_factory.mktemp("train-data"),
                            make_items(24, k=[4, 3], seed=1), make_items(10, seed=2))


def config(model, data, tmp_path, **kw):
    return tiny_train_config(model, data, tmp_path, **({"epochs": 2, "save_steps": 3} | kw))


@pytest.mark.parametrize("method", ["sft", "cft", "rcft", "label_smoothing"])
def test_every_method_trains_and_evaluates(method, tiny_llama, data, tmp_path):
    cfg = config(tiny_llama, data, tmp_path, method=method, max_steps=4)
    result = run_training(cfg)
    out = result.out
    assert (out / "adapter" / "adapter_config.json").exists()
    # eval/ scored the trained model, eval_before/ the untouched one, on the same 10 items
    after, before = (OptionScores.load(out / d / "scores.npz") for d in ("eval", "eval_before"))
    assert after.ids.tolist() == before.ids.tolist() and len(after) == 10
    assert np.abs(after.logits - before.logits)[after.mask].max() > 1e-4
    assert json.loads((out / "eval" / "metrics.json").read_text())["ece"] == pytest.approx(
        evaluate(after, n_boot=0)["ece"], abs=1e-12)
    log = json.loads((out / "train_log.json").read_text())
    logged = {k for entry in log for k in entry}
    assert ("loss_ece" in logged) == (method == "rcft")
    assert "loss_sft" in logged
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # it moved


def test_rcft_reestimates_bins_every_epoch(tiny_llama, data, tmp_path):
    cfg = config(tiny_llama, data, tmp_path, method="rcft", epochs=3)
    run_training(cfg)
    history = json.loads((tmp_path / "run" / "estep_history.json").read_text())
    assert [h["step"] for h in history] == [0, 6, 12]  # 24 items / batch 4 = 6 steps an epoch
    assert history[0]["bins"] != history[-1]["bins"]  # re-estimated from the current model
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    per_epoch = [e for e in log if "heldout_ece" in e]
    assert [e["step"] for e in per_epoch] == [6, 12, 18]  # held-out ECE logged every epoch
    assert all(e["heldout_n"] == 10 for e in per_epoch)
    # the last epoch's check is the final model on the held-out items: eval/'s ECE
    final = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert per_epoch[-1]["heldout_ece"] == pytest.approx(final["ece"], abs=1e-4)
    # before the first step, the training items alone (the baseline G₀ of diagnose --train-run):
    # the same model and items as the E-step at step 0, scored through another path
    (start,) = [e for e in log if e.get("epoch") == 0]
    assert start["step"] == 0 and "heldout_accuracy" not in start and start["train_n"] == 24
    assert start["train_accuracy"] == pytest.approx(history[0]["train_accuracy"], abs=1e-9)
    assert start["train_ece"] == pytest.approx(history[0]["train_ece"], abs=1e-4)
    from calibtune.workflows.diagnose import baseline_measurements

    before = json.loads((tmp_path / "run" / "eval_before" / "metrics.json").read_text())
    assert baseline_measurements(tmp_path / "run") == {
        "accuracy_before": start["train_accuracy"], "n_before": 24,
        "heldout_accuracy_before": before["accuracy"]}
    # the plane's points: intervals around each, and the training items scored too
    for e in per_epoch:
        for side, n in (("heldout", 10), ("train", 24)):
            low, high = e[f"{side}_ece_ci"]
            assert e[f"{side}_n"] == n and 0 <= low <= high <= 1  # (ECE's bootstrap is biased up)
            assert 0 < e[f"{side}_noise_q95"] < 1


def test_one_forward_pass_per_step(tiny_llama, data, tmp_path):
    from calibtune.training import objective

    calls = []
    original = objective.through_forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    objective.through_forward = counting
    try:
        run_training(config(tiny_llama, data, tmp_path, method="rcft", max_steps=3,
                            eval_before=False))
    finally:
        objective.through_forward = original
    assert len(calls) == 3


class Crash(RuntimeError):
    pass


class CrashAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise Crash("simulated kill right after checkpoint 3")


@pytest.mark.parametrize("method", ["cft", "rcft"])
def test_resume_gives_the_same_adapter(method, tiny_llama, data, tmp_path):
    kw = dict(method=method, max_steps=6, lora_dropout=0.1, estep_every_steps=2)
    whole = run_training(config(tiny_llama, data, tmp_path / "a", **kw))
    with pytest.raises(Crash):
        run_training(config(tiny_llama, data, tmp_path / "b", **kw), callbacks=[CrashAfterSave()])
    assert not (tmp_path / "b" / "run" / "adapter").exists()
    resumed = run_training(config(tiny_llama, data, tmp_path / "b", **kw), resume=True)
    a = load_file(whole.out / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed.out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_adapter_loads_back_through_eval(tiny_llama, data, tmp_path):
    result = run_training(config(tiny_llama, data, tmp_path, method="cft", max_steps=3))
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_llama), "--adapter",
                                   str(result.out / "adapter"), "--data",
                                   str(data / "eval.jsonl"), "--out", str(tmp_path / "ev"),
                                   "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    after = json.loads((result.out / "eval" / "metrics.json").read_text())
    assert again["ece"] == pytest.approx(after["ece"], abs=1e-6)


def test_overlapping_train_and_eval_is_refused(tiny_llama, data, tmp_path):
    with pytest.raises(ConfigError, match="also training items"):
        run_training(config(tiny_llama, data, tmp_path, eval_data=None))


def test_bad_method_is_a_config_error():
    with pytest.raises(ConfigError, match="--method"):
        TrainConfig(method="dpo")


def test_full_sequence_loss_equals_the_models_own_loss(tiny_llama):
    from calibtune.models import load_model
    from calibtune.training.losses import full_sequence_loss
    from calibtune.scoring.forward import through_forward

    model, _ = load_model(str(tiny_llama), device="cpu")
    ids = torch.tensor([[5, 9, 12, 7, 8, 1], [6, 10, 11, 1, 1, 1]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        ours = through_forward(model, lambda hidden, head: full_sequence_loss(head, hidden, labels),
                               input_ids=ids, attention_mask=mask).value
        ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_train_cli_end_to_end(tiny_llama, data, tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"model: {tiny_llama}\ndata: {data / 'train.jsonl'}\nsplit: null\n"
                   f"eval_data: {data / 'eval.jsonl'}\neval_split: null\neval_limit: null\n"
                   "lora_r: 4\nlora_alpha: 8\nbatch_size: 4\n")
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--method", "rcft",
                                   "--max-steps", "2", "--lambda", "0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "after rcft" in res.output and "untouched" in res.output
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["ece_lambda"] == 0.5 and saved["method"] == "rcft" and saved["lora_r"] == 4
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--method", "dpo"])
    assert res.exit_code == 2 and "--method must be one of" in res.output


def test_qlora_trains_on_4bit_weights(data, tmp_path):
    import importlib.util

    from conftest import build_model_folder

    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("pip install 'calibtune[qlora]'")
    model = build_model_folder(tmp_path / "m64", hidden_size=64)  # NF4 blocks are 64 wide
    seen = {}

    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["types"] = {type(m).__name__ for m in model.modules()}

    result = run_training(config(model, data, tmp_path, method="rcft", max_steps=2,
                                 load_in_4bit=True), callbacks=[Inspect()])
    assert "Linear4bit" in seen["types"]  # frozen weights really are NF4, LoRA on top
    adapter = load_file(result.out / "adapter" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    after = json.loads((result.out / "eval" / "metrics.json").read_text())
    assert 0 <= after["ece"] <= 1
    with pytest.raises(ConfigError, match="full-finetune"):
        TrainRunConfig(load_in_4bit=True, lora=False)


@pytest.mark.parametrize("env,match", [
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "fsdp_version: 2"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2",
      "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT"}, "FULL_STATE_DICT"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
     "zero3_save_16bit_model")])
def test_sharded_settings_calibtune_cannot_serve_are_refused(env, match, monkeypatch,
                                                                   tiny_llama, data, tmp_path):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=match):
        run_training(config(tiny_llama, data, tmp_path, method="rcft", max_steps=1))
    assert not (tmp_path / "run").exists()  # nothing started
