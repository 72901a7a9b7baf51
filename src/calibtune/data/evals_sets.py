"""SocialIQA, QuaRTz and MedMCQA as shipped in OpenAI's `evals` package (registry JSONL).

Each row is a chat transcript whose last message holds the question with its options written
into the text, and an `ideal` answer. The parsers below take the options back out, so the items
can be scored in letter or cloze mode like any other; a row that does not parse is a
`DataError` naming the file, the line and the field.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Callable

from ..errors import DataError
from .items import LETTERS, MCQItem
from .loaders import FieldMap, LoadResult, item_from_row

log = logging.getLogger(__name__)

Parsed = tuple[str, list[str], int]  # question, options, index of the answer

_PARSED_FIELDS = FieldMap(question="question", options="options", answer="answer", id=None,
                          subject=None, answer_format="index")
_SOCIALIQA = re.compile(r"^(?P<q>.*) A: (?P<a>.*); B: (?P<b>.*); C: (?P<c>.*)\.$", re.DOTALL)
_QUARTZ = re.compile(r"^(?P<q>.*)\n\n A: (?P<a>.*)\n B: (?P<b>.*)$", re.DOTALL)
_MEDMCQA_OPTION = re.compile(r"^([a-d])\) ?(.*)$")


def _answer_index(ideal: str, n_options: int) -> int:
    letter = ideal.strip().strip("[]").strip()[:1].upper()
    index = LETTERS.find(letter) if letter else -1
    if not 0 <= index < n_options:
        raise ValueError(f"ideal {ideal!r} is not one of the {n_options} option letters")
    return index


def parse_socialiqa(content: str, ideal: str) -> Parsed:
    """`"<question> A: <a>; B: <b>; C: <c>."` with `ideal` A/B/C."""
    m = _SOCIALIQA.match(content.strip())
    if not m:
        raise ValueError("expected '<question> A: ...; B: ...; C: ....'")
    return m["q"].strip(), [m["a"], m["b"], m["c"]], _answer_index(ideal, 3)


def parse_quartz(content: str, ideal: str) -> Parsed:
    """`"<question>\\n\\n A: <a>\\n B: <b>"` with `ideal` A/B."""
    m = _QUARTZ.match(content.strip("\n"))
    if not m:
        raise ValueError("expected '<question>\\n\\n A: ...\\n B: ...'")
    return m["q"].strip(), [m["a"], m["b"]], _answer_index(ideal, 2)


def parse_medmcqa(content: str, ideal: str) -> Parsed:
    """`"Subject: <s>\\n\\n<question>\\n\\na) ...\\nb) ...\\nc) ...\\nd) ..."`, `ideal` "c) ..."."""
    lines = content.strip().split("\n")
    letters, options = [], []
    while lines and (m := _MEDMCQA_OPTION.match(lines[-1].strip())):
        letters.insert(0, m[1])
        options.insert(0, m[2])
        lines.pop()
    if len(options) < 2 or "".join(letters) != "abcd"[: len(options)]:
        raise ValueError("expected the options on the last lines as 'a) ...', 'b) ...', ...")
    body = "\n".join(lines).strip()
    if body.startswith("Subject:"):
        body = body.split("\n", 1)[1].strip() if "\n" in body else ""
    return body, options, _answer_index(ideal, len(options))


def _subject(content: str) -> str | None:
    first = content.strip().split("\n", 1)[0]
    return first[len("Subject:"):].strip() if first.startswith("Subject:") else None


def load_evals_jsonl(path: Path, name: str, parse: Callable[[str, str], Parsed]) -> LoadResult:
    """Items of one registry file. Rows that fail to parse or validate (5 SocialIQA and 1
    MedMCQA rows repeat an option) are errors in the source data, not in the user's input:
    they are dropped and logged with their line, as the MMLU errata are."""
    result = LoadResult(items=[], source=str(path))
    dropped: list[DataError] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                raw = json.loads(line)
                content = raw["input"][-1]["content"]
                question, options, answer = parse(content, str(raw["ideal"]))
                parsed = item_from_row({"question": question, "options": options,
                                        "answer": answer}, _PARSED_FIELDS, file=str(path),
                                       row=line_no)  # the same checks as any user file
            except (ValueError, KeyError, IndexError, TypeError) as err:
                dropped.append(DataError(str(err), file=str(path), row=line_no, field="input"))
                continue
            except DataError as err:  # e.g. two identical options
                dropped.append(err)
                continue
            result.items.append(MCQItem(id=f"{name}-{line_no}", question=parsed.question,
                                        options=parsed.options, answer=parsed.answer,
                                        subject=_subject(content), meta=parsed.meta))
    for err in dropped:
        log.debug("%s: dropping %s", name, err)
    if dropped:
        log.info("%s: dropped %d of %d rows that are not valid items (e.g. %s)", name,
                 len(dropped), len(result.items) + len(dropped), dropped[0])
    return result
