"""`run_alignment` on a tiny random model: trains, saves, evaluates, measures retention, resumes
exactly; the IPO loss runs; `dpo_train` writes nothing."""
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from calibtune.align.config import AlignConfig
from calibtune.align.dpo import dpo_train, encode_pairs, make_dpo_trainer
from calibtune.align.pairs import pairs_from_items
from calibtune.workflows.align import run_alignment
from calibtune.errors import ConfigError, DataError
from calibtune.models import load_model
from calibtune.training.faults import SEAL
from calibtune.scores import OptionScores, evaluate

from conftest import make_items, write_jsonl, write_train_eval


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/align/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_eval(tmp_path_factory.mktemp("align-data"), make_items(8, k=[4, 3], seed=1),
                            make_items(6, seed=2))


def config(model, data, out, **kw):
    base = dict(model=str(model), data=str(data / "train.jsonl"), split=None,
                eval_data=str(data / "eval.jsonl"), eval_split=None, eval_limit=None,
                batch_size=8, lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=1e-2,
                warmup_ratio=0.0, logging_steps=1, max_steps=5, save_steps=2, out=str(out))
    return AlignConfig(**(base | kw))


def losses(out):
    return [e["loss"] for e in json.loads((out / "train_log.json").read_text()) if "loss" in e]


@pytest.fixture(scope="module")
def dpo_run(tiny_llama, data, tmp_path_factory):
    return run_alignment(config(tiny_llama, data, tmp_path_factory.mktemp("dpo") / "run"))


def test_dpo_run_trains_saves_evaluates_and_measures_retention(dpo_run):
    out = dpo_run.out
    loss = losses(out)
    assert len(loss) == 5
    assert loss[0] == pytest.approx(0.6931, abs=1e-3)  # the adapter starts at the reference
    assert loss[-1] < loss[0] - 0.01 and loss == sorted(loss, reverse=True)  # one fixed batch
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    for folder in ("eval_before", "eval"):
        metrics = json.loads((out / folder / "metrics.json").read_text())
        saved = OptionScores.load(out / folder / "scores.npz")
        assert metrics["n"] == len(saved) == 6
        again = evaluate(saved, n_boot=0)  # metrics.json is the metrics of these scores
        for key in ("n_bins", "accuracy", "mean_confidence", "ece", "cw_ece", "brier", "nll"):
            assert metrics[key] == pytest.approx(again[key], abs=1e-12), key
        assert (out / folder / "scores.npz").exists() and (out / folder / "report.md").exists()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["loss"] == "dpo" and saved["beta"] == 0.1 and saved["lora_r"] == 4
    retention = json.loads((out / "retention.json").read_text())
    assert retention["preference_tuned"]["n"] == 6  # the pairs of the 6 held-out items
    assert retention["kl_reference_tuned"]["mean_kl"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["train_pairs"] == 8 and summary["method"] == "dpo"
    assert summary["before"] == {k: dpo_run.metrics_before[k] for k in summary["before"]}
    held = [json.loads(line) for line in (out / "heldout_pairs.jsonl").read_text().splitlines()]
    assert [p["id"] for p in held] == [f"eval-q{i}" for i in range(6)]


def test_the_adapter_disabled_evaluation_is_the_untouched_model(dpo_run, tiny_llama, data,
                                                                 tmp_path):
    from calibtune.workflows.config import EvalConfig
    from calibtune.workflows.eval import run_eval

    res = run_eval(EvalConfig(model=str(tiny_llama), data=str(data / "eval.jsonl"),
                              out=str(tmp_path / "ev"), n_boot=0))
    assert res.metrics["ece"] == pytest.approx(dpo_run.metrics_before["ece"], abs=1e-6)


def test_a_merged_base_adapter_is_the_aligned_model_and_cft_starts_from_it(dpo_run, tiny_llama,
                                                                            data, tmp_path):
    """--base-adapter merges the DPO adapter into the weights: scoring equals the unmerged
    adapter's, and `calibtune train --base-adapter` evaluates and trains the DPO'd model."""
    import numpy as np

    from calibtune.workflows.config import EvalConfig
    from calibtune.workflows.eval import run_eval
    from calibtune.workflows.train import run_training

    from conftest import tiny_train_config

    adapter = str(dpo_run.out / "adapter")
    common = dict(model=str(tiny_llama), data=str(data / "eval.jsonl"), n_boot=0)
    attached = run_eval(EvalConfig(**common, adapter=adapter, out=str(tmp_path / "attached")))
    merged = run_eval(EvalConfig(**common, base_adapter=adapter, out=str(tmp_path / "merged")))
    untouched = np.load(dpo_run.out / "eval_before" / "scores.npz")["logits"]
    a = np.load(tmp_path / "attached" / "scores.npz")["logits"]
    m = np.load(tmp_path / "merged" / "scores.npz")["logits"]
    assert np.abs(a - untouched).max() > 1e-3  # the adapter moves the scores ...
    np.testing.assert_allclose(m, a, atol=1e-4)  # ... and merging it changes nothing
    assert merged.metrics["ece"] == pytest.approx(attached.metrics["ece"], abs=1e-5)

    cfg = tiny_train_config(tiny_llama, data, tmp_path, base_adapter=adapter, method="cft",
                            max_steps=2, save_steps=10)
    run_training(cfg)
    before = np.load(tmp_path / "run" / "eval_before" / "scores.npz")["logits"]
    np.testing.assert_allclose(before, a, atol=1e-4)  # CFT starts from the DPO'd model
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["base_adapter"] == adapter


def test_trl_trains_on_calibtunes_token_ids(tiny_llama, tmp_path):
    model, tok = load_model(str(tiny_llama), device="cpu")
    pairs = pairs_from_items(make_items(4), style="chat", tokenizer=tok)
    encoded, _ = encode_pairs(tok, pairs)
    trainer = make_dpo_trainer(model, tok, encoded, config(tiny_llama, tmp_path, tmp_path),
                               str(tmp_path / "t"), save_checkpoints=False)
    rows = [trainer.train_dataset[i] for i in range(len(encoded))]
    assert [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in rows] == \
        [(e.prompt_ids, e.chosen_ids, e.rejected_ids) for e in encoded]
    batch = trainer.data_collator(rows[:1])
    assert batch["input_ids"][0].tolist() == encoded[0].prompt_ids + encoded[0].chosen_ids
    assert batch["completion_mask"][0].sum() == 1  # the answer letter, no EOS appended
    assert trainer.args.bf16 is False and trainer.args.activation_checkpointing is False
    assert trainer.args.loss_type == ["sigmoid"] and trainer.ref_model is None  # adapter-off ref


class Crash(RuntimeError):
    pass


class CrashAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise Crash("simulated kill right after checkpoint 2")


def test_resume_gives_the_same_adapter(tiny_llama, data, tmp_path):
    kw = dict(batch_size=4, max_steps=4, eval_before=False, retention=False, eval_limit=2)
    whole = run_alignment(config(tiny_llama, data, tmp_path / "a", **kw))
    with pytest.raises(Crash):
        run_alignment(config(tiny_llama, data, tmp_path / "b", **kw), callbacks=[CrashAfterSave()])
    assert not (tmp_path / "b" / "adapter").exists()
    seal_path = tmp_path / "b" / "checkpoints" / "checkpoint-2" / SEAL
    seal = json.loads(seal_path.read_text())
    assert seal["seconds"]["train"] > 0  # the seconds so far, which a resumed run goes on from
    seal_path.write_text(json.dumps(seal | {"seconds": {"train": 1000.0, "estep": 0.0}}))
    resumed = run_alignment(config(tiny_llama, data, tmp_path / "b", **kw), resume=True)
    assert 1000.0 < resumed.train_seconds < 1600.0
    a = load_file(whole.out / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed.out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    # the resumed log carries the first two steps over from the checkpoint
    assert losses(resumed.out) == pytest.approx(losses(whole.out), abs=1e-6)


def test_ipo_runs_and_its_loss_falls(tiny_llama, data, tmp_path):
    result = run_alignment(config(tiny_llama, data, tmp_path / "ipo", loss="ipo", beta=0.5,
                                  max_steps=3, scoring="cloze", eval_limit=3, eval_before=False))
    loss = losses(result.out)
    assert loss[0] == pytest.approx((1 / (2 * 0.5)) ** 2, abs=1e-3)  # (0 - 1/(2β))² at the start
    assert loss[-1] < loss[0]
    assert json.loads((result.out / "summary.json").read_text())["method"] == "ipo"


def test_a_preference_file_trains_with_a_held_out_share(tiny_llama, data, tmp_path):
    rows = [{"prompt": f"the {w} ?", "chosen": " light", "rejected": " stone"}
            for w in "sun moon cell river water heat plant gas iron salt".split()]
    prefs = write_jsonl(tmp_path / "prefs.jsonl", rows + [{"prompt": "x", "chosen": "a"}])
    with pytest.raises(DataError, match="missing field rejected"):
        run_alignment(config(tiny_llama, data, tmp_path / "bad", preferences=str(prefs)))
    result = run_alignment(config(tiny_llama, data, tmp_path / "p", preferences=str(prefs),
                                  skip_invalid=True, heldout_fraction=0.3, max_steps=2,
                                  eval_limit=2, eval_before=False))
    summary = json.loads((result.out / "summary.json").read_text())
    assert (summary["train_pairs"], summary["heldout_pairs"], summary["rejected_rows"]) == (7, 3, 1)
    assert json.loads((result.out / "rejected.jsonl").read_text())["field"] == "rejected"
    # the reference numbers are the untouched model's on the held-out pairs, the tuned ones not
    from calibtune.align.pairs import load_preferences
    from calibtune.align.retention import preference_accuracy

    held = load_preferences(result.out / "heldout_pairs.jsonl").pairs
    assert len(held) == 3 and all(p.chosen == " light" for p in held)
    untouched = preference_accuracy(*load_model(str(tiny_llama), device="cpu"), held)
    assert summary["retention"]["preference_accuracy_reference"] == untouched.accuracy
    assert summary["retention"]["mean_margin_reference"] == pytest.approx(untouched.mean_margin,
                                                                           abs=1e-5)
    assert abs(summary["retention"]["mean_margin_tuned"] - untouched.mean_margin) > 1e-4


def test_overlapping_train_and_eval_is_refused(tiny_llama, data, tmp_path):
    with pytest.raises(ConfigError, match="also training items"):
        run_alignment(config(tiny_llama, data, tmp_path, eval_data=None))


def test_dpo_train_writes_nothing(tiny_llama, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.chdir(tmp_path)
    seen = set(tmp_path.iterdir()) | set(__import__("pathlib").Path(tempfile.gettempdir())
                                         .glob("calibtune-dpo-*"))
    model, tok = load_model(str(tiny_llama), device="cpu")
    pairs = pairs_from_items(make_items(4))
    trained = dpo_train(model, tok, pairs, AlignConfig(lora_r=4, lora_alpha=8, max_steps=2,
                                                       batch_size=4, learning_rate=1e-2))
    assert not trained.training and hasattr(trained, "disable_adapter")
    now = set(tmp_path.iterdir()) | set(__import__("pathlib").Path(tempfile.gettempdir())
                                        .glob("calibtune-dpo-*"))
    assert now == seen


def test_preference_eval_of_a_file_and_of_hhh(dpo_run, tiny_llama, tmp_path, monkeypatch):
    """What `calibtune eval --preferences FILE|hhh` runs: with an adapter, the adapted and the
    adapter-disabled model and the KL between them; without one, the model alone."""
    import hashlib

    from calibtune.align import hhh
    from calibtune.workflows.align import PreferenceEvalConfig, run_preference_eval

    out = tmp_path / "pe"
    res = run_preference_eval(PreferenceEvalConfig(
        model=str(tiny_llama), adapter=str(dpo_run.out / "adapter"),
        preferences=str(dpo_run.out / "heldout_pairs.jsonl"), batch_size=4, out=str(out)))
    saved = json.loads((out / "preferences.json").read_text())
    retention = json.loads((dpo_run.out / "retention.json").read_text())
    for key in ("preference_tuned", "preference_reference"):  # same pairs, same numbers
        assert saved[key]["accuracy"] == retention[key]["accuracy"]
        assert saved[key]["mean_margin"] == pytest.approx(retention[key]["mean_margin"], abs=1e-5)
    assert saved["kl_reference_tuned"]["mean_kl"] == pytest.approx(
        retention["kl_reference_tuned"]["mean_kl"], abs=1e-6)
    assert res.metrics["rejected_rows"] == 0 and (out / "config.yaml").exists()
    change = saved["change_tuned_minus_reference"]["accuracy"]
    assert change["estimate"] == pytest.approx(saved["preference_tuned"]["accuracy"]
                                               - saved["preference_reference"]["accuracy"])
    assert change["low"] <= change["estimate"] <= change["high"]
    from calibtune.align.retention import RetentionReport

    assert RetentionReport.from_dict(saved).to_dict() == {  # reads back what it wrote
        k: v for k, v in saved.items() if k not in ("source", "rejected_rows")}

    # the CLI prints these as lines with their intervals, not the per-pair dump
    from typer.testing import CliRunner

    from calibtune.cli import app

    cli = CliRunner().invoke(app, ["eval", "--model", str(tiny_llama), "--adapter",
                                   str(dpo_run.out / "adapter"), "--preferences",
                                   str(dpo_run.out / "heldout_pairs.jsonl"), "--out",
                                   str(tmp_path / "pe-cli")])
    assert cli.exit_code == 0, cli.output
    acc = saved["preference_tuned"]["ci"]["accuracy"]
    assert (f"tuned: preference accuracy {saved['preference_tuned']['accuracy']:.3f} "
            f"[{acc['low']:.3f}, {acc['high']:.3f}]") in cli.output
    assert "tuned - reference: accuracy" in cli.output and "chosen_logp" not in cli.output

    # hhh from an already extracted (here: synthetic) cache: no download
    cache = tmp_path / "cache"
    digests = {}
    for k, sub in enumerate(hhh.HHH_SUBTASKS):
        path = cache / "bigbench" / "hhh_alignment" / sub / "task.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"examples": [
            {"input": f"{sub} {i} ?", "target_scores": {f"light {i}": 1, f"stone {i}": 0}}
            for i in range(1 + k)]}))
        digests[sub] = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setenv("CALIBTUNE_CACHE", str(cache))
    monkeypatch.setattr(hhh, "HHH_TASK_SHA256", digests)
    res = run_preference_eval(PreferenceEvalConfig(model=str(tiny_llama), preferences="hhh",
                                                   limit=5, out=str(tmp_path / "h")))
    assert set(res.metrics) == {"preference", "source", "rejected_rows"}
    assert res.metrics["preference"]["n"] == 5 and res.metrics["source"] == "hhh_alignment"


def test_dpo_train_continues_an_existing_adapter(tiny_llama):
    from peft import get_peft_model

    from calibtune.align.dpo import lora_config

    model, tok = load_model(str(tiny_llama), device="cpu")
    cfg = AlignConfig(lora_r=4, lora_alpha=8, max_steps=2, batch_size=4, learning_rate=1e-2,
                      warmup_ratio=0.0)
    peft_model = get_peft_model(model, lora_config(cfg))
    trained = dpo_train(peft_model, tok, pairs_from_items(make_items(4)), cfg)
    assert set(trained.peft_config) == {"default", "ref"}  # TRL's frozen copy as the reference
    b = [p for n, p in trained.named_parameters() if "lora_B.default" in n]
    assert any(p.abs().sum() > 0 for p in b)


def test_align_cli_prints_retention_as_lines(tiny_llama, tmp_path):
    """`calibtune align` ends with the retention lines (intervals, paired change), not a dump."""
    from typer.testing import CliRunner

    from calibtune.cli import app

    data = write_train_eval(tmp_path, make_items(8, seed=1), make_items(6, seed=2))
    out = tmp_path / "dpo-cli"
    res = CliRunner().invoke(app, ["align", "--model", str(tiny_llama), "--data",
                                   str(data / "train.jsonl"), "--split", "all", "--eval-data",
                                   str(data / "eval.jsonl"), "--eval-split", "all",
                                   "--lora-r", "4", "--lora-alpha", "8",
                                   "--max-steps", "2", "--batch-size", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "retention.json").read_text())
    assert f"preference accuracy {saved['preference_tuned']['accuracy']:.3f} [" in res.output
    assert "tuned - reference: accuracy" in res.output and "chosen_logp" not in res.output
    assert f"wrote {out}/retention.json" in res.output
    summary = json.loads((out / "summary.json").read_text())["retention"]
    change = saved["change_tuned_minus_reference"]["accuracy"]
    assert (summary["preference_accuracy_change_low"], summary["preference_accuracy_change_high"]
            ) == (change["low"], change["high"])
