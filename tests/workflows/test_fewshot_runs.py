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
    assert (result.out / "estep_history.json").exists()
