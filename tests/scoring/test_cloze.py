"""Cloze scoring against a naive reference: one full forward per (item, option), summed log-probs."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.scoring.cloze import ClozeScorer, cloze_context, encode_continuation
from calibtune.models import load_model
from calibtune.scores import OptionScores

from conftest import items_to_rows, make_items, write_jsonl


def reference_loglik(model, tok, item):
    out = []
    for opt in item.options:
        ctx = tok(cloze_context(item))["input_ids"]
        whole = tok(cloze_context(item) + " " + opt.strip())["input_ids"]
        cont = whole[len(ctx):]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([whole])).logits[0]
        logp = torch.log_softmax(logits.double(), -1)
        out.append(sum(float(logp[len(ctx) + j - 1, t]) for j, t in enumerate(cont)))
    return out


@pytest.fixture(scope="module")
def model_tok(tiny_qwen):
    return load_model(str(tiny_qwen), device="cpu")


def test_cloze_matches_naive_reference_and_norms(model_tok):
    model, tok = model_tok
    items = make_items(7, k=[4, 3, 2])
    ref = [reference_loglik(model, tok, it) for it in items]
    for bs, share in [(1, True), (4, True), (16, True), (1, False), (16, False)]:
        raw = ClozeScorer(model, tok, batch_size=bs, share_context=share,
                          progress=False).score(items)
        for i, it in enumerate(items):
            np.testing.assert_allclose(raw.logits[i, : it.n_options], ref[i], atol=1e-3)
    tokn = ClozeScorer(model, tok, norm="token", progress=False).score(items)
    char = ClozeScorer(model, tok, norm="char", progress=False).score(items)
    it = items[0]
    n_tok = [len(encode_continuation(tok, cloze_context(it), " " + o)[1]) for o in it.options]
    np.testing.assert_allclose(tokn.logits[0, :4], np.array(ref[0]) / n_tok, atol=1e-3)
    np.testing.assert_allclose(char.logits[0, :4], np.array(ref[0]) / [len(o) for o in it.options],
                               atol=1e-3)
    assert raw.meta["scoring"] == "cloze" and tokn.meta["cloze_norm"] == "token"


def test_encode_pair_moves_trailing_space_like_lm_eval(model_tok):
    _, tok = model_tok
    a = encode_continuation(tok, "Question: the sun ?\nAnswer: ", "moon")
    b = encode_continuation(tok, "Question: the sun ?\nAnswer:", " moon")
    assert a == b


def test_eval_cli_cloze(tmp_path, tiny_llama):
    data = write_jsonl(tmp_path / "d.jsonl", items_to_rows(make_items(12, k=[4, 3])))
    out = tmp_path / "cloze"
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(data),
                                   "--scoring", "cloze", "--cloze-norm", "token", "--n-boot", "0",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    s = OptionScores.load(out / "scores.npz")
    assert s.meta["scoring"] == "cloze" and s.mask.sum(1).tolist() == [4, 3] * 6
    assert json.loads((out / "metrics.json").read_text())["n"] == 12
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(data),
                                   "--scoring", "bogus", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--scoring" in res.output


def test_posthoc_on_cloze_scores(tmp_path, tiny_llama):
    data = write_jsonl(tmp_path / "d.jsonl", items_to_rows(make_items(40, k=[4, 3])))
    runs = {}
    for scoring in ("cloze", "letter"):
        runs[scoring] = tmp_path / scoring
        res = CliRunner().invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(data),
                                       "--scoring", scoring, "--n-boot", "0",
                                       "--out", str(runs[scoring])])
        assert res.exit_code == 0, res.output
    cloze_scores = str(runs["cloze"] / "scores.npz")
    res = CliRunner().invoke(app, ["posthoc", "--scores", cloze_scores, "--scoring", "cloze",
                                   "--fit-fraction", "0.5", "--n-boot", "0",
                                   "--out", str(tmp_path / "ts")])
    assert res.exit_code == 0, res.output
    assert "**scoring**: cloze (none)" in (tmp_path / "ts" / "report.md").read_text()
    res = CliRunner().invoke(app, ["posthoc", "--scores", cloze_scores, "--scoring", "letter",
                                   "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "holds cloze (none) scores, not --scoring letter" in res.output
    res = CliRunner().invoke(app, ["posthoc", "--scores", cloze_scores, "--method", "daca",
                                   "--reference", str(runs["letter"] / "scores.npz"),
                                   "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "score both models the same way" in res.output
    res = CliRunner().invoke(app, ["posthoc", "--scores", cloze_scores, "--scoring", "logits",
                                   "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and "--scoring must be letter or cloze" in res.output
