"""Option scores from a model behind an OpenAI-compatible server (`--model openai:URL/MODEL`).

Letter scoring asks for one answer token with its `top_logprobs`: the completions endpoint for
the `plain` and `reference` prompts (the same text `prompts.render_prompt` gives in-process
scoring), the chat-completions endpoint for `chat` (the question as `prompts.chat_turn` asks it;
the server applies its own chat template). An option letter is found by the exact text the
in-process scorer reads (`prompts.letter_prefix` + letter, e.g. " A" after the plain prompt).
The softmax over the K letters' log-probabilities equals the in-process one over their logits.
When the model's first token is its end-of-sequence token the server answers with no token and
no log-probabilities; that item is asked again with `min_tokens: 1` (vLLM and llama.cpp honour
it by masking EOS, which shifts every letter's log-probability by the same amount and leaves
their softmax unchanged).

Letters outside the top-k (ours): the server only says their log-probability is at most the
smallest one it returned, so each missing letter is given that smallest log-probability (a
floor that is also an upper bound) and the item is flagged. Per item we record the letter mass
the top-k shows (Σ p over the letters seen) and its coverage, seen / (seen + missing · floor),
a lower bound on the share of the option mass the top-k covers (1 when every letter is seen).

Cloze scoring sends context + option to the completions endpoint with `echo` and `logprobs`
and sums the log-probabilities of the tokens from the option's first character on (the
server's `text_offset`s split context from option). vLLM, llama.cpp and the legacy OpenAI
models return these; a server that does not is one `ModelError` line.

Requests run in a bounded thread pool (`ServedClient` retries and backs off); scores come back
item by item as they finish, so eval's chunked resume works as with a local model.
"""
from __future__ import annotations

import hashlib
import math
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm.auto import tqdm

from ..data.items import LETTERS, MCQItem
from ..errors import ConfigError, DataError, ModelError
from ..integrity import atomic_write_json, read_json_file
from ..models.served import ServedClient, parse_served
from ..scores import OptionScores
from .base import CLOZE_NORMS, collect_logits, scores_from
from .cloze import cloze_context, normalise
from .prompts import PROMPT_STYLES, chat_turn, letter_prefix, render_prompt

TOP_LOGPROBS = 20  # the most the OpenAI chat endpoint allows; vLLM and llama.cpp allow it too
OUTSIDE_TOPK = "floor"  # what a letter outside the top-k gets: the smallest returned log-prob
RECORDS = "topk"  # the folder (in the run's .partial) of each finished batch's top-k records


def letter_request(item: MCQItem, style: str, model: str, top: int,
                   exemplars: tuple = ()) -> tuple[str, dict]:
    """(endpoint, body) asking for the first answer token's top log-probabilities."""
    common = {"model": model, "max_tokens": 1, "temperature": 0.0}
    if style == "chat":
        messages = []
        for ex in exemplars:
            messages += [chat_turn(ex), {"role": "assistant", "content": LETTERS[ex.answer]}]
        messages.append(chat_turn(item))
        return "chat/completions", {**common, "messages": messages, "logprobs": True,
                                    "top_logprobs": top}
    return "completions", {**common, "prompt": render_prompt(item, style, None, exemplars),
                           "logprobs": top}


def first_token_top(answer: dict, chat: bool) -> dict[str, float]:
    """{token text: log-prob} of the first generated token, from either endpoint's answer."""
    try:
        logprobs = answer["choices"][0].get("logprobs")
        if chat:
            entries = (logprobs or {}).get("content") or []
            top = entries[0].get("top_logprobs") if entries else None
            pairs = {e["token"]: float(e["logprob"]) for e in top or []}
        else:
            tops = (logprobs or {}).get("top_logprobs") or []
            pairs = {str(t): float(v) for t, v in (tops[0] or {}).items()} if tops else {}
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise ModelError("the server's answer has no readable choices[0].logprobs") from None
    return {t: v for t, v in pairs.items() if math.isfinite(v)}


def _stopped(answer: dict) -> bool:
    """Whether the server ended the answer before its first token (the model chose EOS)."""
    try:
        return answer["choices"][0].get("finish_reason") == "stop"
    except (KeyError, IndexError, TypeError, AttributeError):
        return False


def letter_scores(top: dict[str, float], k: int, style: str) -> tuple[np.ndarray, dict]:
    """The K letters' log-probabilities (missing ones floored) and the item's coverage record."""
    floor = min(top.values())
    wanted = [letter_prefix(style) + LETTERS[i] for i in range(k)]
    seen = [w in top for w in wanted]
    scores = np.array([top[w] if s else floor for w, s in zip(wanted, seen)])
    mass = float(sum(math.exp(top[w]) for w, s in zip(wanted, seen) if s))
    missing = k - sum(seen)
    bound = missing * math.exp(floor)
    return scores, {"letter_mass": mass, "missing": missing,
                    "coverage": mass / (mass + bound) if mass + bound > 0 else 0.0}


def continuation_logprob(answer: dict, start: int, end: int) -> tuple[float, int]:
    """(Σ log-prob, token count) of the echoed tokens starting in [start, end) of the prompt."""
    try:
        lp = answer["choices"][0]["logprobs"]
        offsets, values = lp["text_offset"], lp["token_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise ModelError("the server returned no prompt log-probabilities (echo with logprobs): "
                         "cloze scoring needs them; use --scoring letter") from None
    total, n = 0.0, 0
    for offset, value in zip(offsets, values):
        if start <= offset < end:
            if value is None:
                raise ModelError("the server returned no log-probability for an option token")
            total, n = total + float(value), n + 1
    if n == 0:
        raise ModelError("the server's echoed tokens do not cover the option text (no "
                         "text_offset inside it)")
    return total, n


class ServedScorer:
    """Letter or cloze option scores of items, asked of a served model over HTTP."""

    def __init__(self, client: ServedClient, scoring: str = "letter", *, prompt: str = "plain",
                 cloze_norm: str = "none", concurrency: int = 8, progress: bool | str = True,
                 fewshot: Any = None, top_logprobs: int = TOP_LOGPROBS) -> None:
        if scoring not in ("letter", "cloze"):
            raise ConfigError(f"--scoring must be letter or cloze, got {scoring!r}")
        if prompt not in PROMPT_STYLES:
            raise ConfigError(f"unknown prompt style {prompt!r}; choose one of "
                              f"{', '.join(PROMPT_STYLES)}")
        if top_logprobs < 1:
            raise ConfigError(f"--top-logprobs must be at least 1, got {top_logprobs}")
        if cloze_norm not in CLOZE_NORMS:
            raise ConfigError(f"--cloze-norm must be one of {', '.join(CLOZE_NORMS)}, got "
                              f"{cloze_norm!r}")
        self.client, self.scoring, self.prompt, self.norm = client, scoring, prompt, cloze_norm
        self.concurrency, self.progress, self.fewshot = concurrency, progress, fewshot
        self.top_logprobs = top_logprobs
        self.records: dict[str, dict] = {}  # item id → coverage record (letter scoring)
        self.record_dir: Path | None = None  # where each finished batch's records are saved
        self._echo_checked = False

    def items_per_batch(self, k_max: int) -> int:
        return self.concurrency

    def encode(self, items: list[MCQItem]) -> list[list[tuple[str, dict, tuple[int, int]]]]:
        """Each item's requests: (endpoint, body, (start, end) of the option text or (0, 0))."""
        out = []
        for it in items:
            shots = tuple(self.fewshot.for_item(it)) if self.fewshot else ()
            if self.scoring == "letter":
                endpoint, body = letter_request(it, self.prompt, self.client.model.name,
                                                self.top_logprobs, shots)
                out.append([(endpoint, body, (0, 0))])
                continue
            context = cloze_context(it, shots)
            if not self._echo_checked:
                self.check_echo(context)
                self._echo_checked = True
            requests = []
            for opt in it.options:
                text = " " + opt.strip()
                if not opt.strip():
                    raise DataError(f"item {it.id}: an option is empty", file=it.meta.get("file"),
                                    row=it.meta.get("row"), field="options")
                body = {"model": self.client.model.name, "prompt": context + text,
                        "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}
                requests.append(("completions", body, (len(context), len(context) + len(text))))
            out.append(requests)
        return out

    def check_echo(self, context: str) -> None:
        """Refuse a server whose echoed prompt log-probabilities are shifted by one token.

        The same number is asked two ways: log p(g | context) of the token g the server
        generates after `context` (completions, no echo), and the echoed log-probability of g
        at the end of context + g. They differ when the server pairs each prompt token with
        the distribution that follows it instead of the one that predicts it (llama-cpp-python
        0.3.36 does so for models without a BOS token), which would make every cloze score
        wrong."""
        name = self.client.model.name
        plain = self.client.post("completions", {"model": name, "prompt": context,
                                                 "max_tokens": 1, "temperature": 0.0,
                                                 "logprobs": 1})
        try:
            lp = plain["choices"][0]["logprobs"]
            token, direct = lp["tokens"][0], float(lp["token_logprobs"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ModelError(f"{self.client.where()} returned no log-probabilities for model "
                             f"{name!r}; cloze scoring needs completions with logprobs and echo"
                             ) from None
        if not token:
            return  # nothing to compare (an empty or special token)
        echoed = self.client.post("completions", {"model": name, "prompt": context + token,
                                                  "max_tokens": 1, "temperature": 0.0,
                                                  "echo": True, "logprobs": 1})
        total, n = continuation_logprob(echoed, len(context), len(context) + len(token))
        if n == 1 and abs(total - direct) > 1e-3 * max(1.0, abs(direct)):
            raise ModelError(f"{self.client.where()} echoes prompt log-probabilities shifted by "
                             f"one token (log p({token!r} | context) is {direct:.4f} when "
                             f"generated, {total:.4f} when echoed; llama-cpp-python does this "
                             "for models without a BOS token): its cloze scores would be wrong; "
                             "use --scoring letter or another server")

    def _score_item(self, item: MCQItem, requests: list) -> tuple[np.ndarray, dict | None]:
        if self.scoring == "letter":
            endpoint, body, _ = requests[0]
            chat = endpoint.startswith("chat")
            answer = self.client.post(endpoint, body)
            top = first_token_top(answer, chat)
            if not top and _stopped(answer):  # the model ended at once: no token, no logprobs
                top = first_token_top(self.client.post(endpoint, {**body, "min_tokens": 1}), chat)
            if not top:
                raise ModelError(f"{self.client.where()} returned no log-probabilities for "
                                 f"model {self.client.model.name!r} (item {item.id}); letter "
                                 "scoring needs top_logprobs on the first answer token")
            return letter_scores(top, item.n_options, self.prompt)
        sums, n_tokens = [], []
        for endpoint, body, (start, end) in requests:
            total, n = continuation_logprob(self.client.post(endpoint, body), start, end)
            sums.append(total)
            n_tokens.append(n)
        scores = normalise(np.array(sums), np.array(n_tokens),
                           np.array([len(o.strip()) for o in item.options]), self.norm)
        return scores, None

    def iter_batches(self, items: list[MCQItem], encoded: list | None = None
                     ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield ([item index], option scores [1, K_max]) as each item's requests finish."""
        encoded = self.encode(items) if encoded is None else encoded
        k_max = max(it.n_options for it in items)
        label = self.progress if isinstance(self.progress, str) else f"scoring ({self.scoring}, served)"
        bar = tqdm(total=len(items), desc=label, unit="item", disable=not self.progress)
        done: dict[str, dict] = {}
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            pending = {}
            queue = iter(range(len(items)))
            for i in queue:  # at most 2 × concurrency items in flight or waiting
                pending[pool.submit(self._score_item, items[i], encoded[i])] = i
                if len(pending) >= 2 * self.concurrency:
                    break
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    scores, record = future.result()  # a failure stops the chunk, unsaved
                    if record is not None:
                        done[items[i].id] = record
                    row = np.zeros((1, k_max))
                    row[0, : len(scores)] = scores
                    bar.update(1)
                    yield [i], row
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(self._score_item, items[nxt], encoded[nxt])] = nxt
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        self.records.update(done)
        if self.record_dir is not None and done:
            key = hashlib.sha256("\x00".join(sorted(done)).encode()).hexdigest()[:16]
            folder = self.record_dir / RECORDS
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / f"{key}.json", done)

    def load_records(self) -> None:
        """The coverage records of batches scored before a resume (saved in `record_dir`)."""
        folder = None if self.record_dir is None else self.record_dir / RECORDS
        if folder is None or not folder.is_dir():
            return
        for path in sorted(p for p in folder.iterdir() if p.suffix == ".json"):
            for item_id, record in read_json_file(path).items():
                self.records.setdefault(item_id, record)

    def summary(self, items: list[MCQItem]) -> dict:
        """What metrics.json says about the top-k (letter scoring): the policy and coverage."""
        if self.scoring != "letter":
            return {"served": {"endpoint": "completions (echo)", "retries": self.client.retries}}
        self.load_records()
        rows = [self.records.get(it.id) for it in items]
        known = [r for r in rows if r is not None]
        cover = np.array([r["coverage"] for r in known]) if known else np.zeros(0)
        mass = np.array([r["letter_mass"] for r in known]) if known else np.zeros(0)
        missing = np.array([r["missing"] for r in known]) if known else np.zeros(0)
        return {"served": {
            "endpoint": "chat/completions" if self.prompt == "chat" else "completions",
            "top_logprobs": self.top_logprobs, "outside_topk": OUTSIDE_TOPK,
            "items": len(items), "items_with_records": len(known),
            "items_with_missing_letters": int((missing > 0).sum()),
            "items_with_no_letter_seen": int((mass == 0).sum()),
            "coverage_min": _quantile(cover, 0.0), "coverage_median": _quantile(cover, 0.5),
            "letter_mass_min": _quantile(mass, 0.0), "letter_mass_median": _quantile(mass, 0.5),
            "retries": self.client.retries}}

    def item_table(self, items: list[MCQItem]) -> str:
        """topk_coverage.csv: per item, the letter mass seen, letters missing, coverage."""
        self.load_records()
        lines = ["id,letter_mass,missing,coverage"]
        for it in items:
            r = self.records.get(it.id)
            if r is not None:
                lines.append(f"{_csv(it.id)},{r['letter_mass']:.6g},{r['missing']},"
                             f"{r['coverage']:.6g}")
        return "\n".join(lines) + "\n"

    def score(self, items: list[MCQItem], meta: dict | None = None) -> OptionScores:
        return scores_from(items, collect_logits(self, items), meta)


def served_scorer(spec: str, scoring: str = "letter", *, prompt: str = "plain",
                  cloze_norm: str = "none", concurrency: int = 8, timeout: float = 60.0,
                  top_logprobs: int = TOP_LOGPROBS, progress: bool | str = True,
                  fewshot: Any = None) -> ServedScorer:
    """The scorer of `--model openai:BASE_URL/MODEL`, after checking the server lists the model
    (so an unreachable server or an unknown name fails before anything is written)."""
    client = ServedClient(parse_served(spec), concurrency=concurrency, timeout=timeout)
    client.check_model()
    return ServedScorer(client, scoring, prompt=prompt, cloze_norm=cloze_norm,
                        concurrency=concurrency, progress=progress, fewshot=fewshot,
                        top_logprobs=top_logprobs)


def _quantile(values: np.ndarray, q: float) -> float | None:
    return float(np.quantile(values, q)) if values.size else None


def _csv(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text
