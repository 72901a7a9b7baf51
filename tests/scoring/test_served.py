"""Scoring through an OpenAI-compatible server, against a fake one on 127.0.0.1 (fast): the
spec, the top-k floor, retries, the one-line errors, resume, and the key kept out of files."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from calibtune.errors import CalibtuneError, ConfigError, ModelError
from calibtune.models import served as served_client
from calibtune.models.served import ServedClient, parse_served
from calibtune.scoring.served import letter_scores
from calibtune.workflows.config import EvalConfig
from calibtune.workflows.eval import run_eval
from conftest import items_to_rows, make_items, write_jsonl
from served_fakes import LocalServer, fake_letter_logprobs, fake_model, ok, word_logprob


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Backoff in milliseconds, so fault tests take no time."""
    monkeypatch.setattr(ServedClient.__init__, "__kwdefaults__",
                        {**ServedClient.__init__.__kwdefaults__, "backoff": 0.001,
                         "max_retries": 3})


def data_file(tmp_path: Path, n: int = 12) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_jsonl(tmp_path / "items.jsonl", items_to_rows(make_items(n)))


def config(tmp_path: Path, url: str, **kw) -> EvalConfig:
    base = dict(model=f"openai:{url}/fake-model", data=str(data_file(tmp_path)), split=None,
                n_boot=0, chunk_size=4, concurrency=3, out=str(tmp_path / "run"))
    return EvalConfig(**{**base, **kw})


def test_spec_parsing():
    m = parse_served("openai:http://gpu:8000/v1/meta-llama/Llama-3.1-8B-Instruct")
    assert (m.base_url, m.name) == ("http://gpu:8000/v1", "meta-llama/Llama-3.1-8B-Instruct")
    m = parse_served("openai:https://host/api/my-model")
    assert (m.base_url, m.name) == ("https://host/api", "my-model")
    for bad in ("openai:", "openai:http://gpu:8000/v1/", "openai:ftp://x/v1/m",
                "openai:http://u:secret@gpu/v1/m", "openai:http://gpu/v1/m?key=1"):
        with pytest.raises(ConfigError) as err:
            parse_served(bad)
        assert "secret" not in str(err.value)


def test_letters_outside_topk_are_floored_and_flagged():
    top = {" A": math.log(0.5), " C": math.log(0.2), " the": math.log(0.1)}
    scores, record = letter_scores(top, 4, "plain")
    assert scores == pytest.approx([math.log(0.5), math.log(0.1), math.log(0.2), math.log(0.1)])
    assert record["missing"] == 2 and record["letter_mass"] == pytest.approx(0.7)
    assert record["coverage"] == pytest.approx(0.7 / (0.7 + 2 * 0.1))
    full, rec = letter_scores({"A": -1.0, "B": -2.0}, 2, "chat")  # chat: no space before letter
    assert rec["missing"] == 0 and rec["coverage"] == 1.0 and full == pytest.approx([-1, -2])


@pytest.mark.parametrize("prompt", ["plain", "chat"])
def test_letter_scores_match_the_servers_logprobs(tmp_path, prompt):
    from calibtune.scoring.prompts import chat_turn, render_prompt

    with LocalServer(fake_model(top_cap=4)) as server:
        result = run_eval(config(tmp_path, server.url, prompt=prompt), progress=False)
    items = make_items(12)
    saved = np.load(result.folder / "scores.npz")
    for row, it in zip(saved["logits"], items):
        if prompt == "chat":
            text, letters = json.dumps([chat_turn(it)]), "ABCD"
            lps = fake_letter_logprobs(text, 4, prefix="")
        else:
            lps = fake_letter_logprobs(render_prompt(it, "plain"), 4)
            letters = [" " + c for c in "ABCD"]
        want = [lps.get(c, min(lps.values())) for c in letters]
        assert row == pytest.approx(want, abs=1e-9)
    served = result.metrics["served"]
    assert served["top_logprobs"] == 20 and served["outside_topk"] == "floor"
    assert served["items_with_missing_letters"] > 0  # top 4 of 6 tokens: some letters fall out
    table = (result.folder / "topk_coverage.csv").read_text().splitlines()
    assert table[0] == "id,letter_mass,missing,coverage" and len(table) == 13


def test_cloze_sums_the_option_tokens(tmp_path):
    from calibtune.scoring.cloze import cloze_context

    with LocalServer(fake_model()) as server:
        result = run_eval(config(tmp_path, server.url, scoring="cloze"), progress=False)
    logits = np.load(result.folder / "scores.npz")["logits"]
    for row, it in zip(logits, make_items(12)):
        want = []
        for opt in it.options:  # the fake's tokens are words, each with its leading space
            text = cloze_context(it)
            total = 0.0
            for w in (" " + opt.strip()).replace(" ", "\x00 ").split("\x00")[1:]:
                total += word_logprob(text, w)
                text += w
            want.append(total)
        assert row == pytest.approx(want, abs=1e-9)


def test_cloze_refuses_a_server_that_shifts_echoed_logprobs(tmp_path):
    model = fake_model()

    def shifted(method, path, body, n):
        status, headers, content = model(method, path, body, n)
        if body and body.get("echo"):  # each token gets the next position's log-prob
            answer = json.loads(content)
            lps = answer["choices"][0]["logprobs"]["token_logprobs"]
            answer["choices"][0]["logprobs"]["token_logprobs"] = [None] + lps[2:] + [-0.5]
            content = json.dumps(answer).encode()
        return status, headers, content

    with LocalServer(shifted) as server:
        with pytest.raises(ModelError, match="shifted by one token"):
            run_eval(config(tmp_path, server.url, scoring="cloze"), progress=False)
    assert not (tmp_path / "run").exists()


def test_an_answer_that_stops_at_once_is_asked_again_with_min_tokens(tmp_path):
    model = fake_model()
    asked = []

    def stops(method, path, body, n):
        if method == "POST" and not body.get("min_tokens") and len(asked) % 2 == 0:
            asked.append(body)  # every other item: the model chose EOS, nothing comes back
            return ok({"choices": [{"text": "", "finish_reason": "stop", "logprobs": {
                "tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}}]})
        if method == "POST" and not body.get("min_tokens"):
            asked.append(body)
        return model(method, path, body, n)

    with LocalServer(fake_model()) as plain:
        calm = run_eval(config(tmp_path / "a", plain.url), progress=False)
    with LocalServer(stops) as server:
        stopped = run_eval(config(tmp_path / "b", server.url, concurrency=1), progress=False)
    np.testing.assert_allclose(np.load(stopped.folder / "scores.npz")["logits"],
                               np.load(calm.folder / "scores.npz")["logits"], atol=1e-12)


def test_429_storm_is_retried_honouring_retry_after(tmp_path):
    model = fake_model()
    times = []  # (arrival, refused) of each POST

    def storm(method, path, body, n):
        if method == "POST":
            times.append((time.monotonic(), bool(n % 3)))
            if n % 3:  # two of every three requests are refused
                return 429, {"retry-after": "0.2"}, b'{"error": {"message": "slow down"}}'
        return model(method, path, body, n)

    with LocalServer(fake_model()) as plain:
        calm = run_eval(config(tmp_path / "a", plain.url), progress=False)
    with LocalServer(storm) as server:
        stormy = run_eval(config(tmp_path / "b", server.url, concurrency=1), progress=False)
    gaps = [b[0] - a[0] for a, b in zip(times, times[1:]) if a[1]]
    assert len(gaps) >= 12 and min(gaps) >= 0.19  # each refusal waited its Retry-After
    assert stormy.metrics["served"]["retries"] == len(gaps)
    np.testing.assert_allclose(np.load(stormy.folder / "scores.npz")["logits"],
                               np.load(calm.folder / "scores.npz")["logits"], atol=1e-12)


@pytest.mark.parametrize("fault, words", [
    ("malformed", "malformed JSON"), ("unknown", "does not serve model 'other'"),
    ("nologprobs", "no log-probabilities"), ("down", "could not be reached"),
    ("always429", "still answered HTTP 429"), ("badkey", "refused the API key")])
def test_faults_are_one_line_errors(tmp_path, fault, words):
    model = fake_model()

    def faulty(method, path, body, n):
        if fault == "badkey":
            return 401, {}, b'{"error": {"message": "invalid api key"}}'
        if method == "GET" or fault == "unknown":
            return model(method, path, body, n)
        if fault == "malformed":
            return 200, {}, b'{"choices": [{"text": "A", "logprobs": '
        if fault == "nologprobs":
            return ok({"choices": [{"text": " A", "logprobs": None}]})
        return 429, {}, b"{}"

    with LocalServer(faulty) as server:
        url = "http://127.0.0.1:9/v1" if fault == "down" else server.url
        name = "other" if fault == "unknown" else "fake-model"
        with pytest.raises(ModelError) as err:
            run_eval(config(tmp_path, url, model=f"openai:{url}/{name}"), progress=False)
    assert words in str(err.value) and "\n" not in str(err.value)
    if fault in ("unknown", "down", "badkey"):  # found before anything is written
        assert not (tmp_path / "run").exists()
    else:  # found while scoring: no chunk saved, the folder kept for --resume
        assert not list((tmp_path / "run").rglob("chunk-*.npy"))


def test_unknown_model_refused_by_a_server_without_a_model_list(tmp_path):
    model = fake_model()

    def no_list(method, path, body, n):
        return (404, {}, b"{}") if method == "GET" else model(method, path, body, n)

    with LocalServer(no_list) as server:
        with pytest.raises(ModelError, match="does not know model 'other'"):
            run_eval(config(tmp_path, server.url, model=f"openai:{server.url}/other"),
                     progress=False)


def test_resume_after_the_server_dies_mid_run(tmp_path):
    model = fake_model()
    alive = {"posts": 0, "limit": 6}

    def dies(method, path, body, n):
        if method == "POST":
            alive["posts"] += 1
            if alive["posts"] > alive["limit"]:
                raise ConnectionAbortedError
        return model(method, path, body, n)

    with LocalServer(fake_model()) as plain:
        whole = run_eval(config(tmp_path / "a", plain.url), progress=False)
    with LocalServer(dies) as server:
        cfg = config(tmp_path / "b", server.url, concurrency=1)
        with pytest.raises(ModelError, match="could not be reached"):
            run_eval(cfg, progress=False)
        chunks = sorted((Path(cfg.out) / ".partial").glob("chunk-*.npy"))
        assert len(chunks) == 1  # items 0-3 saved; the second chunk died after 2 items
        alive.update(posts=0, limit=10 ** 6)
        resumed = run_eval(cfg, resume=True, progress=False)
    assert alive["posts"] == 12 - 4  # the saved chunk was not asked again
    np.testing.assert_allclose(np.load(resumed.folder / "scores.npz")["logits"],
                               np.load(whole.folder / "scores.npz")["logits"], atol=1e-12)
    assert resumed.metrics["served"]["items_with_records"] == 12  # coverage kept across runs
    assert resumed.metrics["ece"] == pytest.approx(whole.metrics["ece"], abs=1e-12)


def test_the_api_key_is_sent_but_never_written(tmp_path, monkeypatch, caplog):
    canary = "sk-canary-7f3a9c"
    monkeypatch.setenv("CALIBTUNE_API_KEY", canary)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other")
    with LocalServer(fake_model()) as server:
        caplog.set_level("DEBUG")
        result = run_eval(config(tmp_path, server.url), progress=False)
    assert all(h.get("Authorization") == f"Bearer {canary}" for h in server.headers)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path
    assert canary not in caplog.text
    assert result.metrics["served"]["items"] == 12


def test_key_variable_order(monkeypatch):
    monkeypatch.delenv("CALIBTUNE_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "b")
    assert served_client.api_key() == "b"
    monkeypatch.setenv("CALIBTUNE_API_KEY", "a")
    assert served_client.api_key() == "a"


def test_resume_refuses_another_server_model(tmp_path):
    with LocalServer(fake_model()) as server:
        run_eval(config(tmp_path, server.url), progress=False)
        with pytest.raises(CalibtuneError, match="other settings"):
            run_eval(config(tmp_path, server.url, model=f"openai:{server.url}/x"), resume=True,
                     progress=False)


def test_cli_scores_through_a_server_and_reports_a_dead_one_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from calibtune.cli import app

    data = data_file(tmp_path)
    with LocalServer(fake_model()) as server:
        ok_run = CliRunner().invoke(app, ["eval", "--model", f"openai:{server.url}/fake-model",
                                          "--data", str(data), "--n-boot", "0", "--concurrency",
                                          "2", "--top-logprobs", "5", "--out",
                                          str(tmp_path / "run")])
    assert ok_run.exit_code == 0, ok_run.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["served"]["top_logprobs"] == 5
    dead = CliRunner().invoke(app, ["eval", "--model", "openai:http://127.0.0.1:9/v1/m", "--data",
                                    str(data), "--out", str(tmp_path / "dead")])
    assert dead.exit_code != 0 and "could not be reached" in dead.output
    assert "Traceback" not in dead.output and len(dead.output.strip().splitlines()) == 1
