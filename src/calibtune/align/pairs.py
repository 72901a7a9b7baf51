"""Preference pairs: (prompt, chosen, rejected) texts, from MCQ items or a user's JSONL file.

From an MCQ item the chosen response is the gold answer and the rejected one a wrong option
drawn with a seeded generator, read the way scoring reads options:

- `letter`: the prompt is the item rendered in the prompt style (`render_prompt`); the responses
  are ``letter_prefix(style) + letter`` (" B" after the plain template's "Answer:", "B" after the
  reference template and in chat), the exact token the letter scorer reads.
- `cloze`: the prompt is `cloze_context(item)` (``Question: <q>\\nAnswer:``, whatever the prompt
  style, as the cloze scorer does) and the responses are ``" " + option text``.

A user's file is JSONL with string fields `prompt`, `chosen`, `rejected` (and an optional `id`);
every row is validated and a bad one fails with a one-line `DataError` naming the file, the
1-based line and the field.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..scoring.cloze import cloze_context
from ..data.items import LETTERS, MCQItem
from ..data.loaders import MAX_FIELD_CHARS, _read_jsonl, validated_rows
from ..defaults import SCORINGS
from ..errors import ConfigError, DataError
from ..scoring.prompts import letter_prefix, render_prompt

PAIR_FIELDS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    """One preference: `chosen` is preferred to `rejected` as a continuation of `prompt`.

    `chat` says the prompt already holds a chat template's special tokens, so it is tokenised
    without adding any (as `PromptEncoder` does for the chat style); other prompts get the
    tokenizer's default special tokens (a BOS token where it adds one).
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    chat: bool = False
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict:
        return asdict(self)


def _rng(seed: int, item_id: str) -> random.Random:
    # One generator per item, seeded by (seed, id): an item's rejected option does not depend
    # on which other items are in the list or on their order. String seeds hash with SHA-512,
    # so they do not depend on PYTHONHASHSEED.
    return random.Random(f"calibtune-pairs:{seed}:{item_id}")


def wrong_option(item: MCQItem, seed: int = 0) -> int:
    """The seeded wrong option of `item` (never its answer)."""
    wrong = [i for i in range(item.n_options) if i != item.answer]
    return _rng(seed, item.id).choice(wrong)


def pair_from_item(item: MCQItem, *, scoring: str = "letter", style: str = "plain",
                   tokenizer: Any = None, seed: int = 0) -> PreferencePair:
    """The preference pair of one item: gold answer over a seeded wrong option."""
    if scoring not in SCORINGS:
        raise ConfigError(f"--scoring must be {' or '.join(SCORINGS)}, got {scoring!r}")
    wrong = wrong_option(item, seed)
    meta = {"source": "mcq", "item": item.id, "answer": item.answer, "rejected_option": wrong,
            **{k: v for k, v in item.meta.items() if k in ("file", "row")}}
    if scoring == "letter":
        prefix = letter_prefix(style)
        return PreferencePair(id=item.id, prompt=render_prompt(item, style, tokenizer),
                              chosen=prefix + LETTERS[item.answer],
                              rejected=prefix + LETTERS[wrong], chat=style == "chat", meta=meta)
    return PreferencePair(id=item.id, prompt=cloze_context(item),
                          chosen=" " + item.options[item.answer].strip(),
                          rejected=" " + item.options[wrong].strip(), meta=meta)


def pairs_from_items(items: Iterable[MCQItem], *, scoring: str = "letter", style: str = "plain",
                     tokenizer: Any = None, seed: int = 0) -> list[PreferencePair]:
    """One pair per item (see the module docstring); seeded, reproducible, order-independent."""
    return [pair_from_item(it, scoring=scoring, style=style, tokenizer=tokenizer, seed=seed)
            for it in items]


@dataclass
class PreferenceLoadResult:
    """Pairs that passed validation, and the errors of those that did not (with skip_invalid)."""

    pairs: list[PreferencePair]
    rejected: list[DataError] = field(default_factory=list)
    source: str = ""


def _string(raw: dict, name: str, *, file: str, row: int) -> str:
    value = raw[name]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise DataError(f"empty {name}", file=file, row=row, field=name)
    if not isinstance(value, str):
        raise DataError(f"{name} must be a string, got {type(value).__name__}", file=file, row=row,
                        field=name)
    if not value.strip():
        raise DataError(f"empty {name}", file=file, row=row, field=name)
    if len(value) > MAX_FIELD_CHARS:
        raise DataError(f"{name} is {len(value):,} characters (limit {MAX_FIELD_CHARS:,})",
                        file=file, row=row, field=name)
    return value


def pair_from_row(raw: dict, *, file: str, row: int) -> PreferencePair:
    """Validate one raw record and turn it into a `PreferencePair`, or raise `DataError`."""
    missing = [f for f in PAIR_FIELDS if f not in raw]
    if missing:
        have = ", ".join(sorted(map(str, raw))) or "none"
        raise DataError(f"missing field{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(missing)} (the row has: {have}); preference files name "
                        "their fields prompt, chosen and rejected (no flag maps other names: "
                        "rename them)", file=file, row=row, field=missing[0])
    prompt, chosen, rejected = (_string(raw, f, file=file, row=row) for f in PAIR_FIELDS)
    if chosen.strip() == rejected.strip():
        raise DataError("chosen and rejected are the same text", file=file, row=row,
                        field="rejected")
    pair_id = f"{Path(file).stem}:{row}"
    if raw.get("id") not in (None, ""):
        if isinstance(raw["id"], (dict, list, bool)):
            raise DataError(f"id must be a string or a number, got {type(raw['id']).__name__}",
                            file=file, row=row, field="id")
        pair_id = str(raw["id"])
    return PreferencePair(id=pair_id, prompt=prompt, chosen=chosen, rejected=rejected,
                          meta={"source": "file", "file": file, "row": row})


def load_preferences(path: str | Path, *, skip_invalid: bool = False) -> PreferenceLoadResult:
    """Load and validate a JSONL file of preference pairs (`prompt`, `chosen`, `rejected`).

    Raises the first `DataError` unless `skip_invalid`, in which case bad rows are returned in
    `rejected` and the good ones kept. Reads only; writes nothing.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path))
    if path.is_dir():
        raise DataError("is a folder; give a .jsonl file of prompt/chosen/rejected rows",
                        file=str(path))
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"unknown file type {path.suffix!r}; preference pairs are read from "
                        ".jsonl (one JSON object per line)", file=str(path))
    pairs, rejected = validated_rows(
        _read_jsonl(path), lambda raw, row: pair_from_row(raw, file=str(path), row=row),
        file=str(path), id_field="id", skip_invalid=skip_invalid)
    return PreferenceLoadResult(pairs=pairs, rejected=rejected, source=str(path))


def pairs_to_jsonl(pairs: Iterable[PreferencePair]) -> str:
    """The JSONL text `load_preferences` reads back (id, prompt, chosen, rejected)."""
    return "".join(json.dumps({"id": p.id, "prompt": p.prompt, "chosen": p.chosen,
                               "rejected": p.rejected}, ensure_ascii=False) + "\n" for p in pairs)


def split_pairs(pairs: list[PreferencePair], heldout_fraction: float, seed: int = 0
                ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) with round(fraction·n) pairs held out, chosen by seed, order kept."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ConfigError(f"--heldout-fraction must be in (0, 1), got {heldout_fraction}")
    n_held = int(round(heldout_fraction * len(pairs)))
    if n_held == 0 or n_held == len(pairs):
        raise ConfigError(f"--heldout-fraction {heldout_fraction} of {len(pairs)} pairs leaves "
                          "one side empty")
    held = set(random.Random(f"calibtune-split:{seed}").sample(range(len(pairs)), n_held))
    return ([p for i, p in enumerate(pairs) if i not in held],
            [p for i, p in enumerate(pairs) if i in held])
