"""--num-fewshot through eval, posthoc, train and reproduce: exemplars recorded, never scored."""
import json

import numpy as np
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.scores import OptionScores
from calibtune.workflows.config import EvalConfig
from calibtune.workflows.eval import load_eval_items
from calibtune.workflows.train import run_training
from conftest import items_to_rows, make_items, tiny_train_config, write_jsonl, write_train_eval


def eval_args(model, data, out, *extra):
    return ["eval", "--model", str(model), "--data", str(data), "--out", str(out),
            "--n-boot", "0", *extra]


def test_eval_fewshot_run_records_its_exemplars(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "items.jsonl", items_to_rows(make_items(40)))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, eval_args(tiny_llama, data, out, "--limit", "12",
                                            "--num-fewshot", "2", "--fewshot-seed", "5"))
    assert res.exit_code == 0, res.output
    scores = OptionScores.load(out / "scores.npz")
    record = json.loads((out / "fewshot.json").read_text())
    assert record["num_fewshot"] == 2 and record["seed"] == 5
    assert set(record["groups"]) == set(scores.groups)
    exemplar_ids = {i for ids in record["groups"].values() for i in ids}
    assert not exemplar_ids & set(scores.ids.tolist())
    assert scores.meta["num_fewshot"] == 2
    # posthoc carries the provenance, and refuses scores made with another k
    post = CliRunner().invoke(app, ["posthoc", "--scores", str(out / "scores.npz"), "--out",
                                    str(tmp_path / "post"), "--n-boot", "0",
                                    "--num-fewshot", "2"])
    assert post.exit_code == 0, post.output
    assert "few-shot" in (tmp_path / "post" / "report.md").read_text()
    assert OptionScores.load(tmp_path / "post" / "scores.npz").meta["num_fewshot"] == 2
    bad = CliRunner().invoke(app, ["posthoc", "--scores", str(out / "scores.npz"), "--out",
                                   str(tmp_path / "post0"), "--num-fewshot", "0"])
    assert bad.exit_code == 2 and "2-shot" in bad.output


def test_fewshot_data_file_and_deterministic_draw(tmp_path):
    items = make_items(30)
    data = write_jsonl(tmp_path / "items.jsonl", items_to_rows(items[:12]))
    shots = items_to_rows(items[12:])
    for r in shots:
        r["id"] = "shot-" + r["id"]
    shot_file = write_jsonl(tmp_path / "shots.jsonl", shots)
    cfg = EvalConfig(data=str(data), num_fewshot=3, fewshot_data=str(shot_file))
    scored, _, fs = load_eval_items(cfg)
    assert len(scored) == 12 and fs.source == str(shot_file)
    assert all(ex.id.startswith("shot-") for exs in fs.exemplars.values() for ex in exs)
    assert load_eval_items(cfg)[2].to_json() == fs.to_json()


def test_too_many_shots_fail_in_one_line_before_loading_a_model(tmp_path):
    data = write_jsonl(tmp_path / "items.jsonl", items_to_rows(make_items(12)))
    res = CliRunner().invoke(app, eval_args("no-such-model", data, tmp_path / "run",
                                            "--limit", "9", "--num-fewshot", "2"))
    assert res.exit_code == 2
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "--num-fewshot 2" in lines[0], res.output
    assert not (tmp_path / "run").exists()


def test_zero_shot_eval_writes_no_fewshot_file(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "items.jsonl", items_to_rows(make_items(8)))
    res = CliRunner().invoke(app, eval_args(tiny_llama, data, tmp_path / "run"))
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "run" / "fewshot.json").exists()
    assert "num_fewshot" not in OptionScores.load(tmp_path / "run" / "scores.npz").meta


def test_train_scores_fewshot_in_the_estep_and_evaluations(tiny_llama, tmp_path):
    data = write_train_eval(tmp_path, make_items(18, seed=1), make_items(9, seed=2))
    shots = items_to_rows(make_items(12, seed=3))
    for r in shots:
        r["id"] = "shot-" + r["id"]
    shot_file = write_jsonl(tmp_path / "shots.jsonl", shots)
    cfg = tiny_train_config(tiny_llama, data, tmp_path, method="rcft", max_steps=2,
                            epoch_eval_limit=4, num_fewshot=2, fewshot_data=str(shot_file))
    result = run_training(cfg)
    record = json.loads((result.out / "fewshot.json").read_text())
    assert record["num_fewshot"] == 2 and record["source"] == str(shot_file)
    after = OptionScores.load(result.out / "eval" / "scores.npz")
    assert after.meta["num_fewshot"] == 2 and np.isfinite(after.logits).all()
    # the first E-step (step 0: the adapter is still the identity) read the training items after
    # the recorded exemplars: its bin table is the untouched model's few-shot one, not zero-shot's
    from calibtune.metrics import bin_table
    from calibtune.models import load_model
    from calibtune.training.finetune import config_scorer
    from calibtune.workflows.train import load_train_eval_items

    first = next(e for e in json.loads((result.out / "estep_history.json").read_text())
                 if e["step"] == 0)
    train_items, _, fewshot = load_train_eval_items(cfg)
    assert {g: [ex.id for ex in exs] for g, exs in fewshot.exemplars.items()} == record["groups"]
    model, tok = load_model(str(tiny_llama), device="cpu")

    def table(shots):
        s = config_scorer(cfg, model, tok, fewshot=shots).score(train_items)
        return bin_table(s.logits, s.labels, cfg.n_bins, mask=s.mask, from_logits=True)

    few, zero = table(fewshot), table(None)
    assert first["bins"]["count"] == few.count.tolist() and first["n"] == len(train_items) == 18
    np.testing.assert_allclose(np.array(first["bins"]["confidence"], dtype=float),
                               few.confidence, atol=1e-5, equal_nan=True)
    assert not np.allclose(np.nan_to_num(few.confidence), np.nan_to_num(zero.confidence),
                           atol=1e-3)


def test_reproduce_num_fewshot(tiny_llama, tmp_path):
    import yaml

    from calibtune.workflows.reproduce import execute, load_reproduce_config, plan

    for name, n, k, seed in (("train", 24, [4, 3], 21), ("in", 24, 4, 22), ("out", 15, 3, 23)):
        rows = items_to_rows(make_items(n, k=k, seed=seed))
        for r in rows:
            r["id"] = f"{name}-{r['id']}"
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
    config = {"name": "tiny", "model": str(tiny_llama),
              "train": {"data": str(tmp_path / "train.jsonl"), "limit": 8},
              "in_domain": {"data": str(tmp_path / "in.jsonl"), "limit": 6, "name": "in"},
              "out_of_domain": [{"data": str(tmp_path / "out.jsonl"), "limit": 5,
                                 "name": "out"}],
              "methods": ["aligned", "temperature", "cft"], "seeds": [0], "n_boot": 0,
              "training": {"max_steps": 1, "batch_size": 4, "lora_r": 4, "lora_alpha": 8,
                           "epoch_eval_limit": 0, "epoch_train_limit": 0}}
    zero = tmp_path / "zero.yaml"
    zero.write_text(yaml.safe_dump(config))
    for step in plan(load_reproduce_config(zero)):  # zero-shot digests as before
        assert "num_fewshot" not in step.key and "num_fewshot" not in step.key.get("train", {})
    few = tmp_path / "few.yaml"
    few.write_text(yaml.safe_dump(config | {"num_fewshot": 1}))
    cfg = load_reproduce_config(few)
    execute(cfg, tmp_path / "rep")
    steps = tmp_path / "rep" / "steps"
    aligned = OptionScores.load(steps / "score__aligned__in" / "scores.npz")
    trained = OptionScores.load(steps / "train__cft__s0" / "eval" / "scores.npz")
    assert aligned.meta["num_fewshot"] == trained.meta["num_fewshot"] == 1
    assert aligned.ids.tolist() == trained.ids.tolist()
    record = json.loads((steps / "train__cft__s0" / "fewshot.json").read_text())
    # the trained model's evaluation reads the exemplars the aligned model read
    from calibtune.data import draw_fewshot, load_dataset

    in_all = load_dataset(str(tmp_path / "in.jsonl")).items
    aligned_draw = draw_fewshot(cfg.in_domain.items(0), in_all, 1, 0).to_json()["groups"]
    assert record["seed"] == 0 and record["groups"] == aligned_draw
