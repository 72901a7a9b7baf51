"""Scoring through a REAL OpenAI-compatible server: llama-cpp-python's, started here on
127.0.0.1 on the embedded SmolLM2-135M-Instruct GGUF (and always stopped).

Agreement with in-process letter scoring of the same model: llama.cpp computes on the Q4_1
weights with its own kernels, transformers on the same weights dequantised to fp32, so the two
differ by rounding only; the tolerances below are set from measured differences. Cloze: this
server's echoed prompt log-probabilities are shifted by one token for SmolLM2 (no BOS), which
the scorer detects and refuses; cloze sums are tested against the fake server instead. Fault
tests put a small proxy between the client and the server: the server killed mid run (resume
completes and equals an uninterrupted run), a 429 storm, truncated JSON; and a model name the
server does not serve, a missing key.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from calibtune.data import load_dataset, sample_items
from calibtune.errors import ModelError
from calibtune.metrics.validation import softmax
from calibtune.models import BUILTIN_MODELS
from calibtune.scoring.prompts import render_prompt
from calibtune.workflows.config import EvalConfig
from calibtune.workflows.eval import run_eval
from served_fakes import LocalServer

pytestmark = [pytest.mark.server, pytest.mark.slow]
ALIAS = "smollm2"
KEY = "sk-test-llama-2b61"
N_ITEMS = 20
TOP = 1000  # every letter inside the top-k, so only the arithmetic differs (docs/served.md)
# Measured on 100 MMLU test items, plain prompt, top 1000 (bench/served_vs_local.py): largest
# |p_server − p_in-process| over all option probabilities 0.090, mean 0.006, predictions 100/100
# the same (llama.cpp quantises the activations to 8 bits for its Q4_1 matmuls; transformers
# multiplies in fp32). The tolerances leave room for other CPUs' kernels.
PROB_TOL = 0.1
MEAN_TOL = 0.015
AGREE_MIN = 0.9  # share of items whose predicted option is the same


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on the built-in GGUF, on a port of 127.0.0.1."""

    def __init__(self, log: Path) -> None:
        self.port, self.log, self.proc = free_port(), log, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError:
            pytest.fail("llama-cpp-python[server]==0.3.36 is not installed (make test builds it)")
        gguf = BUILTIN_MODELS["smollm2-135m-instruct"].locate()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).parent.parent / "serve_llama.py"),
                 "--model", str(gguf),
                 "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
                 "--n_ctx", "1024", "--n_threads", "2", "--logits_all", "true",
                 "--api_key", KEY, "--verbose", "false"], stdout=out, stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2,
                             headers={"Authorization": f"Bearer {KEY}"}).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"llama_cpp.server did not answer in 120 s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log")
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def key_and_quick_retries(monkeypatch):
    monkeypatch.setenv("CALIBTUNE_API_KEY", KEY)
    from calibtune.models.served import ServedClient

    monkeypatch.setattr(ServedClient.__init__, "__kwdefaults__",
                        {**ServedClient.__init__.__kwdefaults__, "backoff": 0.05,
                         "max_retries": 4})


@pytest.fixture(scope="module")
def local_model():
    from calibtune.models import load_model

    return load_model("smollm2-135m-instruct", device="cpu")


def mmlu_items(n: int = N_ITEMS):
    return sample_items(load_dataset("mmlu", "test").items, n, 0)


def served_config(url: str, out: Path, **kw) -> EvalConfig:
    base = dict(model=f"openai:{url}/{ALIAS}", data="mmlu", split="test", limit=8,
                n_boot=0, chunk_size=4, concurrency=2, out=str(out))
    return EvalConfig(**{**base, **kw})


def in_process(local_model, items, **kw) -> np.ndarray:
    from calibtune.scoring import score

    return score(local_model, items, **kw).probs()


def compare(served_folder: Path, local_probs: np.ndarray, items) -> dict:
    saved = np.load(served_folder / "scores.npz")
    assert list(saved["ids"]) == [it.id for it in items]
    probs = softmax(saved["logits"], saved["mask"])
    diff = np.abs(probs - local_probs)[saved["mask"]]
    agree = float((probs.argmax(1) == local_probs.argmax(1)).mean())
    figures = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
               "agreement": agree}
    print(json.dumps(figures))
    return figures


@pytest.mark.parametrize("prompt", ["plain", "chat"])
def test_letter_agrees_with_in_process_scoring(server, local_model, tmp_path, prompt):
    n = N_ITEMS if prompt == "plain" else 12
    result = run_eval(served_config(server.url, tmp_path / "run", prompt=prompt, limit=n,
                                    top_logprobs=TOP), progress=False)
    items = mmlu_items(n)
    figures = compare(result.folder, in_process(local_model, items, prompt=prompt), items)
    assert figures["max_abs_diff"] <= PROB_TOL and figures["mean_abs_diff"] <= MEAN_TOL
    assert figures["agreement"] >= AGREE_MIN
    served = result.metrics["served"]
    assert served["items_with_records"] == n and served["items_with_missing_letters"] == 0


def test_cloze_refuses_llama_cpp_shifted_echo(server, tmp_path):
    """llama-cpp-python 0.3.36 pairs each echoed prompt token with the distribution after it
    when the model has no BOS token (SmolLM2's GGUF sets add_bos_token false): cloze through
    it would be wrong, and is refused before anything is written."""
    with pytest.raises(ModelError, match="shifted by one token") as err:
        run_eval(served_config(server.url, tmp_path / "run", scoring="cloze", limit=4),
                 progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def forwarding(url: str, fault=None):
    """A proxy's respond function: forward to the real server unless `fault` answers first."""
    import httpx

    client = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {KEY}"})

    def respond(method, path, body, n):
        if fault is not None:
            answer = fault(method, path, body, n)
            if answer is not None:
                return answer
        upstream = url.rsplit("/v1", 1)[0] + path
        try:
            r = client.request(method, upstream, json=body)
        except httpx.TransportError:
            raise ConnectionAbortedError from None  # the client sees a dropped connection
        return r.status_code, {}, r.content

    return respond


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """8 items scored straight from the server, in chunks of 4: what the faulty runs must equal."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CALIBTUNE_API_KEY", KEY)
    try:
        out = tmp_path_factory.mktemp("reference") / "run"
        return np.load(run_eval(served_config(server.url, out), progress=False).folder
                       / "scores.npz")["logits"]
    finally:
        mp.undo()


def test_server_killed_mid_run_then_resumed(server, reference, tmp_path):
    out = tmp_path / "run"
    state = {"kill": True, "asked": []}  # one proxy (so one URL) for both runs

    def kill_after_first_chunk(method, path, body, n):
        if method == "POST":
            if state["kill"] and list(out.glob(".partial/chunk-*.npy")) and \
                    server.proc.poll() is None:
                server.stop()  # the real server dies mid-run; the proxy then cannot reach it
            state["asked"].append(body["prompt"])

    with LocalServer(forwarding(server.url, kill_after_first_chunk)) as proxy:
        cfg = served_config(proxy.url, out, request_timeout=5.0, concurrency=1)
        try:
            with pytest.raises(ModelError, match="could not be reached"):
                run_eval(cfg, progress=False)
        finally:
            server.start()  # the same port, for the resumed run and the tests after
        assert len(list(out.glob(".partial/chunk-*.npy"))) == 1  # items 1-4 kept
        state.update(kill=False, asked=[])
        resumed = run_eval(cfg, resume=True, progress=False)
    items = mmlu_items(8)
    assert set(state["asked"]) == {render_prompt(it, "plain") for it in items[4:]}  # not redone
    np.testing.assert_allclose(np.load(resumed.folder / "scores.npz")["logits"], reference,
                               atol=1e-6)


def test_429_storm_in_front_of_the_real_server(server, reference, tmp_path):
    def storm(method, path, body, n):
        if method == "POST" and n % 4:  # three of every four requests are refused
            return 429, {"retry-after": "0.1"}, b'{"error": {"message": "rate limited"}}'
        return None

    with LocalServer(forwarding(server.url, storm)) as proxy:
        stormy = run_eval(served_config(proxy.url, tmp_path / "storm", concurrency=1),
                          progress=False)
    assert stormy.metrics["served"]["retries"] >= 8
    np.testing.assert_allclose(np.load(stormy.folder / "scores.npz")["logits"], reference,
                               atol=1e-6)


def test_truncated_json_from_the_real_server(server, tmp_path):
    inner = forwarding(server.url)

    def truncate(method, path, body, n):
        status, headers, content = inner(method, path, body, n)
        return (status, headers, content[: len(content) // 2]) if method == "POST" else \
            (status, headers, content)

    with LocalServer(truncate) as proxy:
        with pytest.raises(ModelError, match="malformed JSON") as err:
            run_eval(served_config(proxy.url, tmp_path / "run", limit=4), progress=False)
    assert "\n" not in str(err.value)


def test_a_model_the_server_does_not_serve(server, tmp_path):
    cfg = served_config(server.url, tmp_path / "run", model=f"openai:{server.url}/gpt-9")
    with pytest.raises(ModelError, match=f"does not serve model 'gpt-9'; it serves '{ALIAS}'"):
        run_eval(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_missing_key_is_one_line(server, tmp_path, monkeypatch):
    monkeypatch.delenv("CALIBTUNE_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelError, match="refused the API key"):
        run_eval(served_config(server.url, tmp_path / "run", limit=4), progress=False)
