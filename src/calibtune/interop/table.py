"""Read per-option scores made elsewhere from a plain CSV / JSONL / Parquet table.

Lets any evaluation pipeline hand its option scores to calibtune's metrics and calibrators
without a model. One row per item: an id, the gold label (0-based index or letter) and the
option scores, either one column per option (``option_0 .. option_k``, ``A, B, C, D`` or names
you give) or one list column. Without an ``id`` column (and no id column named) each item's id
is its row number as errors name it (1-based data row; a JSONL file's line). Trailing empty
option columns (or a shorter list) mean the item has fewer options; they are masked.

`kind="logprob"` takes the values as log-probabilities (or any logits); ``-inf`` means
probability 0 (stored as the row's largest score + log 1e-15, the floor `kind="prob"` gives a
0) and a row whose options are all ``-inf`` is refused. `kind="prob"` takes probabilities,
which must lie in [0, 1] and sum to 1 per row within `tol` unless `renormalise=True` (which
divides each row by its sum, so any non-negative weights do). Every bad row raises a one-line
`DataError` naming the file, the 1-based row and the field, like the item loaders.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..data.items import LETTERS, MAX_OPTIONS, MIN_OPTIONS
from ..data.loaders import _read_csv, _read_jsonl, _read_parquet, missing_field
from ..errors import DataError
from ..metrics.proper import PROB_FLOOR
from ..option_scores import OptionScores, pad_option_rows

KINDS = ("logprob", "prob")
LABEL_FORMATS = ("auto", "index", "letter")
READERS = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".csv": _read_csv,
           ".parquet": _read_parquet, ".pq": _read_parquet}


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    if not path.exists():
        raise DataError("file not found", file=str(path))
    if path.is_dir():
        raise DataError("is a folder; give a .jsonl, .csv or .parquet file", file=str(path))
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"unknown file type {path.suffix!r}; use .jsonl, .csv or .parquet",
                        file=str(path))
    return reader(path)


def _detect_option_columns(columns: Sequence[str], file: str) -> tuple[str, ...]:
    """``option_0 ..`` (numbered from 0, no gap), else ``A, B, ..`` (from A, no gap)."""
    numbered = {int(m.group(1)): c for c in columns if (m := re.fullmatch(r"option_(\d+)", c))}
    if numbered:
        k = 0
        while k in numbered:
            k += 1
        return tuple(numbered[i] for i in range(k))
    letters = []
    for letter in LETTERS:
        if letter not in columns:
            break
        letters.append(letter)
    if letters:
        return tuple(letters)
    have = ", ".join(map(str, columns)) or "no fields"
    raise DataError(f"no option columns found (looked for option_0.. and A, B, ..; the row has: "
                    f"{have}); name them with --options-field (comma-separated columns, or one "
                    "list column)", file=file, row=1)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, str) and not value.strip())


def _number(value: Any, *, file: str, row: int, fname: str, neg_inf: bool = False) -> float:
    if isinstance(value, bool) or isinstance(value, (list, dict, tuple)):
        raise DataError(f"expected a number, got {type(value).__name__}", file=file, row=row,
                        field=fname)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"not a number: {str(value)[:40]!r}", file=file, row=row,
                        field=fname) from None
    if not math.isfinite(x) and not (neg_inf and x == -math.inf):
        raise DataError(f"score must be finite, got {x}", file=file, row=row, field=fname)
    return x


def _values(raw: dict, options: str | tuple[str, ...], *, file: str, row: int,
            neg_inf: bool = False) -> tuple[list[float], list[str]]:
    if isinstance(options, tuple):
        missing = [c for c in options if c not in raw]
        if missing:
            raise missing_field(raw, missing[0], "options", file=file, row=row)
        vals, names = [raw[c] for c in options], list(options)
        while vals and _empty(vals[-1]):  # trailing empty columns: fewer options
            vals.pop()
            names.pop()
        for v, c in zip(vals, names):
            if _empty(v):
                raise DataError("empty option score before a filled one", file=file, row=row,
                                field=c)
    else:
        if options not in raw:
            raise missing_field(raw, options, "options", file=file, row=row)
        vals = raw[options]
        if isinstance(vals, str):
            try:
                vals = json.loads(vals)
            except json.JSONDecodeError:
                raise DataError("option scores must be a list (in CSV: a JSON-encoded list)",
                                file=file, row=row, field=options) from None
        if hasattr(vals, "tolist"):
            vals = vals.tolist()
        if not isinstance(vals, (list, tuple)):
            raise DataError(f"option scores must be a list, got {type(vals).__name__}",
                            file=file, row=row, field=options)
        names = [f"{options}[{i}]" for i in range(len(vals))]
    if not MIN_OPTIONS <= len(vals) <= MAX_OPTIONS:
        fname = options if isinstance(options, str) else ",".join(options)
        raise DataError(f"{len(vals)} option scores; need {MIN_OPTIONS} to {MAX_OPTIONS}",
                        file=file, row=row, field=fname)
    return [_number(v, file=file, row=row, fname=c, neg_inf=neg_inf) for v, c in zip(vals, names)], \
        names


def _label(value: Any, k: int, fmt: str, *, file: str, row: int, fname: str) -> int:
    if _empty(value):
        raise DataError("empty label", file=file, row=row, field=fname)
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise DataError(f"label must be an option index or letter, got {value!r}", file=file,
                        row=row, field=fname)
    text = str(int(value)) if isinstance(value, float) else str(value).strip()
    if fmt in ("auto", "index") and text.lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < k:
            raise DataError(f"label index {idx} out of range for {k} options (0-based)",
                            file=file, row=row, field=fname)
        return idx
    if fmt in ("auto", "letter") and len(text) == 1 and text.upper() in LETTERS:
        idx = LETTERS.index(text.upper())
        if idx >= k:
            raise DataError(f"label letter {text!r} out of range for {k} options", file=file,
                            row=row, field=fname)
        return idx
    want = {"auto": "an index or a letter", "index": "an integer index", "letter": "a letter"}[fmt]
    raise DataError(f"label {text[:40]!r} is not {want}", file=file, row=row, field=fname)


def _logits(vals: list[float], kind: str, renormalise: bool, tol: float, *, file: str, row: int,
            names: list[str]) -> list[float]:
    if kind == "logprob":
        finite = [v for v in vals if v != -math.inf]
        if not finite:
            raise DataError("every option's log-probability is -inf (probability 0); at least one "
                            "option needs a finite score", file=file, row=row, field=",".join(names))
        zero = max(finite) + math.log(PROB_FLOOR)  # probability 0, floored like kind="prob"
        return [zero if v == -math.inf else v for v in vals]
    for v, c in zip(vals, names):
        if v < -tol or (v > 1 + tol and not renormalise):
            raise DataError(f"probability {v:.6g} outside [0, 1]", file=file, row=row, field=c)
    p = np.maximum(np.array(vals), 0.0)
    total = float(p.sum())
    if total <= 0:
        raise DataError("probabilities sum to 0", file=file, row=row, field=",".join(names))
    if not renormalise and abs(total - 1.0) > tol:
        raise DataError(f"probabilities sum to {total:.6g}, not 1 (tolerance {tol:g}); pass "
                        "renormalise=True to rescale them", file=file, row=row,
                        field=",".join(names))
    return np.log(np.maximum(p / total, PROB_FLOOR)).tolist()


def load_option_table(path: str | Path, *, id_col: str | None = None, label_col: str = "label",
                      options: str | Sequence[str] | None = None, kind: str = "logprob",
                      label_format: str = "auto", renormalise: bool = False, tol: float = 1e-3,
                      group_col: str | None = "subject") -> OptionScores:
    """Read a table of per-option scores into `OptionScores` (logits = log-probabilities).

    `options`: None to detect ``option_0..`` or ``A, B, ..`` columns; a list of column names; or
    the name of one list column (JSON-encoded in CSV). With `kind="prob"` the stored logits are
    log p (p floored at 1e-15), so softmax gives back the (renormalised) probabilities.
    `group_col`: a column naming each item's group (default `subject`, used when present).
    `id_col`: None uses an ``id`` column when the first row has one, else the row numbers; a
    name given must be present in every row.
    """
    path = Path(path)
    file = str(path)
    if kind not in KINDS:
        raise DataError(f"kind must be {' or '.join(KINDS)}, got {kind!r}", file=file)
    if label_format not in LABEL_FORMATS:
        raise DataError(f"label_format must be one of {', '.join(LABEL_FORMATS)}, got "
                        f"{label_format!r}", file=file)
    opt: str | tuple[str, ...] | None = options if options is None or isinstance(options, str) \
        else tuple(options)
    ids: list[str] = []
    labels: list[int] = []
    rows: list[list[float]] = []
    seen: dict[str, int] = {}
    groups: list[str] = []
    for row, raw in _rows(path):
        if isinstance(raw, DataError):
            raise raw
        if opt is None:
            opt = _detect_option_columns(list(raw), file)
        vals, names = _values(raw, opt, file=file, row=row, neg_inf=kind == "logprob")
        if id_col is None:
            id_col = "id" if "id" in raw else ""
        if not id_col:  # no id column: the row number is the id
            item_id = str(row)
        elif id_col not in raw:
            raise missing_field(raw, id_col, "id", file=file, row=row)
        elif _empty(raw[id_col]):
            raise DataError("missing id", file=file, row=row, field=id_col)
        else:
            item_id = str(raw[id_col]).strip()
        if item_id in seen:
            raise DataError(f"duplicate id {item_id!r} (first seen in row {seen[item_id]})",
                            file=file, row=row, field=id_col)
        seen[item_id] = row
        if label_col not in raw:
            raise missing_field(raw, label_col, "answer", file=file, row=row)
        labels.append(_label(raw[label_col], len(vals), label_format, file=file, row=row,
                             fname=label_col))
        rows.append(_logits(vals, kind, renormalise, tol, file=file, row=row, names=names))
        ids.append(item_id)
        groups.append("" if group_col is None or _empty(raw.get(group_col)) else
                      str(raw[group_col]))
    if not rows:
        raise DataError("file holds no rows", file=file)
    logits, mask = pad_option_rows(rows)
    meta = {"source": "table", "path": file, "kind": kind, "renormalised": bool(renormalise),
            "id": id_col or "row number",
            "options": list(opt) if isinstance(opt, tuple) else opt}
    return OptionScores(logits, np.array(labels), mask, np.array(ids), meta,
                        np.array(groups) if any(groups) else None)
