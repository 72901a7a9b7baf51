"""Small HTTP servers on 127.0.0.1 for the served-model tests: a fake OpenAI-compatible model
(deterministic log-probabilities from the prompt's hash) and a fault-injecting proxy."""
from __future__ import annotations

import hashlib
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# (method, path, body, n-th request) → (status, headers, body bytes)
Respond = Callable[[str, str, dict | None, int], tuple[int, dict, bytes]]


class LocalServer:
    """A threaded HTTP server on a free port of 127.0.0.1, answering with `respond`."""

    def __init__(self, respond: Respond) -> None:
        self.respond, self.count, self.headers = respond, 0, []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _any(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                with outer._lock:
                    outer.count += 1
                    n = outer.count
                    outer.headers.append(dict(self.headers))
                try:
                    status, headers, body = outer.respond(method, self.path,
                                                          json.loads(raw) if raw else None, n)
                except ConnectionAbortedError:  # drop the connection without answering
                    self.close_connection = True
                    return
                try:
                    self.send_response(status)
                    for k, v in {"content-type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    self.close_connection = True

            def do_GET(self):
                self._any("GET")

            def do_POST(self):
                self._any("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(obj) -> tuple[int, dict, bytes]:
    return 200, {}, json.dumps(obj).encode()


def fake_letter_logprobs(text: str, top: int, letters: str = "ABCD", prefix: str = " "
                         ) -> dict[str, float]:
    """A deterministic next-token distribution over the letters and two other tokens, cut to
    the `top` most likely (so some letters fall outside it when `top` is small)."""
    digest = hashlib.sha256(text.encode()).digest()
    tokens = [prefix + c for c in letters] + [" the", "\n"]
    raw = [digest[i] / 40.0 for i in range(len(tokens))]
    norm = math.log(sum(math.exp(r) for r in raw))
    ranked = sorted(zip(tokens, raw), key=lambda p: -p[1])[:top]
    return {t: r - norm for t, r in ranked}


def word_logprob(prefix: str, word: str) -> float:
    """The fake model's log p(word | prefix): its letter distribution where that names the word
    (so echoed and generated log-probabilities agree, as on a correct server), else a hash."""
    known = fake_letter_logprobs(prefix, 6)
    return known[word] if word in known else -(hashlib.sha256(word.encode()).digest()[0] / 64.0)


def fake_model(name: str = "fake-model", top_cap: int = 20) -> Respond:
    """An OpenAI-compatible model: /models, completions (letters, or echo for cloze: one token
    per word, log-prob from the word's hash) and chat/completions."""

    def respond(method, path, body, n):
        if path.endswith("/models"):
            return ok({"object": "list", "data": [{"id": name, "object": "model"}]})
        if body.get("model") != name:
            return 404, {}, json.dumps({"error": {"message": f"model {body.get('model')!r} "
                                                            "not found"}}).encode()
        if path.endswith("/chat/completions"):
            text = json.dumps(body["messages"])
            lps = fake_letter_logprobs(text, min(top_cap, body["top_logprobs"]), prefix="")
            top = [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in lps.items()]
            first = top[0]
            return ok({"choices": [{"index": 0, "message": {"role": "assistant",
                                                             "content": first["token"]},
                                    "logprobs": {"content": [{**first, "top_logprobs": top}]}}]})
        prompt = body["prompt"]
        if body.get("echo"):
            words, offsets, pos = [], [], 0
            for w in prompt.replace(" ", "\x00 ").split("\x00"):
                words.append(w)
                offsets.append(pos)
                pos += len(w)
            lps = [None] + [word_logprob(prompt[:offsets[i]], w) for i, w in enumerate(words)
                            if i > 0]
            return ok({"choices": [{"text": prompt + " x", "logprobs": {
                "tokens": words + [" x"], "text_offset": offsets + [len(prompt)],
                "token_logprobs": lps + [-1.0], "top_logprobs": None}}]})
        lps = fake_letter_logprobs(prompt, min(top_cap, body["logprobs"]))
        return ok({"choices": [{"text": next(iter(lps)), "logprobs": {
            "tokens": [next(iter(lps))], "token_logprobs": [next(iter(lps.values()))],
            "top_logprobs": [lps], "text_offset": [len(prompt)]}}]})

    return respond
