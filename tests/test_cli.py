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
    assert (cfg.model, cfg.limit, cfg.scoring, cfg.n_bins, cfg.n_boot, cfg.skip_invalid,
            cfg.trust_remote_code, cfg.max_batch_tokens) == ("m", 5, "cloze", 7, 9, True, True, 100)
    assert params["resume"] and params["options_field"] == "a,b"
    cfg, _ = parse("posthoc", OLD_FLAGS["posthoc"].split())
    assert (cfg.method, cfg.fit_fraction, cfg.n_bins, cfg.reference) == ("histogram", 0.3, 7, "r.npz")
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
        assert cfg.n_bins == 6
        shown = runner.invoke(app, [command, "--help"]).output
        assert "--n-bins" in shown and "--bins" not in shown.replace("--n-bins", "")


# Names two configs declare separately because they mean different things there.
DIFFERENT_MEANING = {
    "data": "eval: the items scored; train/align: the training data",
    "split": "eval: no default split; train/align: the training split",
    "batch_size": "scoring: items per forward pass; training: per-device optimiser batch",
    "scoring": "posthoc: a check on saved scores (None: either), not how to make them",
    "num_fewshot": "posthoc: a check on saved scores (None: any), not exemplars to draw",
    "scores": "posthoc: one scores.npz; diagnose: a run folder or scores.npz, positional",
    "method": "posthoc: the calibrator; train: the training method",
    "fields": "eval: a data file's field names; --from table: its columns (YAML only)",
}


def cli_configs():
    from calibtune.align.config import AlignConfig
    from calibtune.workflows.config import (CompareConfig, DiagnoseConfig, EvalConfig,
                                            ImportConfig, PosthocConfig, PreferenceEvalConfig,
                                            ReproduceCommand, TrainRunConfig)

    return (EvalConfig, ImportConfig, PreferenceEvalConfig, PosthocConfig, TrainRunConfig,
            AlignConfig, CompareConfig, DiagnoseConfig, ReproduceCommand)


def test_every_config_field_is_an_option_declared_once():
    """The help text lives on the field; the CLI only reads it. A name shared by two commands
    (train and align's optimiser, every command's --seed and --n-bins) is declared by one class
    they both inherit; a subclass may only change its default (`options.inherit`)."""
    import collections
    import dataclasses

    from calibtune.config import option_specs

    declared = collections.defaultdict(set)
    for cls in cli_configs():
        fields = {f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", True)}
        specs = option_specs(cls)
        assert {s.name for s in specs} == fields and all(s.help for s in specs), cls
        for klass in cls.__mro__:
            for name in klass.__dict__.get("__annotations__", {}):
                field = getattr(klass, "__dataclass_fields__", {}).get(name)
                if field is not None and not field.metadata.get("inherited"):
                    declared[name].add(klass.__qualname__)
    repeated = {name: sorted(owners) for name, owners in declared.items() if len(owners) > 1}
    assert set(repeated) == set(DIFFERENT_MEANING), repeated


# ---- every option reaches its workflow config (or is refused), found by introspection ----
SKIP = {"verbose", "config", "resume", "overwrite", "more_seeds"}  # not config fields
EVAL_JOBS = {"score": [], "import": ["--from", "table", "t.csv"],
             "preferences": ["--preferences", "p.jsonl"]}


def sample_args(param):
    """A command line giving `param` a recognisable value, and the value a field should get."""
    if param.param_type_name == "argument":
        return ["zz1"], ["zz1"] if param.nargs == -1 else "zz1"
    flag = param.opts[0]
    if param.is_flag:
        return [flag], True
    if param.nargs == 2:
        return [flag, "table", "zz.csv"], ("table", "zz.csv")
    kind = str(param.type_descriptor.annotation)  # typer's record of the parameter's type
    if "int" in kind:
        return [flag, "7"], [7] if "list" in kind else 7
    if "float" in kind:
        return [flag, "0.37"], 0.37
    return [flag, "zz1"], "zz1"


def given_to_workflow(monkeypatch, args):
    """(config class, field values) that `calibtune ARGS` hands to its config, or the error."""
    import calibtune.cli as cli

    seen = {}

    def capture(cls, path, values):
        seen.update(cls=cls, values=values)
        raise cli.ConfigError("captured")

    monkeypatch.setattr(cli, "build_config", capture)
    res = runner.invoke(app, args)
    return seen.get("cls"), seen.get("values"), res.output


def test_every_option_of_every_command_reaches_its_workflow_config(monkeypatch):
    import dataclasses

    import typer

    commands = typer.main.get_command(app).commands
    checked = 0
    for name, command in commands.items():
        if name == "models":
            continue
        positional = [p for p in command.params if p.param_type_name == "argument"
                      and p.name not in SKIP]
        base = [sample_args(p)[0][0] for p in positional]
        for param in command.params:
            if param.name in SKIP or param in positional:
                continue
            args, value = sample_args(param)
            reached, refused = [], []
            for job, selector in (EVAL_JOBS.items() if name == "eval" else [("", [])]):
                if param.name in ("from_source", "preferences") and selector:
                    continue  # the job selectors themselves
                cls, values, output = given_to_workflow(monkeypatch,
                                                        [name, *base, *selector, *args])
                if "does not apply" in output:
                    refused.append(job)
                    continue
                assert cls is not None, f"{name} {args}: no config built ({output})"
                fields = {f.name for f in dataclasses.fields(cls)}
                got = [k for k, v in values.items() if k in fields and (
                    v == value or (isinstance(v, dict) and value in v.values())
                    or (param.name == "from_source" and (values["source"], values["path"]) == value)
                    or (getattr(param, "secondary_opts", None) and v is False and value is True))]
                assert got, f"calibtune {name} {' '.join(args)}: the value reaches no field " \
                            f"of {cls.__name__}"
                reached.append(job)
            assert reached, f"calibtune {name} {param.opts}: refused by every job"
            checked += 1
    assert checked > 150  # every command's options were visited


def test_an_option_a_job_cannot_use_is_refused_in_one_line(monkeypatch):
    for args, flag in ((["--preferences", "p.jsonl", "--scoring", "cloze"], "--scoring"),
                       (["--kind", "prob"], "--kind"),
                       (["--from", "table", "t.csv", "--num-fewshot", "2"], "--num-fewshot")):
        res = runner.invoke(app, ["eval", *args])
        assert res.exit_code == 2 and f"{flag} does not apply" in res.output, res.output
        assert len([x for x in res.output.splitlines() if x.strip()]) == 1


def test_compare_is_the_command_and_report_a_deprecated_alias(tmp_path):
    import re

    shown = runner.invoke(app, ["--help"]).output
    assert re.search(r"^\s+compare\s", shown, re.M) and not re.search(r"^\s+report\s", shown, re.M)
    res = runner.invoke(app, ["report", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert "`calibtune report` is now `calibtune compare`" in res.output


def test_help_is_readable_on_80_columns():
    import os
    import subprocess
    import sys

    env = dict(os.environ, COLUMNS="80", TERMINAL_WIDTH="80")
    text = subprocess.run([sys.executable, "-m", "calibtune", "train", "--help"], env=env,
                          capture_output=True, text=True, check=True).stdout
    lines = [x for x in text.splitlines() if "Peak learning rate" in x]
    assert lines and all(len(x) <= 80 for x in text.splitlines())
    # the help column starts within the first 40 columns, so it is at least 40 wide
    assert lines[0].index("Peak") <= 40, lines[0]


def test_from_table_limit_reads_the_first_n_items(tmp_path):
    rows = "".join(f"i{n},{n % 3},-1.0,-{1 + n % 4}.5,-2.0\n" for n in range(12))
    table = tmp_path / "t.csv"
    table.write_text("id,label,option_0,option_1,option_2\n" + rows)
    out = tmp_path / "imp"
    res = runner.invoke(app, ["eval", "--from", "table", str(table), "--limit", "5",
                              "--n-boot", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["n"] == 5
    assert OptionScores.load(out / "scores.npz").ids.tolist() == [f"i{n}" for n in range(5)]


def test_an_old_bins_key_is_read_as_n_bins(tmp_path):
    from calibtune.config import build_config
    from calibtune.run_guard import config_differences
    from calibtune.workflows.config import EvalConfig, PosthocConfig

    (tmp_path / "c.yaml").write_text("bins: 7\n")
    for cls in (EvalConfig, PosthocConfig):
        assert build_config(cls, tmp_path / "c.yaml", {}).n_bins == 7
    # a run folder saved with `bins:` is compared under the current name on --resume
    assert config_differences({"bins": 7, "seed": 0}, {"n_bins": 10, "seed": 0}) == \
        ["n_bins: 7 → 10"]
    assert config_differences({"bins": 10}, {"n_bins": 10}) == []
