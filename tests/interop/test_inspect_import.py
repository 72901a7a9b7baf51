"""Inspect eval logs into OptionScores, and calibtune's metrics inside Inspect.

The logs are made here by Inspect itself (`inspect_ai.eval`, Hugging Face provider) on a tiny
random model built from a config, so they are Inspect's real format; the imported option
probabilities are checked against the model's own forward pass, and the metrics Inspect reports
through `calibtune.inspect` against calibtune's metrics of the imported run.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("inspect_ai")

from inspect_ai import Task  # noqa: E402
from inspect_ai import eval as inspect_eval  # noqa: E402
from inspect_ai.dataset import MemoryDataset, Sample  # noqa: E402
from inspect_ai.log import read_eval_log, write_eval_log  # noqa: E402
from inspect_ai.solver import multiple_choice  # noqa: E402

from calibtune.cli import app  # noqa: E402
from calibtune.data.items import LETTERS  # noqa: E402
from calibtune.errors import DataError  # noqa: E402
from calibtune.inspect import choice_probabilities  # noqa: E402
from calibtune.interop.inspect_log import (answer_position, letter_probabilities,  # noqa: E402
                                           load_inspect_logs)
from calibtune.metrics import brier, classwise_ece, ece  # noqa: E402
from calibtune.scores import evaluate  # noqa: E402

from conftest import build_model_folder, build_tokenizer, make_items  # noqa: E402

TEMPLATE = "Question : {question}\n{choices}\nAnswer with the letter of correct option only"


def mc_task(name: str, n: int, k: int, seed: int) -> Task:
    items = make_items(n, k, seed=seed)
    samples = [Sample(input=it.question, choices=list(it.options), target=LETTERS[it.answer],
                      id=it.id) for it in reversed(items)]  # not in id order
    return Task(dataset=MemoryDataset(samples), name=name, scorer=choice_probabilities(),
                solver=multiple_choice(template=TEMPLATE, max_tokens=1))


@pytest.fixture(scope="module")
def letter_model(tmp_path_factory) -> Path:
    """A tiny random Qwen2 whose output layer is zero except for the letters A–D, with B's row
    the negative of A's: one of A, B always has a positive logit, so greedy decoding answers
    with a letter (A–D) and the letter distribution is the random model's own."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = build_model_folder(tmp_path_factory.mktemp("tiny-letters"), "qwen2", seed=3)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = build_tokenizer()
    ids = [tok.convert_tokens_to_ids(letter) for letter in "ABCD"]
    with torch.no_grad():
        head = model.lm_head.weight
        rows = head[ids].clone()
        rows[1] = -rows[0]
        head.zero_()
        head[ids] = rows
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def inspect_logs(letter_model, tmp_path_factory) -> Path:
    """Two multiple-choice tasks (4 and 3 options) run by Inspect on the tiny model, greedy, one
    token, with the whole vocabulary as top_logprobs (so no letter falls outside it)."""
    log_dir = tmp_path_factory.mktemp("inspect-logs")
    logs = inspect_eval([mc_task("tiny_four", 10, 4, 0), mc_task("tiny_three", 6, 3, 1)],
                        model=f"hf/{letter_model}", model_args={"do_sample": False, "device": "cpu"},
                        logprobs=True, top_logprobs=len(build_tokenizer()), max_tokens=1,
                        log_dir=str(log_dir), display="none")
    assert [log.status for log in logs] == ["success", "success"]
    return log_dir


def log_file(folder: Path, task: str) -> Path:
    (path,) = [p for p in folder.glob("*.eval") if read_eval_log(str(p), header_only=True).eval.task
               == task]
    return path


def forward_letter_probs(model_folder: Path, sample, k: int) -> np.ndarray:
    """The tiny model's own letter distribution for the logged prompt: chat template, one
    forward pass, softmax over the option letters' logits (independent of Inspect's top-k)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_folder)
    model = AutoModelForCausalLM.from_pretrained(model_folder).eval()
    messages = [{"role": m.role, "content": m.text} for m in sample.messages if m.role != "assistant"]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        last = model(ids).logits[0, -1]
    letter_ids = [tok.convert_tokens_to_ids(letter) for letter in LETTERS[:k]]
    return torch.softmax(last[letter_ids].double(), dim=0).numpy()


def test_imported_probabilities_match_the_models_forward_pass(inspect_logs, letter_model):
    path = log_file(inspect_logs, "tiny_four")
    scores = load_inspect_logs(path)
    log = read_eval_log(str(path))
    assert len(scores) == 10 and scores.meta["tasks"]["tiny_four"]["answer_position"]["letter"] == 10
    for i, sample in enumerate(log.samples[:4]):
        want = forward_letter_probs(letter_model, sample, 4)
        assert scores.ids[i] == f"tiny_four/{sample.id}"
        np.testing.assert_allclose(scores.probs()[i], want, atol=1e-4)
        assert scores.labels[i] == LETTERS.index(sample.target)


def test_probabilities_from_the_logged_top_logprobs(inspect_logs):
    """The import's arithmetic, redone on the log's numbers: letters' exp(logprob) renormalised."""
    path = log_file(inspect_logs, "tiny_three")
    scores = load_inspect_logs(path)
    for i, sample in enumerate(read_eval_log(str(path)).samples):
        top = {t.token: t.logprob for t in sample.output.choices[0].logprobs.content[0].top_logprobs}
        p = np.exp([top[letter] for letter in "ABC"])
        np.testing.assert_allclose(scores.probs()[i], p / p.sum(), atol=1e-9)
    info = scores.meta["tasks"]["tiny_three"]
    assert info["items_missing_letters"] == 0 and info["missing_letter_samples"] == []
    assert info["unseen_mass_max"] < 1e-4
    assert info["inspect_version"] == scores.meta["inspect_version"] and info["model"].startswith("hf/")


def test_confidence_is_the_chosen_letters_probability_not_the_targets(inspect_logs):
    """Greedy answers: the letter the model wrote is the most probable option, so calibtune's
    confidence (largest option probability) is P(chosen letter); on wrong answers P(target) is
    smaller. metrics.json's mean confidence is the mean P(chosen)."""
    path = log_file(inspect_logs, "tiny_four")
    scores = load_inspect_logs(path)
    p = scores.probs()
    chosen = [LETTERS.index(s.output.completion.strip()) for s in read_eval_log(str(path)).samples]
    assert p.argmax(1).tolist() == chosen
    p_chosen, p_target = p[np.arange(len(p)), chosen], p[np.arange(len(p)), scores.labels]
    wrong = np.array(chosen) != scores.labels
    assert wrong.any() and np.all(p_target[wrong] < p_chosen[wrong])
    assert evaluate(scores, n_boot=0)["mean_confidence"] == pytest.approx(p_chosen.mean(), abs=1e-12)


def test_a_real_top_3_leaves_letters_out(letter_model, tmp_path):
    """Inspect run with top_logprobs=3 on 4 options: every item misses a letter. The import gives
    it probability 0, renormalises the letters it has exactly as the model's forward pass does,
    lists the items and records the mass outside the top-3, which bounds the missing letters."""
    (log,) = inspect_eval(mc_task("tiny_top3", 4, 4, 2), model=f"hf/{letter_model}",
                          model_args={"do_sample": False, "device": "cpu"}, logprobs=True,
                          top_logprobs=3, max_tokens=1, log_dir=str(tmp_path), display="none")
    scores = load_inspect_logs(log.location)
    info = scores.meta["tasks"]["tiny_top3"]
    assert info["items_missing_letters"] == 4 and sorted(info["missing_letter_samples"]) == \
        sorted(scores.ids.tolist())
    for i, sample in enumerate(read_eval_log(log.location).samples):
        full = forward_letter_probs(letter_model, sample, 4)
        kept = [LETTERS.index(t.token) for t in sample.output.choices[0].logprobs.content[0]
                .top_logprobs if t.token in "ABCD"]
        want = np.zeros(4)
        want[kept] = full[kept] / full[kept].sum()
        np.testing.assert_allclose(scores.probs()[i], want, atol=1e-4)
        missing = [j for j in range(4) if j not in kept]
        assert missing and np.all(scores.probs()[i, missing] < 1e-14)
    assert 0 < info["unseen_mass_max"] < 1


def test_letters_outside_a_truncated_top_k_get_probability_zero(inspect_logs):
    """The logged top-k of a real sample cut after the first two letters: the third letter is
    missing, gets 0, and the unseen mass is what the cut top-k leaves."""
    sample = read_eval_log(str(log_file(inspect_logs, "tiny_three"))).samples[0]
    entry = sample.output.choices[0].logprobs.content[0]
    pairs = [(t.token, t.logprob) for t in entry.top_logprobs]
    cut = next(j for j, (tok, _) in enumerate(pairs)
               if sum(t in "ABC" for t, _ in pairs[: j + 1]) == 2) + 1
    lp = letter_probabilities([entry.token], [pairs[:cut]], 3)
    kept = {t: math.exp(v) for t, v in pairs[:cut] if t in "ABC"}
    missing = ({"A", "B", "C"} - set(kept)).pop()
    assert lp.missing == ["ABC".index(missing)] and lp.probs["ABC".index(missing)] == 0.0
    for t, p in kept.items():
        assert lp.probs["ABC".index(t)] == pytest.approx(p / sum(kept.values()), rel=1e-12)
    assert lp.unseen_mass == pytest.approx(1 - sum(math.exp(v) for _, v in pairs[:cut]), abs=1e-12)


def test_metrics_and_import_put_items_in_sample_id_order(inspect_logs):
    """The noise floor's simulation depends on the items' order, so both sides sort by id."""
    from inspect_ai.scorer import SampleScore

    from calibtune.inspect import score_arrays

    path = log_file(inspect_logs, "tiny_four")
    scores = load_inspect_logs(path)
    assert list(scores.ids) == sorted(scores.ids)
    log = read_eval_log(str(path))
    sample_scores = [SampleScore(score=s.scores["choice_probabilities"], sample_id=s.id)
                     for s in log.samples]
    probs, labels, _ = score_arrays(sample_scores[::-1])
    np.testing.assert_allclose(probs, scores.probs(), atol=1e-12)
    assert labels.tolist() == scores.labels.tolist()


def test_inspect_reports_calibtunes_metrics(inspect_logs):
    """ECE, its noise floor, cw-ECE and Brier that Inspect printed for the task equal calibtune's
    metrics of the imported run folder on the same probabilities."""
    path = log_file(inspect_logs, "tiny_four")
    reported = {name: m.value for name, m in read_eval_log(str(path)).results.scores[0].metrics.items()}
    scores = load_inspect_logs(path)
    p, y, m = scores.probs(), scores.labels, scores.mask
    assert reported["ece"] == pytest.approx(ece(p, y, 10, mask=m), abs=1e-9)
    assert reported["cw_ece"] == pytest.approx(classwise_ece(p, y, 10, mask=m), abs=1e-9)
    assert reported["brier"] == pytest.approx(brier(p, y, m), abs=1e-9)
    assert reported["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == y)), abs=1e-12)
    from calibtune.metrics import ece_noise_floor
    assert reported["ece_noise_q95"] == pytest.approx(ece_noise_floor(p.max(1), 10).q95, abs=1e-9)


def test_cli_imports_a_folder_of_logs_as_task_groups(inspect_logs, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["eval", "--from", "inspect", str(inspect_logs), "--out", str(out),
                                   "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 16 and metrics["n_options_max"] == 4
    for name in ("scores.npz", "report.md", "report.html"):
        assert (out / name).exists()
    report = (out / "report.md").read_text()
    assert "tiny_four" in report and "tiny_three" in report and "Inspect version" in report
    scores = load_inspect_logs(inspect_logs)
    assert sorted(set(scores.groups)) == ["tiny_four", "tiny_three"]
    assert int(scores.mask.sum(1).min()) == 3  # the 3-option task is padded and masked


def test_json_log_reads_like_eval_log(inspect_logs, tmp_path):
    path = log_file(inspect_logs, "tiny_four")
    copy = tmp_path / "copy.json"
    write_eval_log(read_eval_log(str(path)), str(copy), format="json")
    a, b = load_inspect_logs(path), load_inspect_logs(copy)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-12)
    assert list(a.ids) == list(b.ids)


def edited_log(inspect_logs: Path, tmp_path: Path, edit) -> Path:
    """A real log rewritten through Inspect's own API after `edit(sample)` on every sample."""
    log = read_eval_log(str(log_file(inspect_logs, "tiny_four")))
    for s in log.samples:
        edit(s)
    path = tmp_path / "edited.eval"
    write_eval_log(log, str(path))
    return path


def test_log_without_logprobs_is_one_line_error(inspect_logs, tmp_path):
    path = edited_log(inspect_logs, tmp_path,
                      lambda s: setattr(s.output.choices[0], "logprobs", None))
    with pytest.raises(DataError, match="no log-probabilities.*logprobs=True") as err:
        load_inspect_logs(path)
    assert "\n" not in str(err.value)


def test_log_without_top_logprobs_is_one_line_error(inspect_logs, tmp_path):
    def drop_top(sample):
        for entry in sample.output.choices[0].logprobs.content:
            entry.top_logprobs = None

    with pytest.raises(DataError, match="no top_logprobs; run the task with top_logprobs=K") as err:
        load_inspect_logs(edited_log(inspect_logs, tmp_path, drop_top))
    assert "\n" not in str(err.value)


def test_log_without_choices_is_one_line_error(inspect_logs, tmp_path):
    path = edited_log(inspect_logs, tmp_path, lambda s: setattr(s, "choices", None))
    with pytest.raises(DataError, match="not a multiple-choice task") as err:
        load_inspect_logs(path)
    assert "\n" not in str(err.value)


def test_same_task_twice_is_refused(inspect_logs, tmp_path):
    src = log_file(inspect_logs, "tiny_four")
    for name in ("a.eval", "b.eval"):
        (tmp_path / name).write_bytes(src.read_bytes())
    with pytest.raises(DataError, match="two runs of one task"):
        load_inspect_logs(tmp_path)


@pytest.mark.parametrize("tokens, want", [
    (["ANSWER", ":", " C"], (2, "marker")),
    (["ĠB", "ĠANSWER", ":", "ĠD", "."], (3, "marker")),  # the letter after the marker wins
    (["Let", " me", " think", ".", " B", " is"], (4, "letter")),
    (["▁Answer", "▁is", "▁A"], (2, "letter")),
    (["A", "rist", "otle", " says", " B", ")"], (4, "letter")),  # a word's first token is no answer
    (["The", " answer"], (0, "first")),
    (["ANSWER", ":", " E"], (0, "first")),  # E is not an option of a 4-option item
])
def test_answer_position_rules(tokens, want):
    assert answer_position(tokens, "ABCD") == want


def test_letter_variants_are_summed_and_duplicates_counted_once():
    top = [[("ĠA", math.log(0.3)), ("A", math.log(0.1)), ("B", math.log(0.2)), ("B", math.log(0.2)),
            ("x", math.log(0.3))]]
    lp = letter_probabilities(["ĠA"], top, 2)
    assert lp.probs == pytest.approx([0.4 / 0.6, 0.2 / 0.6]) and lp.chosen == "A"
    assert lp.unseen_mass == pytest.approx(0.1) and lp.missing == []
    assert letter_probabilities(["x"], [[("x", 0.0)]], 2) is None


@pytest.mark.parametrize("name, content, match", [
    ("broken.eval", b"not a zip archive", "not a readable Inspect log"),
    ("other.json", b'[{"id": 1}]', "not a readable Inspect log"),
    ("samples.jsonl", b"{}", "not an Inspect log \\(expected a .eval or .json file\\)"),
])
def test_files_that_are_not_inspect_logs_are_one_line(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        load_inspect_logs(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="no Inspect logs"):
        load_inspect_logs(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_inspect_logs(tmp_path / "nowhere.eval")


def test_without_inspect_ai_the_message_names_the_extra(monkeypatch, tmp_path):
    import sys

    for name in [m for m in sys.modules if m == "inspect_ai" or m.startswith("inspect_ai.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing any of them now fails
    with pytest.raises(DataError, match=r"pip install 'calibtune\[inspect\]'"):
        load_inspect_logs(tmp_path)
    monkeypatch.delitem(sys.modules, "calibtune.inspect", raising=False)
    with pytest.raises(ImportError, match=r"calibtune\[inspect\]"):
        import calibtune.inspect  # noqa: F401
