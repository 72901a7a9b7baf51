import json

import numpy as np
import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.scores import OptionScores

from conftest import items_to_rows, make_items, write_jsonl

runner = CliRunner()


@pytest.fixture
def data_file(tmp_path):
    return write_jsonl(tmp_path / "items.jsonl", items_to_rows(make_items(30, k=[4, 3])))


def test_eval_end_to_end_on_tiny_model(tmp_path, tiny_llama, data_file):
    out = tmp_path / "run"
    res = runner.invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(data_file),
                              "--out", str(out), "--n-boot", "50", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    for name in ("scores.npz", "metrics.json", "reliability.png", "classwise.png", "report.md",
                 "config.yaml"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("n", "accuracy", "ece", "cw_ece", "mce", "brier", "nll", "mean_confidence"):
        assert key in metrics
    assert metrics["n"] == 30
    scores = OptionScores.load(out / "scores.npz")
    assert scores.mask.sum(1).tolist() == [4, 3] * 15
    assert not (out / ".partial").exists()


def test_eval_is_deterministic(tmp_path, tiny_qwen, data_file):
    outs = []
    for name in ("a", "b"):
        res = runner.invoke(app, ["eval", "--model", str(tiny_qwen), "--data", str(data_file),
                                  "--out", str(tmp_path / name), "--n-boot", "30", "--limit", "20"])
        assert res.exit_code == 0, res.output
        outs.append((tmp_path / name / "metrics.json").read_bytes())
    assert outs[0] == outs[1]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_llama):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "options": ["a", "b"],
                                                "answer": 5}])
    out = tmp_path / "run"
    res = runner.invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(bad),
                              "--out", str(out)])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    assert f"{bad}, row 1, field 'answer'" in " ".join(res.output.split())
    assert not out.exists()


def test_skip_invalid_writes_rejected(tmp_path, tiny_llama):
    rows = items_to_rows(make_items(6))
    rows[2]["answer"] = 9
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "run"
    res = runner.invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(path),
                              "--out", str(out), "--skip-invalid", "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert rejected == [{"file": str(path), "row": 3, "field": "answer",
                         "reason": "answer index 9 out of range for 4 options (0-based)"}]
    assert json.loads((out / "metrics.json").read_text())["n"] == 5


def test_config_yaml_with_override(tmp_path, tiny_llama, data_file):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tiny_llama}\ndata: {data_file}\nlimit: 7\nn_boot: 0\n")
    res = runner.invoke(app, ["eval", "--config", str(cfg), "--limit", "5",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["n"] == 5
    cfg.write_text("modle: x\n")
    res = runner.invoke(app, ["eval", "--config", str(cfg)])
    assert res.exit_code == 2 and "unknown option(s) modle" in res.output


def test_report_overlays_runs(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 50)  # the same items, scored by two models
    for name, scale in (("aligned", 4.0), ("cft", 1.0)):
        s = OptionScores(rng.normal(size=(50, 4)) * scale, labels,
                         np.ones((50, 4), bool), [str(i) for i in range(50)])
        (tmp_path / name).mkdir()
        s.save(tmp_path / name / "scores.npz")
    res = runner.invoke(app, ["report", str(tmp_path / "aligned"), str(tmp_path / "cft"),
                              "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cmp" / "overlay.png").exists()
    assert "| aligned | 50 |" in (tmp_path / "cmp" / "compare.md").read_text()


# Every flag `calibtune eval/posthoc/train/report` had before options were generated from the
# configs, with a value; parsing them gives the config they always gave.
OLD_FLAGS = {
    "eval": ("--model m --data d.jsonl --split all --limit 5 --seed 2 --prompt chat --scoring "
             "cloze --cloze-norm token --adapter a --dtype bfloat16 --device cpu --batch-size 3 "
             "--max-batch-tokens 100 --bins 7 --n-boot 9 --chunk-size 11 --skip-invalid "
             "--question-field q --options-field a,b --answer-field ans --id-field i "
             "--subject-field s --answer-format letter --trust-remote-code --resume --out o"),
    "posthoc": ("--scores s.npz --method histogram --fit-fraction 0.3 --seed 2 --reference r.npz "
                "--scoring letter --bins 7 --n-boot 9 --out o"),
    "train": ("--model m --data d --split all --train-limit 5 --eval-data e --eval-split all "
              "--eval-limit 6 --epoch-eval-limit 3 --method rcft --sft-loss completion "
              "--sft-weight 0.5 --lambda 2 --n-bins 7 --ece-targets frozen --ece-reduction bin "
              "--sft-normalise sequence --estep-every-steps 4 --label-smoothing 0.2 --epochs 2 "
              "--max-steps 9 --batch-size 3 --grad-accum 2 --learning-rate 0.01 --lora-r 4 "
              "--lora-alpha 8 --lora-dropout 0.1 --lora-targets q_proj,v_proj --load-in-4bit "
              "--prompt reference --scoring letter --cloze-norm char --dtype bfloat16 "
              "--save-steps 5 --seed 3 --report-to tensorboard --resume --out o"),
}


def parse(command: str, args: list[str]):
    """The config (and extra values) `calibtune COMMAND ARGS` builds, without running it."""
    import typer

    from calibtune.cli import config_values
    from calibtune.config import build_config
    from calibtune.workflows.config import (CompareConfig, EvalConfig, PosthocConfig,
                                            TrainRunConfig)

    cls = {"eval": EvalConfig, "posthoc": PosthocConfig, "train": TrainRunConfig,
           "report": CompareConfig}[command]
    click_cmd = typer.main.get_command(app).commands[command]
    params = click_cmd.make_context(command, args).params
    return build_config(cls, None, config_values(cls, params)), params


def test_old_flags_still_parse_to_the_same_config():
    cfg, params = parse("eval", OLD_FLAGS["eval"].split())
    assert (cfg.model, cfg.limit, cfg.scoring, cfg.bins, cfg.n_boot, cfg.skip_invalid,
            cfg.trust_remote_code, cfg.max_batch_tokens) == ("m", 5, "cloze", 7, 9, True, True, 100)
    assert params["resume"] and params["options_field"] == "a,b"
    cfg, _ = parse("posthoc", OLD_FLAGS["posthoc"].split())
    assert (cfg.method, cfg.fit_fraction, cfg.bins, cfg.reference) == ("histogram", 0.3, 7, "r.npz")
    cfg, params = parse("train", OLD_FLAGS["train"].split())
    assert (cfg.ece_lambda, cfg.n_bins, cfg.ece_targets, cfg.load_in_4bit, cfg.lora_targets,
            cfg.eval_limit, cfg.epochs, cfg.report_to) == (2.0, 7, "frozen", True, "q_proj,v_proj",
                                                          6, 2.0, "tensorboard")
    assert params["resume"] and cfg.lora
    cfg, _ = parse("train", ["--full-finetune"])
    assert cfg.lora is False
    cfg, _ = parse("report", ["a", "b", "--bins", "7"])
    assert cfg.n_bins == 7


def test_n_bins_is_the_one_name_and_bins_a_hidden_alias():
    for command in ("eval", "posthoc", "report"):
        args = ["a"] if command == "report" else []
        cfg, _ = parse(command, args + ["--n-bins", "6"])
        assert getattr(cfg, "bins", getattr(cfg, "n_bins", None)) == 6
        shown = runner.invoke(app, [command, "--help"]).output
        assert "--n-bins" in shown and "--bins" not in shown.replace("--n-bins", "")


def test_every_config_field_is_an_option_declared_once():
    """The help text lives on the field; the CLI only reads it."""
    import dataclasses

    from calibtune.config import option_specs
    from calibtune.workflows.config import EvalConfig, PosthocConfig, TrainRunConfig

    for cls in (EvalConfig, PosthocConfig, TrainRunConfig):
        fields = {f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", True)}
        specs = option_specs(cls)
        assert {s.name for s in specs} == fields and all(s.help for s in specs)
