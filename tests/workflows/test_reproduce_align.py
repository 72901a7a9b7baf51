"""`calibtune reproduce` with `calibration_weights`: DPO and DPO + λ·ECE rows from the same start
model and pairs, scored on the same items as every other row; bad keys refused."""
import json

import numpy as np
import pytest
import yaml

from calibtune.errors import ConfigError
from calibtune.workflows.reproduce import describe_plan, execute, load_reproduce_config
from calibtune.workflows.reproduce import run_reproduce

from conftest import items_to_rows, make_items, write_jsonl


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama):
    folder = tmp_path_factory.mktemp("reproduce-align")
    write_jsonl(folder / "train.jsonl", items_to_rows(make_items(8, k=[4, 3], seed=21)))
    for name, seed in (("in", 22), ("out", 23)):
        rows = items_to_rows(make_items(6, k=3 if name == "out" else 4, seed=seed))
        for r in rows:
            r["id"] = f"{name}-{r['id']}"
        write_jsonl(folder / f"{name}.jsonl", rows)
    config = {"name": "tiny-align", "model": str(tiny_llama),
              "train": {"data": str(folder / "train.jsonl")},
              "in_domain": {"data": str(folder / "in.jsonl"), "name": "in", "limit": 4},
              "out_of_domain": [{"data": str(folder / "out.jsonl"), "name": "out"}],
              "methods": ["aligned"], "calibration_weights": [2.0],
              "alignment": {"max_steps": 2, "batch_size": 4, "lora_r": 4, "lora_alpha": 8,
                            "learning_rate": 0.01, "save_steps": 1},
              "seeds": [1], "n_boot": 10}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


@pytest.mark.slow
def test_dpo_and_calibrated_dpo_rows_train_on_the_same_pairs(setup, tmp_path):
    import torch

    path, _ = setup
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        text = run_reproduce(path, out=tmp_path / "rep")
    finally:
        torch.set_num_threads(n)
    assert "| dpo |" in text and "| dpo_ece2 |" in text
    steps = tmp_path / "rep" / "steps"
    cells = {(c["method"], c["split"]): c
             for c in json.loads((tmp_path / "rep" / "results.json").read_text())["cells"]}
    assert set(cells) == {(m, s) for m in ("aligned", "dpo", "dpo_ece2") for s in ("in", "out")}
    assert cells[("dpo_ece2", "in")]["n"] == 4 and cells[("dpo", "out")]["delta"] is not None
    plain, calibrated = steps / "align__dpo__s1", steps / "align__dpo_ece2__s1"
    for run, weight in ((plain, 0.0), (calibrated, 2.0)):
        assert json.loads((run / "summary.json").read_text())["calibration_weight"] == weight
    assert (plain / "train_pairs.jsonl").read_text() == (calibrated / "train_pairs.jsonl").read_text()
    assert (calibrated / "estep_history.json").exists() and not (plain / "estep_history.json").exists()
    # both rows read the aligned model's items (EVAL_SEED), not the seed-1 sample align draws
    aligned = np.load(steps / "score__aligned__in" / "scores.npz")["ids"]
    for row in ("dpo", "dpo_ece2"):
        assert np.load(steps / f"score__{row}__s1__in" / "scores.npz")["ids"].tolist() == \
            aligned.tolist()
    a = np.load(steps / "score__dpo__s1__in" / "scores.npz")["logits"]
    b = np.load(steps / "score__dpo_ece2__s1__in" / "scores.npz")["logits"]
    assert np.abs(a - b).max() > 1e-4  # the term changed the adapter
    assert {o.status for o in execute(load_reproduce_config(path), tmp_path / "rep")} == {"done"}


def test_the_plan_lists_the_align_steps(setup):
    path, _ = setup
    plan = describe_plan(load_reproduce_config(path))
    assert "methods aligned, dpo, dpo_ece2" in plan
    for step in ("align/dpo/s1", "align/dpo_ece2/s1", "score/dpo_ece2/s1/in", "score/dpo/s1/out"):
        assert step in plan


@pytest.mark.parametrize("change, match", [
    ({"calibration_weights": [-1]}, "calibration_weights: give a list of finite numbers"),
    ({"calibration_weights": 2}, "calibration_weights: give a list"),
    ({"alignment": {"nonsense": 1}}, "unknown align option"),
    ({"alignment": {"calibration_weight": 1}}, "set by reproduce itself"),
    ({"calibration_weights": [], "alignment": {"beta": 0.2}}, "set calibration_weights too"),
    ({"num_fewshot": 2}, "align trains zero-shot"),
])
def test_bad_align_keys_are_refused_with_one_line(setup, tmp_path, change, match):
    _, config = setup
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(dict(config, **change)))
    with pytest.raises(ConfigError, match=match) as err:
        load_reproduce_config(path)
    assert "\n" not in str(err.value)
