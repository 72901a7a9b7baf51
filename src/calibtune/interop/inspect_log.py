"""Read Inspect eval logs of multiple-choice tasks run with log-probabilities into `OptionScores`.

Inspect (UK AISI, https://inspect.aisi.org.uk/) logs every sample's `choices`, `target` (a
letter) and the model's `output`; run with ``logprobs=True, top_logprobs=k`` the output holds,
per generated token, its log-probability and the k most likely tokens at that position. The
option probabilities are read at one position, the *answer position*:

1. the first option-letter token after "ANSWER:" (the format of Inspect's `multiple_choice()`
   templates, also after a chain of thought);
2. else the first option-letter token generated;
3. else the first generated token's position — what calibtune's own letter scoring reads, and
   what a "reply with the letter only" prompt with ``max_tokens=1`` gives.

A token is an option letter when, stripped of whitespace and of tokenizer space markers (Ġ, ▁,
Ċ), it is one of the item's uppercase letters and the next token (if any) does not go on with a
letter or digit (so the "A" of "A" + "rist" + "otle" is not an answer). At that position each
letter's probability is the sum of exp(logprob) over its top-k variants ("A", " A", "ĠA"); the
letters are renormalised over themselves. A letter outside the top-k gets probability 0
(floored at 1e-15): its true probability lies between 0 and the smallest top-k probability, and
all such letters together hold at most the position's *unseen mass* 1 − Σ top-k probabilities,
which is recorded per task (mean and max) with the items missing a letter and the mean letter
mass covered.

Confidence (ours): calibtune's top-label confidence, the largest renormalised option
probability. When the answer was decoded greedily and is a letter (rules 1–2) this is the
probability of the letter the model chose; it is not P(target), the probability of the correct
letter, which some hand-written Inspect ECE scorers use (it measures something else: P(target)
is low exactly when the model is confidently wrong).

Items whose answer position holds no option letter in its top-k, and samples that errored, are
left out and listed in the task's meta. Items are in sample-id order; ids are
``task/sample_id`` (``/epoch`` appended when a log ran several epochs); groups are the tasks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.items import LETTERS, MAX_OPTIONS, MIN_OPTIONS
from ..errors import DataError
from ..metrics.proper import PROB_FLOOR
from ..scores import OptionScores, pad_option_rows

SPACE_MARKERS = "Ġ▁Ċ"  # byte-level BPE space / newline, SentencePiece space
MARKER = "ANSWER:"
INSTALL_HINT = "reading Inspect logs needs inspect_ai: pip install 'calibtune[inspect]'"


def letter_of(token: str) -> str:
    """A token's text without whitespace and tokenizer space markers ("ĠA" → "A")."""
    return "".join(ch for ch in token if not ch.isspace() and ch not in SPACE_MARKERS)


@dataclass
class LetterProbs:
    """Option probabilities at the answer position of one generated output."""

    probs: list[float]  # renormalised over the options; 0 for letters outside the top-k
    position: int  # index of the answer token in the generated tokens
    rule: str  # "marker" (after ANSWER:), "letter" (first letter token) or "first" (token 0)
    chosen: str | None  # the letter generated there (None under rule "first")
    letter_mass: float  # Σ probability of the option letters found in the top-k
    unseen_mass: float  # 1 − Σ top-k probabilities: a bound on the letters outside it
    missing: list[int] = field(default_factory=list)  # options outside the top-k

    def logits(self) -> list[float]:
        return [math.log(max(p, PROB_FLOOR)) for p in self.probs]


def _is_letter(tokens: Sequence[str], i: int, letters: Sequence[str]) -> bool:
    """Token i is an option letter standing alone: not the start of a word ("A" + "rist")."""
    if letter_of(tokens[i]) not in letters:
        return False
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    return not nxt or not nxt[0].isalnum()


def id_order(sample_id: int | str | None) -> tuple[bool, int | str]:
    """Sort key of sample ids (numbers before text): the import and the Inspect metrics put
    items in this order, so the noise floor's simulation (order-dependent draws) agrees."""
    return (isinstance(sample_id, str), sample_id if sample_id is not None else "")


def answer_position(tokens: Sequence[str], letters: Sequence[str]) -> tuple[int, str] | None:
    """(index, rule) of the answer token among the generated `tokens` (rules in the module doc)."""
    if not tokens:
        return None
    text, after = "", None
    for i, tok in enumerate(tokens):
        text += letter_of(tok).upper()
        if text.endswith(MARKER):
            after = i
    if after is not None:
        for i in range(after + 1, len(tokens)):
            if _is_letter(tokens, i, letters):
                return i, "marker"
    for i in range(len(tokens)):
        if _is_letter(tokens, i, letters):
            return i, "letter"
    return 0, "first"


def letter_probabilities(tokens: Sequence[str], top: Sequence[Sequence[tuple[str, float]]],
                         n_options: int) -> LetterProbs | None:
    """Option probabilities from generated `tokens` and each position's top-k (token, logprob)
    pairs; None when the answer position's top-k holds no option letter."""
    letters = LETTERS[:n_options]
    found = answer_position(tokens, letters)
    if found is None:
        return None
    pos, rule = found
    mass = [0.0] * n_options
    seen: set[str] = set()
    total = 0.0
    for tok, lp in top[pos]:
        if tok in seen:  # a token listed twice counts once
            continue
        seen.add(tok)
        p = math.exp(lp) if math.isfinite(lp) else 0.0
        total += p
        if letter_of(tok) in letters:
            mass[letters.index(letter_of(tok))] += p
    letter_mass = sum(mass)
    if letter_mass <= 0:
        return None
    chosen = letter_of(tokens[pos]) if rule != "first" else None
    return LetterProbs([m / letter_mass for m in mass], pos, rule, chosen, letter_mass,
                       max(0.0, 1.0 - total), [i for i, m in enumerate(mass) if m <= 0])


def output_tokens(output: Any, *, file: str, sample: str) -> tuple[list[str], list[list]]:
    """(tokens, top-k pairs per token) from an Inspect `ModelOutput`; a one-line error when the
    output carries no log-probabilities or no top-k."""
    choices = getattr(output, "choices", None) or []
    logprobs = getattr(choices[0], "logprobs", None) if choices else None
    if logprobs is None or not logprobs.content:
        raise DataError("the model output has no log-probabilities; run the task with "
                        "logprobs=True and top_logprobs=K (K at least the number of options)",
                        file=file, row=None, field=f"sample {sample}")
    if not any(entry.top_logprobs for entry in logprobs.content):
        raise DataError("the model output has log-probabilities but no top_logprobs; run "
                        "the task with top_logprobs=K (K at least the number of options)",
                        file=file, field=f"sample {sample}")
    tokens = [entry.token for entry in logprobs.content]
    top = [[(t.token, float(t.logprob)) for t in entry.top_logprobs] if entry.top_logprobs
           else [(entry.token, float(entry.logprob))] for entry in logprobs.content]
    return tokens, top


def _gold(target: Any, n_options: int, *, file: str, sample: str) -> int:
    if isinstance(target, list):
        if len(target) != 1:
            raise DataError(f"{len(target)} correct answers; only single-answer multiple-choice "
                            "tasks can be imported", file=file, field=f"sample {sample}")
        target = target[0]
    text = str(target).strip().upper()
    if len(text) != 1 or text not in LETTERS[:n_options]:
        raise DataError(f"target {str(target)[:40]!r} is not one of the {n_options} option letters "
                        "(only multiple-choice tasks can be imported)", file=file,
                        field=f"sample {sample}")
    return LETTERS.index(text)


def find_logs(path: str | Path) -> list[Path]:
    """The log files to read: `path` itself, or every Inspect log (.eval / .json) under it."""
    path = Path(path)
    if not path.exists():
        raise DataError("not found", file=str(path))
    if path.is_file():
        if path.suffix not in (".eval", ".json"):
            raise DataError("not an Inspect log (expected a .eval or .json file)", file=str(path))
        return [path]
    from inspect_ai.log import list_eval_logs

    files = sorted(Path(info.name.removeprefix("file://")) for info in list_eval_logs(str(path)))
    if not files:
        raise DataError("no Inspect logs (.eval / .json) in this folder", file=str(path))
    return files


def read_log(path: Path) -> tuple[str, list[str], list[int], list[list[float]], dict]:
    """(task, ids, gold indices, option logits, info) of one Inspect log."""
    try:
        from inspect_ai.log import read_eval_log
    except ImportError:
        raise DataError(INSTALL_HINT, file=str(path)) from None
    file = str(path)
    try:
        log = read_eval_log(file)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one line naming it
        raise DataError(f"not a readable Inspect log ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:120] if str(err) else ''})", file=file) from None
    task = log.eval.task
    if not log.samples:
        raise DataError(f"the log holds no samples (status {log.status})", file=file)
    epochs = len({s.epoch for s in log.samples}) > 1
    ids, labels, rows = [], [], []
    errored, no_letter, missing_items = [], [], []
    rules = {"marker": 0, "letter": 0, "first": 0}
    letter_mass, unseen = [], []
    for s in sorted(log.samples, key=lambda s: (s.epoch, id_order(s.id))):
        sid = f"{task}/{s.id}" + (f"/{s.epoch}" if epochs else "")
        if s.error is not None:
            errored.append(sid)
            continue
        if not s.choices:
            raise DataError("the sample has no choices: not a multiple-choice task", file=file,
                            field=f"sample {s.id}")
        k = len(s.choices)
        if not MIN_OPTIONS <= k <= MAX_OPTIONS:
            raise DataError(f"{k} choices; need {MIN_OPTIONS} to {MAX_OPTIONS}", file=file,
                            field=f"sample {s.id}")
        gold = _gold(s.target, k, file=file, sample=str(s.id))
        tokens, top = output_tokens(s.output, file=file, sample=str(s.id))
        lp = letter_probabilities(tokens, top, k)
        if lp is None:
            no_letter.append(sid)
            continue
        rules[lp.rule] += 1
        letter_mass.append(lp.letter_mass)
        unseen.append(lp.unseen_mass)
        if lp.missing:
            missing_items.append(sid)
        ids.append(sid)
        labels.append(gold)
        rows.append(lp.logits())
    if not ids:
        raise DataError(f"no sample has an option letter among its output's top_logprobs "
                        f"({len(no_letter)} without, {len(errored)} errored)", file=file)
    top_k = log.eval.model_generate_config.top_logprobs
    info = {"task": task, "model": log.eval.model, "inspect_version": log.eval.packages.get(
        "inspect_ai"), "file": file, "status": log.status, "created": log.eval.created,
        "top_logprobs": top_k, "n": len(ids), "answer_position": rules,
        "letter_mass_mean": float(np.mean(letter_mass)),
        "unseen_mass_mean": float(np.mean(unseen)), "unseen_mass_max": float(np.max(unseen)),
        "items_missing_letters": len(missing_items), "missing_letter_samples": missing_items,
        "missing_letters": "probability 0",
        "no_letter_samples": no_letter, "errored_samples": errored}
    return task, ids, labels, rows, info


def load_inspect_logs(path: str | Path) -> OptionScores:
    """`OptionScores` from one Inspect log or every log in a folder (one group per task).

    Probabilities and confidence are defined in the module doc. Two logs of the same task (two
    models, or a rerun) are refused: read one at a time.
    """
    try:
        import inspect_ai  # noqa: F401 - only to name the missing extra
    except ImportError:
        raise DataError(INSTALL_HINT, file=str(path)) from None
    ids: list[str] = []
    labels: list[int] = []
    rows: list[list[float]] = []
    groups: list[str] = []
    tasks: dict[str, dict] = {}
    for f in find_logs(path):
        task, f_ids, f_labels, f_rows, info = read_log(f)
        if task in tasks:
            raise DataError(f"task {task!r} also in {tasks[task]['file']} (two runs of one task, "
                            "e.g. two models); read one log at a time", file=str(f))
        tasks[task] = info
        ids += f_ids
        labels += f_labels
        rows += f_rows
        groups += [task] * len(f_ids)
    logits, mask = pad_option_rows(rows)
    models = sorted({str(m["model"]) for m in tasks.values()})
    versions = sorted({str(m["inspect_version"]) for m in tasks.values() if m["inspect_version"]})
    meta = {"source": "inspect", "path": str(path), "tasks": tasks,
            "model": models[0] if len(models) == 1 else models,
            "inspect_version": versions[0] if len(versions) == 1 else (versions or None),
            "scoring": "inspect_letter_logprobs", "confidence": "max option probability",
            "missing_letters": "probability 0"}
    return OptionScores(logits, np.array(labels), mask, np.array(ids), meta, np.array(groups))
