"""Run folders and imports as untrusted input (docs/reliability.md): every fault is one line,
never a traceback.

A scores.npz cut short, hand-made, pickled or of a newer format; a metrics.json or train_log.json
edited by hand; an import file of the wrong shape: `posthoc`, `compare`, `diagnose` and
`eval --from` print one line naming the file and what is wrong, exit 2 and write nothing.
"""
import json
import os
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.scores import OptionScores

runner = CliRunner()


def one_line_error(args, *must):
    res = runner.invoke(app, args)
    text = res.output.strip()
    assert res.exit_code == 2, text
    assert "\n" not in text and "Traceback" not in text and text.startswith("error: "), text
    flat = " ".join(text.split())
    for fragment in must:
        assert fragment in flat, flat
    return flat


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """An eval run folder imported from a table of 40 items (no model)."""
    root = tmp_path_factory.mktemp("saved")
    rng = np.random.default_rng(0)
    rows = [{"id": f"i{i}", "label": int(rng.integers(4)),
             **{f"option_{j}": float(rng.normal()) for j in range(4)}} for i in range(40)]
    (root / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["eval", "--from", "table", str(root / "t.jsonl"), "--out",
                              str(root / "good"), "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    return root / "good"


def rewrite(path, **changes):
    """The scores.npz at `path` with arrays replaced (None: removed), as np.savez writes it."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    path.unlink()
    np.savez(path, **arrays)


class Marker:
    """Unpickling this touches a file: the proof that nothing was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


SCORES_FAULTS = {  # damage to scores.npz: (how, what the one line says)
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
                  "unreadable scores file, truncated or not written by calibtune"),
    "empty": (lambda p: p.write_bytes(b""), "unreadable scores file"),
    "not_an_archive": (lambda p: p.write_text("logits,labels\n1,2\n"), "not an .npz archive"),
    "pickled_objects": (lambda p: rewrite(p, ids=np.array([Marker(p.parent / "pwned")] * 40,
                                                          dtype=object)),
                        "Python objects, which calibtune never unpickles"),
    "newer_format": (lambda p: rewrite(p, format=np.array(2)),
                     "written by a newer calibtune (scores format 2; this version reads format 1)"),
    "other_schema": (lambda p: rewrite(p, logits=None, scores=np.zeros((40, 4))),
                     "not a calibtune scores file (missing logits)"),
    "float_labels": (lambda p: rewrite(p, labels=np.full(40, 1.5)),
                     "labels holds float64, expected integer option indices"),
    "int_mask": (lambda p: rewrite(p, mask=np.full((40, 4), 7)),
                 "mask holds int64, expected booleans"),
    "label_out_of_range": (lambda p: rewrite(p, labels=np.full(40, 7)),
                           "label 7 in row 0 is out of range for 4 options"),
    "nan_logits": (lambda p: rewrite(p, logits=np.full((40, 4), np.nan)), "holds NaN or inf"),
    "meta_not_an_object": (lambda p: rewrite(p, meta=np.array("[1, 2]")),
                           "meta is not a JSON object"),
    "ids_of_other_length": (lambda p: rewrite(p, ids=np.array(["a", "b"])),
                            "inconsistent OptionScores shapes"),
    "no_items": (lambda p: rewrite(p, logits=np.zeros((0, 4)), labels=np.zeros(0, int),
                                   mask=np.ones((0, 4), bool), ids=np.array([], dtype=str),
                                   groups=None), "no items"),
}


@pytest.mark.parametrize("command", ["posthoc", "compare", "diagnose"])
@pytest.mark.parametrize("fault", sorted(SCORES_FAULTS))
def test_a_damaged_scores_file_is_one_line(fault, command, good, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good, run)
    damage, says = SCORES_FAULTS[fault]
    damage(run / "scores.npz")
    out = tmp_path / "out"
    args = {"posthoc": ["posthoc", "--scores", str(run / "scores.npz"), "--out", str(out)],
            "compare": ["compare", str(good), str(run), "--out", str(out)],
            "diagnose": ["diagnose", str(run), "--out", str(out)]}[command]
    one_line_error(args, f"{run / 'scores.npz'}: ", says)
    assert not out.exists()
    assert not (run / "pwned").exists()


# ---- a training run folder's JSON files, edited by hand ----------------------------------------

def epoch_entry(step):
    point = {"accuracy": 0.4, "accuracy_ci": [0.3, 0.5], "confidence": 0.6, "ece": 0.2,
             "ece_ci": [0.1, 0.3], "noise_q95": 0.1, "n": 40}
    return {"epoch": float(step), "step": step, **{f"heldout_{k}": v for k, v in point.items()},
            **{f"train_{k}": v for k, v in point.items()}}


@pytest.fixture(scope="module")
def train_run(good, tmp_path_factory):
    """A training run folder as `calibtune train` writes it (what `report --plane` and
    `diagnose --train-run` read), made without training."""
    run = tmp_path_factory.mktemp("train") / "run"
    shutil.copytree(good, run / "eval")
    shutil.copytree(good, run / "eval_before")
    (run / "train_log.json").write_text(json.dumps([{"loss": 1.0, "step": 1}, epoch_entry(1),
                                                    epoch_entry(2)]))
    (run / "summary.json").write_text(json.dumps({"method": "cft"}))
    return run


def edit_json(path, change):
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


TRAIN_FAULTS = {  # (file, how, what the one line says)
    "metrics_not_json": ("eval/metrics.json", lambda p: p.write_text('{"accuracy": 0.4,'),
                         "not valid JSON"),
    "metrics_missing_key": ("eval/metrics.json",
                            lambda p: edit_json(p, lambda m: {k: v for k, v in m.items()
                                                              if k != "accuracy"}),
                            "field 'accuracy' is missing, expected a number"),
    "metrics_wrong_type": ("eval_before/metrics.json",
                           lambda p: edit_json(p, lambda m: m | {"ece": "low"}),
                           "field 'ece' is \"low\", expected a number"),
    "metrics_bad_interval": ("eval/metrics.json",
                             lambda p: edit_json(p, lambda m: m | {"ci": {"accuracy": [1, 2]}}),
                             "field 'ci.accuracy' is not a JSON object"),
    "metrics_a_list": ("eval/metrics.json", lambda p: p.write_text("[]"),
                       "expected a JSON object, got list"),
    "log_an_object": ("train_log.json", lambda p: p.write_text("{}"),
                      "expected a JSON list, got dict"),
    "log_entry_a_number": ("train_log.json", lambda p: p.write_text("[1]"),
                           "entry 1 is int, expected an object"),
    "log_wrong_type": ("train_log.json",
                       lambda p: edit_json(p, lambda log: log[:2] + [epoch_entry(2) | {
                           "train_accuracy": [0.5]}]),
                       "entry 3: field 'train_accuracy' is [0.5], expected a number"),
    "log_bad_interval": ("train_log.json",
                         lambda p: edit_json(p, lambda log: log[:1] + [epoch_entry(1) | {
                             "heldout_ece_ci": [0.1]}]),
                         "entry 2: field 'heldout_ece_ci' is [0.1], expected [low, high]"),
    "summary_cut_short": ("summary.json", lambda p: p.write_text('{"meth'), "not valid JSON"),
}


def test_the_intact_train_folder_is_read(train_run, tmp_path):
    res = runner.invoke(app, ["compare", str(train_run), "--plane", "--out", str(tmp_path / "o"),
                              "--n-boot", "10"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["diagnose", str(train_run), "--train-run", str(train_run),
                              "--out", str(tmp_path / "d"), "--n-boot", "10"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("fault", sorted(TRAIN_FAULTS))
def test_a_train_folder_file_edited_by_hand_is_one_line(fault, train_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(train_run, run)
    name, damage, says = TRAIN_FAULTS[fault]
    damage(run / name)
    out = tmp_path / "out"
    one_line_error(["compare", str(run), "--plane", "--out", str(out), "--n-boot", "10"],
                   f"{run / name}: ", says)
    assert not out.exists()
    if fault in ("log_an_object", "log_entry_a_number", "log_wrong_type"):  # what diagnose reads
        one_line_error(["diagnose", str(train_run), "--train-run", str(run), "--out", str(out)],
                       f"{run / name}: ")
        assert not out.exists()


# ---- import files of the wrong shape --------------------------------------------------------

SAMPLE = {"doc_id": 0, "target": 0, "filtered_resps": [["-1.0", "False"], ["-2.0", "False"]]}
SAMPLES_NAME = "samples_mmlu_x_2024-01-01T00-00-00.jsonl"
IMPORT_FAULTS = {  # (source, file name, content, what the one line says)
    "table_a_json_array": ("table", "t.jsonl", json.dumps([{"id": "a", "label": 0}]) + "\n",
                           "row 1: expected a JSON object, got list"),
    "table_no_label": ("table", "t.csv", "id,option_0,option_1\na,1,2\n",
                       "row 1, field 'label': missing field"),
    "table_no_option_columns": ("table", "t.csv", "id,label,x,y\na,0,1,2\n",
                                "no option columns found"),
    "table_object_score": ("table", "t.jsonl", json.dumps({"id": "a", "label": 0, "option_0":
                                                          {"p": 1}, "option_1": 2}) + "\n",
                           "field 'option_0': expected a number, got dict"),
    "table_not_parquet": ("table", "t.parquet", "id,label\n", "unreadable Parquet"),
    "lm_eval_a_json_array": ("lm-eval", SAMPLES_NAME, json.dumps([SAMPLE]) + "\n",
                             "row 1: expected a JSON object, got list"),
    "lm_eval_doc_id_a_list": ("lm-eval", SAMPLES_NAME, json.dumps(SAMPLE | {"doc_id": [0]}) + "\n",
                              "field 'doc_id': doc_id must be a number or text, got list"),
    "lm_eval_resps_an_object": ("lm-eval", SAMPLES_NAME,
                                json.dumps(SAMPLE | {"filtered_resps": {"a": 1}}) + "\n",
                                "no filtered_resps or resps list"),
    "lm_eval_results_file_given": ("lm-eval", "results_2024-01-01T00-00-00.json",
                                   json.dumps({"results": {}}), "not an lm-eval samples file"),
}


@pytest.mark.parametrize("fault", sorted(IMPORT_FAULTS))
def test_an_import_file_of_the_wrong_shape_is_one_line(fault, tmp_path):
    source, name, content, says = IMPORT_FAULTS[fault]
    path = tmp_path / name
    path.write_text(content)
    out = tmp_path / "out"
    one_line_error(["eval", "--from", source, str(path), "--out", str(out), "--n-boot", "0"],
                   str(path), says)
    assert not out.exists()


def test_an_lm_eval_results_file_of_another_shape_is_metadata_ignored(tmp_path):
    """The results JSON beside the samples holds only metadata: fields of another shape
    (an edited file, another lm-eval version) count as absent, the scores import as usual."""
    (tmp_path / SAMPLES_NAME).write_text(json.dumps(SAMPLE) + "\n")
    (tmp_path / "results_2024-01-01T00-00-00.json").write_text(json.dumps(
        {"results": {}, "configs": [1], "config": "x", "versions": [1], "n-shot": 3}))
    res = runner.invoke(app, ["eval", "--from", "lm-eval", str(tmp_path), "--out",
                              str(tmp_path / "out"), "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    scores = OptionScores.load(tmp_path / "out" / "scores.npz")  # the sample's numbers
    np.testing.assert_allclose(scores.logits, [[-1.0, -2.0]])
    assert scores.labels.tolist() == [0] and len(scores) == 1
