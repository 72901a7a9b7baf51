"""Read MCQ items from JSONL, CSV or Parquet, validating every row.

Every rejected row becomes a `DataError` naming the file, the row (1-based: the line for JSONL,
the record after the header for CSV, the table row for Parquet) and the field at fault.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import DataError
from .items import LETTERS, MAX_OPTIONS, MIN_OPTIONS, MCQItem

MAX_FIELD_CHARS = 100_000  # a longer question or option is a broken file, not a real item
# The command-line flag that names each part's field (`calibtune eval`; for `--from table` the
# answer flag names the label column).
FIELD_FLAGS = {"question": "--question-field", "options": "--options-field",
               "answer": "--answer-field", "id": "--id-field", "subject": "--subject-field"}


def missing_field(raw: dict, name: str, part: str, *, file: str, row: int) -> DataError:
    """'missing field (the row has: a, b, c); name the question field with --question-field'."""
    have = ", ".join(map(str, raw)) or "no fields"
    return DataError(f"missing field (the row has: {have}); name the {part} field with "
                     f"{FIELD_FLAGS[part]}", file=file, row=row, field=name)


@dataclass(frozen=True)
class FieldMap:
    """Which raw fields hold the parts of an item.

    `options` is either one field holding a list (JSON list; in CSV a JSON-encoded list) or a
    list of fields, one per option (e.g. ``["answer_a", "answer_b", "answer_c", "answer_d"]``).
    `answer` may hold a 0-based index, a letter (``"C"``) or the exact text of an option;
    `answer_format` says which, or ``"auto"`` to infer it per row.
    """

    question: str = "question"
    options: str | tuple[str, ...] = "options"
    answer: str = "answer"
    id: str | None = "id"
    subject: str | None = "subject"
    answer_format: str = "auto"  # auto | index | letter | text
    group: str | None = None  # few-shot group (default: the subject), kept in meta["group"]

    def __post_init__(self) -> None:
        if self.answer_format not in {"auto", "index", "letter", "text"}:
            raise DataError(f"answer_format must be auto|index|letter|text, got {self.answer_format!r}")
        if isinstance(self.options, list):
            object.__setattr__(self, "options", tuple(self.options))


@dataclass
class LoadResult:
    """Items that passed validation, and the errors of those that did not (with skip_invalid).

    It is also the sequence of its items, so it can be scored or trained on as it is."""

    items: list[MCQItem]
    rejected: list[DataError] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[MCQItem]:
        return iter(self.items)

    def __getitem__(self, index):
        return self.items[index]


def load_items(path: str | Path, fields: FieldMap | None = None, *,
               skip_invalid: bool = False) -> LoadResult:
    """Load and validate a JSONL / CSV / Parquet file of MCQ items.

    Raises the first `DataError` unless `skip_invalid`, in which case bad rows are returned in
    `LoadResult.rejected` and the good ones kept.
    """
    path = Path(path)
    fields = fields or FieldMap()
    if not path.exists():
        raise DataError("file not found", file=str(path))
    if path.is_dir():
        raise DataError("is a folder; give a .jsonl, .csv or .parquet file", file=str(path))
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    readers = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".csv": _read_csv,
               ".parquet": _read_parquet, ".pq": _read_parquet}
    if suffix.lower() not in readers:
        raise DataError(f"unknown file type {suffix!r}; use .jsonl, .csv or .parquet", file=str(path))
    items, rejected = validated_rows(readers[suffix.lower()](path),
                                     lambda raw, row: item_from_row(raw, fields, file=str(path),
                                                                    row=row),
                                     file=str(path), id_field=fields.id, skip_invalid=skip_invalid)
    return LoadResult(items=items, rejected=rejected, source=str(path))


def validated_rows(rows: Iterator[tuple[int, Any]], parse: Callable[[Any, int], Any], *,
                   file: str, id_field: str, skip_invalid: bool) -> tuple[list, list[DataError]]:
    """Parse each (row number, raw row) with `parse`, refusing duplicate `.id`s; a bad row raises
    its `DataError` unless `skip_invalid` (then it is returned as rejected). An empty file, or one
    with no valid row, is refused. Shared by every row-level loader (items, preference pairs)."""
    kept: list = []
    rejected: list[DataError] = []
    seen: dict[str, int] = {}
    n_rows = 0
    for row_no, raw in rows:
        n_rows += 1
        try:
            if isinstance(raw, DataError):
                raise raw
            parsed = parse(raw, row_no)
            if parsed.id in seen:
                raise DataError(f"duplicate id {parsed.id!r} (first seen in row {seen[parsed.id]})",
                                file=file, row=row_no, field=id_field)
            seen[parsed.id] = row_no
            kept.append(parsed)
        except DataError as err:
            if not skip_invalid:
                raise
            rejected.append(err)
    if n_rows == 0:
        raise DataError("file holds no rows", file=file)
    if not kept:
        raise DataError(f"no valid rows ({len(rejected)} rejected; first: "
                        f"{rejected[0] if rejected else 'none'})", file=file)
    return kept, rejected


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte {err.start}); re-encode the file as UTF-8",
                        file=str(path), row=line) from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    text = _decode(path.read_bytes(), path)
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            yield line_no, DataError(f"malformed JSON ({err.msg} at column {err.colno})",
                                     file=str(path), row=line_no)
            continue
        if not isinstance(raw, dict):
            yield line_no, DataError(f"expected a JSON object, got {type(raw).__name__}",
                                     file=str(path), row=line_no)
            continue
        yield line_no, raw


def _read_csv(path: Path) -> Iterator[tuple[int, Any]]:
    text = _decode(path.read_bytes(), path)
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    row_no = 0
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield row_no + 1, DataError(f"malformed CSV ({err})", file=str(path), row=row_no + 1)
            return
        row_no += 1
        if None in rec:
            yield row_no, DataError(f"{len(rec[None])} more values than header columns",
                                    file=str(path), row=row_no)
            continue
        if any(v is None for v in rec.values()):
            yield row_no, DataError("fewer values than header columns", file=str(path), row=row_no)
            continue
        yield row_no, rec


def _read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise DataError(f"unreadable Parquet ({err})", file=str(path)) from None
    for row_no, rec in enumerate(table.to_pylist(), start=1):
        yield row_no, rec


def _text(value: Any, *, file: str, row: int, fname: str, what: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise DataError(f"empty {what}", file=file, row=row, field=fname)
    if isinstance(value, (dict, list, tuple, bool)):
        raise DataError(f"{what} must be text, got {type(value).__name__}", file=file, row=row,
                        field=fname)
    text = str(value)
    if not text.strip():
        raise DataError(f"empty {what}", file=file, row=row, field=fname)
    if len(text) > MAX_FIELD_CHARS:
        raise DataError(f"{what} is {len(text):,} characters (limit {MAX_FIELD_CHARS:,})",
                        file=file, row=row, field=fname)
    return text


def _options(raw: dict, fields: FieldMap, *, file: str, row: int) -> tuple[tuple[str, ...], list[str]]:
    if isinstance(fields.options, tuple):
        names = list(fields.options)
        missing = [n for n in names if n not in raw]
        if missing:
            raise missing_field(raw, missing[0], "options", file=file, row=row)
        values = [raw[n] for n in names]
        # trailing empty columns mean "this item has fewer options"
        while values and (values[-1] is None or str(values[-1]).strip() == ""):
            values.pop()
            names.pop()
    else:
        if fields.options not in raw:
            raise missing_field(raw, fields.options, "options", file=file, row=row)
        values = raw[fields.options]
        if isinstance(values, str):
            try:
                values = json.loads(values)
            except json.JSONDecodeError:
                raise DataError("options must be a list (in CSV: a JSON-encoded list)",
                                file=file, row=row, field=fields.options) from None
        if hasattr(values, "tolist"):
            values = values.tolist()
        if not isinstance(values, (list, tuple)):
            raise DataError(f"options must be a list, got {type(values).__name__}",
                            file=file, row=row, field=fields.options)
        names = [f"{fields.options}[{i}]" for i in range(len(values))]
    if not MIN_OPTIONS <= len(values) <= MAX_OPTIONS:
        fname = fields.options if isinstance(fields.options, str) else ",".join(fields.options)
        raise DataError(f"{len(values)} options; need {MIN_OPTIONS} to {MAX_OPTIONS}",
                        file=file, row=row, field=fname)
    options = tuple(_text(v, file=file, row=row, fname=n, what="option")
                    for v, n in zip(values, names))
    seen: dict[str, str] = {}
    for opt, name in zip(options, names):
        key = opt.strip()
        if key in seen:
            raise DataError(f"duplicate option {key[:60]!r} (same as {seen[key]})",
                            file=file, row=row, field=name)
        seen[key] = name
    return options, names


def _answer_index(value: Any, options: tuple[str, ...], fmt: str, *, file: str, row: int,
                  fname: str) -> int:
    k = len(options)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError("empty answer", file=file, row=row, field=fname)
    if isinstance(value, bool) or isinstance(value, float) and not float(value).is_integer():
        raise DataError(f"answer must be an index, a letter or an option's text, got {value!r}",
                        file=file, row=row, field=fname)
    text = str(value).strip()
    if isinstance(value, float):
        text = str(int(value))
    idx: int | None = None
    if fmt in ("auto", "index") and (isinstance(value, (int, float)) or text.lstrip("-").isdigit()):
        idx = int(text)
        if not 0 <= idx < k:
            raise DataError(f"answer index {idx} out of range for {k} options (0-based)",
                            file=file, row=row, field=fname)
        return idx
    if fmt == "index":
        raise DataError(f"answer {value!r} is not an integer index", file=file, row=row, field=fname)
    if fmt in ("auto", "letter") and len(text) == 1 and text.upper() in LETTERS:
        idx = LETTERS.index(text.upper())
        if idx >= k:
            raise DataError(f"answer letter {text!r} out of range for {k} options",
                            file=file, row=row, field=fname)
        return idx
    if fmt == "letter":
        raise DataError(f"answer {value!r} is not a letter", file=file, row=row, field=fname)
    matches = [i for i, o in enumerate(options) if o.strip() == text]
    if len(matches) == 1:
        return matches[0]
    raise DataError(f"answer {text[:60]!r} is not among the options", file=file, row=row,
                    field=fname)


def item_from_row(raw: dict, fields: FieldMap, *, file: str, row: int) -> MCQItem:
    """Validate one raw record and turn it into an `MCQItem`, or raise `DataError`."""
    if fields.question not in raw:
        raise missing_field(raw, fields.question, "question", file=file, row=row)
    question = _text(raw[fields.question], file=file, row=row, fname=fields.question,
                     what="question")
    options, _ = _options(raw, fields, file=file, row=row)
    if fields.answer not in raw:
        raise missing_field(raw, fields.answer, "answer", file=file, row=row)
    answer = _answer_index(raw[fields.answer], options, fields.answer_format, file=file, row=row,
                           fname=fields.answer)
    item_id = f"{Path(file).stem}:{row}"
    if fields.id and raw.get(fields.id) not in (None, ""):
        item_id = str(raw[fields.id])
    subject = None
    if fields.subject and raw.get(fields.subject) not in (None, ""):
        subject = str(raw[fields.subject])
    meta: dict = {"file": file, "row": row}
    if fields.group and raw.get(fields.group) not in (None, ""):
        meta["group"] = str(raw[fields.group])
    return MCQItem(id=item_id, question=question, options=options, answer=answer, subject=subject,
                   meta=meta)
