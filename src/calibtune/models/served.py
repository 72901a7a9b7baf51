"""A model behind an OpenAI-compatible server: where it is, and one HTTP client that is polite.

`--model openai:BASE_URL/MODEL` names a served model: BASE_URL is the API root (it ends in
``/v1`` for vLLM, llama.cpp, Ollama and OpenAI) and everything after ``/v1/`` is the model
name, slashes included (``openai:http://gpu-box:8000/v1/meta-llama/Llama-3.1-8B-Instruct``).
Without a ``/v1`` segment the last path segment is the model. ``openai:MODEL`` alone uses
``$OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``).

The API key is read from ``$CALIBTUNE_API_KEY``, else ``$OPENAI_API_KEY``, when the client is
made; it lives only in the request header, never in the spec, a message or a file. A URL
holding credentials (``user:pass@``) is refused so that none reaches config.yaml.

`ServedClient.post` retries connection failures, timeouts, 429 and 5xx with exponential
backoff (a ``Retry-After`` header, in seconds or as a date, is honoured up to `max_wait`), and
turns every other failure into one `ModelError` line: unknown model, refused key, malformed
JSON, server unreachable.
"""
from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import AssetError, ConfigError, ModelError

PREFIX = "openai:"
KEY_VARIABLES = ("CALIBTUNE_API_KEY", "OPENAI_API_KEY")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class ServedModel:
    """A model name on a server: `base_url` is the API root the endpoints hang from."""

    base_url: str
    name: str


def is_served(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse_served(spec: str) -> ServedModel:
    """`openai:BASE_URL/MODEL` (or `openai:MODEL`) → ServedModel; a malformed spec is one line."""
    rest = spec[len(PREFIX):].strip() if is_served(spec) else ""
    if not rest:
        raise ConfigError(f"--model {spec!r}: expected openai:BASE_URL/MODEL, e.g. "
                          "openai:http://127.0.0.1:8000/v1/my-model")
    if "://" not in rest:
        return ServedModel(os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL).rstrip("/"), rest)
    parts = urlsplit(rest)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--model {spec!r}: the base URL must be http:// or https://HOST")
    if "@" in parts.netloc:
        raise ConfigError(f"--model {spec[:len(PREFIX)]}{parts.scheme}://…: the URL holds "
                          "credentials; put the key in $CALIBTUNE_API_KEY instead (it is never "
                          "written to the run folder)")
    if parts.query or parts.fragment:
        raise ConfigError(f"--model {spec!r}: no query or fragment, only BASE_URL/MODEL")
    path = parts.path
    if "/v1/" in path:
        root, name = path.split("/v1/", 1)
        root += "/v1"
    else:
        root, _, name = path.rstrip("/").rpartition("/")
    if not name.strip("/"):
        raise ConfigError(f"--model {spec!r}: no model name after the base URL "
                          "(openai:BASE_URL/MODEL)")
    return ServedModel(f"{parts.scheme}://{parts.netloc}{root}".rstrip("/"), name.strip("/"))


def api_key() -> str | None:
    """The key from the first of $CALIBTUNE_API_KEY, $OPENAI_API_KEY that is set."""
    for var in KEY_VARIABLES:
        if os.environ.get(var):
            return os.environ[var]
    return None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(response: Any) -> str:
    """The error text a server put in its body, cut to one short line."""
    try:
        body = response.json()
        err = body.get("error", body.get("detail", body)) if isinstance(body, dict) else body
        text = err.get("message", err) if isinstance(err, dict) else err
        text = json.dumps(text) if not isinstance(text, str) else text
    except ValueError:
        text = response.text
    return " ".join(str(text).split())[:160]


class ServedClient:
    """JSON POSTs to one served model's endpoints, shared by a pool of threads.

    `concurrency` bounds the open connections (the scorer's pool has as many threads);
    `timeout` (seconds) applies to connecting and to each read; a request is tried at most
    `max_retries + 1` times, waiting `backoff · 2^attempt` (jittered, at most `max_wait`) or the
    server's Retry-After between tries."""

    def __init__(self, model: ServedModel, *, concurrency: int = 8, timeout: float = 60.0,
                 max_retries: int = 6, backoff: float = 0.5, max_wait: float = 60.0) -> None:
        try:
            import httpx
        except ImportError:
            raise AssetError("scoring through a server needs httpx: pip install "
                             "'calibtune[serve]'") from None
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {concurrency}")
        if timeout <= 0:
            raise ConfigError(f"--request-timeout must be positive, got {timeout}")
        self.model, self.max_retries, self.backoff, self.max_wait = model, max_retries, backoff, max_wait
        key = api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._httpx = httpx
        self._http = httpx.Client(base_url=model.base_url + "/", headers=headers,
                                  timeout=httpx.Timeout(timeout),
                                  limits=httpx.Limits(max_connections=concurrency,
                                                      max_keepalive_connections=concurrency))
        self.retries = 0  # tries beyond the first, over all requests (reported in metrics)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServedClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def where(self) -> str:
        return f"the server at {self.model.base_url}"

    def served_names(self) -> list[str] | None:
        """The model names GET /models lists; None when the server has no such endpoint."""
        body = self._send("GET", "models", None, check_model=False)
        data = body.get("data") if isinstance(body, dict) else None
        if body is None or not isinstance(data, list):
            return None
        return [str(m.get("id")) for m in data if isinstance(m, dict)]

    def check_model(self) -> None:
        """Fail before anything is written when the server is down or lists other models."""
        names = self.served_names()
        if names is not None and self.model.name not in names:
            shown = ", ".join(repr(n) for n in names[:8]) or "none"
            raise ModelError(f"{self.where()} does not serve model {self.model.name!r}; it "
                             f"serves {shown}")

    def post(self, endpoint: str, body: dict) -> dict:
        """The JSON answer of POST `endpoint` (e.g. "completions"), after retries."""
        answer = self._send("POST", endpoint, body, check_model=True)
        if not isinstance(answer, dict):
            raise ModelError(f"{self.where()} answered {endpoint} with JSON that is not an "
                             f"object: {json.dumps(answer)[:80]}")
        return answer

    def _send(self, method: str, endpoint: str, body: dict | None, *, check_model: bool
              ) -> Any:
        httpx = self._httpx
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._http.request(method, endpoint, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                if last:
                    kind = "timed out" if isinstance(err, httpx.TimeoutException) else \
                        "could not be reached"
                    raise ModelError(f"{self.where()} {kind} after {attempt + 1} tries "
                                     f"({type(err).__name__}: {' '.join(str(err).split())[:80]}"
                                     "); is it running?") from None
                self._wait(attempt, None)
                continue
            status = response.status_code
            if status in RETRY_STATUS and not last:
                self._wait(attempt, _retry_after(response.headers.get("retry-after")))
                continue
            if status == 404 and method == "GET":
                return None  # no /models listing: nothing to check
            if status >= 400:
                raise self._refusal(endpoint, status, response, attempt, check_model)
            try:
                return response.json()
            except ValueError:
                shown = " ".join(response.text.split())[:60]
                raise ModelError(f"{self.where()} answered {endpoint} with malformed JSON "
                                 f"(HTTP {status}, {len(response.content)} bytes: {shown!r})"
                                 ) from None
        raise AssertionError("unreachable")

    def _refusal(self, endpoint: str, status: int, response: Any, attempt: int,
                 check_model: bool) -> ModelError:
        message = _server_message(response)
        if status in (401, 403):
            return ModelError(f"{self.where()} refused the API key (HTTP {status}: {message}); "
                              f"set {' or '.join('$' + v for v in KEY_VARIABLES)}")
        if status in RETRY_STATUS:
            return ModelError(f"{self.where()} still answered HTTP {status} after {attempt + 1} "
                              f"tries ({message}); retry later or lower --concurrency")
        if check_model and status in (400, 404) and "model" in message.lower():
            return ModelError(f"{self.where()} does not know model {self.model.name!r} "
                              f"(HTTP {status}: {message})")
        return ModelError(f"{self.where()} refused {endpoint} (HTTP {status}: {message})")

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        with self._lock:
            self.retries += 1
        delay = retry_after if retry_after is not None else \
            self.backoff * 2 ** attempt * (0.5 + random.random() / 2)
        time.sleep(min(self.max_wait, delay))
