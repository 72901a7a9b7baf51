"""lm-eval --log_samples output into OptionScores: hand-written files in the 0.4.x format, and
(slow) a real lm-eval 0.4.13 run on a tiny model checked against calibtune's own cloze scores."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibtune.errors import DataError
from calibtune.interop.lm_eval import load_lm_eval_samples, parse_samples_name

DATE = "2025-03-04T10-11-12.345678"
OLD_DATE = "2025-03-01T09-00-00.000001"


def sample(doc_id, context, choices, lls, target, *, delimiter=" ", filter_name="none",
           greedy=None):
    """One line as lm-eval 0.4.13's EvaluationTracker.save_results_samples writes it."""
    greedy = greedy or [False] * len(lls)
    pairs = [[str(ll), str(g)] for ll, g in zip(lls, greedy)]
    return {"doc_id": doc_id,
            "doc": {"question": context, "choices": choices, "answer": target},
            "target": str(target),
            "arguments": {f"gen_args_{i}": {"arg_0": context, "arg_1": f"{delimiter}{c}"}
                          for i, c in enumerate(choices)},
            "resps": [[p] for p in pairs], "filtered_resps": pairs, "filter": filter_name,
            "metrics": ["acc", "acc_norm"], "doc_hash": "d" * 64, "prompt_hash": "p" * 64,
            "target_hash": "t" * 64, "acc": 0.0, "acc_norm": 0.0}


def results_json(tasks, model="org/tiny-model", delimiter=" "):
    return {"results": {t: {"alias": t, "acc,none": 0.5} for t in tasks},
            "group_subtasks": {t: [] for t in tasks},
            "configs": {t: {"task": t, "output_type": "multiple_choice", "num_fewshot": 0,
                            "target_delimiter": delimiter, "fewshot_delimiter": "\n\n"}
                        for t in tasks},
            "versions": {t: 1.0 for t in tasks}, "n-shot": {t: 0 for t in tasks},
            "config": {"model": "hf", "model_args": {"pretrained": model, "dtype": "float32"},
                       "batch_size": "4"},
            "git_hash": "abc1234", "date": 1741083072.0, "lm_eval_version": "0.4.13",
            "transformers_version": "5.0.0", "model_source": "hf", "model_name": model,
            "model_name_sanitized": model.replace("/", "__")}


def write_lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


TASK_A = [  # four choices, index targets, one doc logged out of order
    sample(1, "Q: b?\nA:", ["cat", "dog", "eel", "fox"], [-4.0, -1.5, -3.0, -2.0], 1),
    sample(0, "Q: a?\nA:", ["red", "green", "blue", "ochre"], [-1.0, -2.0, -3.0, -4.5], 3),
]
TASK_B = [  # two or three choices; targets as text and as a letter
    sample(0, "Q: c?\nA:", ["yes", "no"], [-0.2, -1.9], "no"),
    sample(1, "Q: d?\nA:", ["A", "B", "C"], [-1.0, -0.5, -2.5], "C"),
    sample(2, "Q: e?\nA:", ["über", "x", "naïve"], [-6.0, -2.0, -7.5], 0),
]


@pytest.fixture
def run_folder(tmp_path):
    """<output_path>/<model_name_sanitized>/{results,samples_*}_<date>.* plus an older run."""
    folder = tmp_path / "out" / "org__tiny-model"
    write_lines(folder / f"samples_task_a_{DATE}.jsonl", TASK_A)
    write_lines(folder / f"samples_mmlu_b_{DATE}.jsonl", TASK_B)
    (folder / f"results_{DATE}.json").write_text(json.dumps(results_json(["task_a", "mmlu_b"])))
    write_lines(folder / f"samples_task_a_{OLD_DATE}.jsonl",  # older run: skipped
                [sample(0, "Q", ["x", "y"], [-1.0, -1.0], 0)])
    return tmp_path / "out"


def test_folder_with_two_tasks(run_folder):
    s = load_lm_eval_samples(run_folder)
    assert s.ids.tolist() == ["mmlu_b/0", "mmlu_b/1", "mmlu_b/2", "task_a/0", "task_a/1"]
    assert s.labels.tolist() == [1, 2, 0, 3, 1]
    assert s.mask.sum(1).tolist() == [2, 3, 3, 4, 4]
    np.testing.assert_allclose(s.logits[0], [-0.2, -1.9, 0.0, 0.0])
    np.testing.assert_allclose(s.logits[3], [-1.0, -2.0, -3.0, -4.5])
    np.testing.assert_allclose(s.logits[4], [-4.0, -1.5, -3.0, -2.0])
    m = s.meta
    assert m["source"] == "lm_eval" and m["model"] == "org/tiny-model"
    assert m["lm_eval_version"] == "0.4.13" and m["norm"] == "none"
    assert m["tasks"]["task_a"]["git_hash"] == "abc1234" and m["tasks"]["task_a"]["n"] == 2
    assert m["tasks"]["mmlu_b"]["num_fewshot"] == 0
    assert len(m["skipped_files"]) == 1 and OLD_DATE in m["skipped_files"][0]
    json.dumps(m)
    assert load_lm_eval_samples(run_folder, tasks=["task_a"]).ids.tolist() == ["task_a/0", "task_a/1"]


def test_single_file_without_results_json(tmp_path):
    f = write_lines(tmp_path / f"samples_task_a_{DATE}.jsonl", TASK_A)
    s = load_lm_eval_samples(f)
    assert s.ids.tolist() == ["task_a/0", "task_a/1"] and s.meta["model"] is None
    assert s.meta["results_files"] == []


def test_length_normalisation_matches_acc_norm_and_acc_bytes(run_folder):
    lls = np.array([-6.0, -2.0, -7.5])
    choices = ["über", "x", "naïve"]
    s = load_lm_eval_samples(run_folder, tasks=["mmlu_b"], norm="char")
    np.testing.assert_allclose(s.logits[2, :3], lls / [len(c) for c in choices])
    s = load_lm_eval_samples(run_folder, tasks=["mmlu_b"], norm="byte")
    np.testing.assert_allclose(s.logits[2, :3], lls / [len(c.encode()) for c in choices])
    assert s.meta["norm"] == "byte"


def test_custom_target_delimiter_from_results(tmp_path):
    folder = tmp_path / "m"
    write_lines(folder / f"samples_t_{DATE}.jsonl",
                [sample(0, "Q", ["ab", "abcd"], [-2.0, -2.0], "abcd", delimiter="\n")])
    (folder / f"results_{DATE}.json").write_text(json.dumps(results_json(["t"], delimiter="\n")))
    s = load_lm_eval_samples(folder, norm="char")
    np.testing.assert_allclose(s.logits[0], [-1.0, -0.5])
    assert s.labels.tolist() == [1]


def test_tolerated_value_forms(tmp_path):
    rows = [sample(0, "Q", ["a", "b"], [-1.0, -2.0], 0), sample(1, "Q", ["a", "b"], [-3.0, -1.0], 1)]
    rows[0]["filtered_resps"] = ["(-1.0, False)", "(-2.0, True)"]  # stringified tuples
    rows[1]["filtered_resps"] = [[-3.0, False], [-1.0, True]]  # raw numbers (in-memory form)
    rows[1]["arguments"] = [["Q", " a"], ["Q", " b"]]
    del rows[1]["filter"]
    f = write_lines(tmp_path / "samples_t.jsonl", rows)  # no date in the name
    assert parse_samples_name(f) == ("t", None)
    s = load_lm_eval_samples(f)
    np.testing.assert_allclose(s.logits, [[-1.0, -2.0], [-3.0, -1.0]])
    rows[0].pop("filtered_resps")  # falls back to resps
    s = load_lm_eval_samples(write_lines(tmp_path / "samples_u.jsonl", rows))
    np.testing.assert_allclose(s.logits[0], [-1.0, -2.0])


def test_mutual_info_unconditional_half_is_dropped(tmp_path):
    row = sample(0, "Q", ["a", "b", "", ""], [-1.0, -2.0, -0.5, -0.7], 1)
    row["arguments"] = {"gen_args_0": {"arg_0": "Q", "arg_1": " a"},
                        "gen_args_1": {"arg_0": "Q", "arg_1": " b"},
                        "gen_args_2": {"arg_0": "", "arg_1": " a"},
                        "gen_args_3": {"arg_0": "", "arg_1": " b"}}
    s = load_lm_eval_samples(write_lines(tmp_path / f"samples_t_{DATE}.jsonl", [row]))
    np.testing.assert_allclose(s.logits, [[-1.0, -2.0]])
    assert s.meta["tasks"]["t"]["mutual_info_dropped"] is True


def test_filters(tmp_path):
    rows = [sample(0, "Q", ["a", "b"], [-1.0, -2.0], 0, filter_name="f1"),
            sample(0, "Q", ["a", "b"], [-5.0, -2.0], 0, filter_name="f2")]
    f = write_lines(tmp_path / f"samples_t_{DATE}.jsonl", rows)
    with pytest.raises(DataError, match="several filters \\(f1, f2\\)"):
        load_lm_eval_samples(f)
    np.testing.assert_allclose(load_lm_eval_samples(f, filter_name="f2").logits, [[-5.0, -2.0]])
    with pytest.raises(DataError, match="no samples with filter 'f3'"):
        load_lm_eval_samples(f, filter_name="f3")


@pytest.mark.parametrize("mutate,match,field", [
    (lambda r: r.update(filtered_resps=["B", "C"], resps=[["B"], ["C"]]),
     "not a log-likelihood: 'B' \\(only multiple-choice tasks", "filtered_resps[0]"),
    (lambda r: r.update(target="[0, 1]"), "multiple gold targets", "target"),
    (lambda r: r.update(target="7"), "gold index 7 out of range for 2 choices", "target"),
    (lambda r: r.update(target="maybe"), "neither an index, a letter nor one of the choices",
     "target"),
    (lambda r: r.pop("doc_id"), "missing field", "doc_id"),
    (lambda r: r.pop("target"), "missing field", "target"),
    (lambda r: r.update(filtered_resps=[["nan", "False"], ["-1", "False"]]), "must be finite",
     "filtered_resps[0]"),
])
def test_bad_samples_raise_one_line_errors(tmp_path, mutate, match, field):
    row = sample(0, "Q", ["a", "b"], [-1.0, -2.0], 0)
    mutate(row)
    f = write_lines(tmp_path / f"samples_t_{DATE}.jsonl", [sample(1, "Q", ["a", "b"], [-1, -2], 1), row])
    with pytest.raises(DataError, match=match) as err:
        load_lm_eval_samples(f)
    assert (err.value.file, err.value.row, err.value.field) == (str(f), 2, field)
    assert "\n" not in str(err.value)


def test_norm_needs_arguments_and_folder_errors(tmp_path):
    row = sample(0, "Q", ["a", "b"], [-1.0, -2.0], 0)
    del row["arguments"]
    f = write_lines(tmp_path / f"samples_t_{DATE}.jsonl", [row])
    assert load_lm_eval_samples(f).labels.tolist() == [0]
    with pytest.raises(DataError, match="needs the logged arguments"):
        load_lm_eval_samples(f, norm="char")
    with pytest.raises(DataError, match="norm must be"):
        load_lm_eval_samples(f, norm="token")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no lm-eval samples"):
        load_lm_eval_samples(tmp_path / "empty")
    with pytest.raises(DataError, match="not an lm-eval samples file"):
        load_lm_eval_samples(write_lines(tmp_path / "other.jsonl", [row]))
    with pytest.raises(DataError, match="not found"):
        load_lm_eval_samples(tmp_path / "missing")


def test_two_models_with_the_same_task_are_refused(run_folder):
    other = run_folder / "org__other"
    write_lines(other / f"samples_task_a_{DATE}.jsonl", TASK_A)
    with pytest.raises(DataError, match="two runs of task 'task_a'"):
        load_lm_eval_samples(run_folder)
    assert len(load_lm_eval_samples(other)) == 2


@pytest.mark.slow
def test_real_lm_eval_log_samples_equal_calibtune_cloze(tiny_qwen, tmp_path):
    """Run lm-eval 0.4.13's CLI with --log_samples on a tiny model; import; compare."""
    from lm_eval_task import write_lm_eval_task
    from calibtune.models import load_model
    from calibtune.scoring import make_scorer
    from conftest import make_items

    cloze_items = make_items(8, k=[3, 4, 5], seed=5)  # differing numbers of choices → mask
    letter_items = make_items(5, k=4, seed=6)
    write_lm_eval_task(cloze_items, tmp_path / "tasks", "ct_cloze", "cloze")
    write_lm_eval_task(letter_items, tmp_path / "tasks", "ct_letter", "letter")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"))
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
           "--model_args", f"pretrained={tiny_qwen},dtype=float32",
           "--tasks", "ct_cloze,ct_letter", "--include_path", str(tmp_path / "tasks"),
           "--device", "cpu", "--batch_size", "4", "--output_path", str(tmp_path / "out"),
           "--log_samples"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in Path(tmp_path / "out").rglob("*.json*"))
    assert [f.split("_")[0] for f in files] == ["results", "samples", "samples"], files

    model, tok = load_model(str(tiny_qwen), device="cpu")
    for norm in ("none", "char"):
        theirs = load_lm_eval_samples(tmp_path / "out", tasks=["ct_cloze"], norm=norm)
        ours = make_scorer(model, tok, "cloze", cloze_norm=norm, progress=False).score(cloze_items)
        assert theirs.ids.tolist() == [f"ct_cloze/{i}" for i in range(len(cloze_items))]
        np.testing.assert_array_equal(theirs.labels, ours.labels)
        np.testing.assert_array_equal(theirs.mask, ours.mask)
        np.testing.assert_allclose(theirs.logits, ours.logits, atol=1e-4)

    both = load_lm_eval_samples(tmp_path / "out")
    assert len(both) == len(cloze_items) + len(letter_items)
    assert both.meta["lm_eval_version"] == "0.4.13"
    assert both.meta["model"] == str(tiny_qwen)
    letters = both.subset(np.char.startswith(both.ids.astype(str), "ct_letter/"))
    np.testing.assert_array_equal(letters.labels, [it.answer for it in letter_items])
    ours = make_scorer(model, tok, "letter", progress=False).score(letter_items)
    # letter scoring: same option distribution (lm-eval's loglik of " A" vs the letter logit)
    assert not letters.mask[:, 4:].any()
    np.testing.assert_allclose(letters.probs()[:, :4], ours.probs(), atol=1e-4)
