"""Digest checks, atomic writes and strict reads: nothing half-written, nothing silently corrupted.

`read_json_file`, `read_json_records`, `saved_number` and `saved_interval` read calibtune's own
JSON files back (metrics.json, train_log.json, ...) as untrusted input: a file cut short, edited
by hand or written by another version is one `SavedFileError` naming the file and the field,
never a KeyError.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import IntegrityError, SavedFileError


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | Path, expected: str, what: str) -> None:
    """Raise `IntegrityError` if `path` does not hash to `expected`."""
    got = sha256_file(path)
    if got != expected:
        raise IntegrityError(f"{what}: {path} has sha256 {got}, expected {expected}; "
                             "the file is corrupted or not the pinned release — reinstall it")


def current_umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.

    The file gets the permissions a plain `open(path, "w")` would give (0666 less the umask),
    not mkstemp's private 0600, so a run folder stays readable to the team that shares it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def json_ready(obj: Any) -> Any:
    """A strict-JSON copy: NumPy scalars and arrays to Python, NaN and ±inf to None (null).

    Strict parsers (jq, JavaScript, Go) reject the NaN that Python's json writes by default;
    an empty bin's accuracy is "no value", which JSON spells null.
    """
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Strict JSON (null for NaN/inf, never the NaN token), written atomically."""
    text = json.dumps(json_ready(obj), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(path, text + "\n")


def read_json_file(path: str | Path, kind: type = dict) -> Any:
    """The JSON value in `path`, which must be a `kind` (dict: an object, list: a list)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SavedFileError(f"{path}: not found") from None
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError included
        raise SavedFileError(f"{path}: not valid JSON ({err}); cut short or edited by hand?") \
            from None
    if not isinstance(data, kind):
        want = {dict: "object", list: "list"}.get(kind, kind.__name__)
        raise SavedFileError(f"{path}: expected a JSON {want}, got {type(data).__name__}")
    return data


def read_json_records(path: str | Path) -> list[tuple[str, dict]]:
    """("entry N: ", object) for each entry of a JSON list of objects (train_log.json, ...)."""
    entries = read_json_file(path, list)
    for i, e in enumerate(entries, start=1):
        if not isinstance(e, dict):
            raise SavedFileError(f"{path}: entry {i} is {type(e).__name__}, expected an object")
    return [(f"entry {i}: ", e) for i, e in enumerate(entries, start=1)]


def saved_number(record: dict, key: str, path: str | Path, *, optional: bool = False,
                 where: str = "") -> float | None:
    """`record[key]` as a float; a missing (unless `optional`) or non-numeric value is a
    `SavedFileError` naming the file, `where` in it ("entry 3: ") and the field."""
    value = record.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        got = "missing" if key not in record else json.dumps(value)[:40]
        raise SavedFileError(f"{path}: {where}field '{key}' is {got}, expected a number")
    return float(value)


def saved_interval(record: dict, key: str, path: str | Path, *, where: str = ""
                   ) -> tuple[float, float] | None:
    """`record[key]` as (low, high), None when absent; any other shape is a `SavedFileError`."""
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise SavedFileError(f"{path}: {where}field '{key}' is {json.dumps(value)[:40]}, "
                             "expected [low, high]")
    if value[0] is None and value[1] is None:  # an interval that could not be estimated
        return None
    pair = {"low": value[0], "high": value[1]}
    return saved_number(pair, "low", path, where=f"{where}{key} "), \
        saved_number(pair, "high", path, where=f"{where}{key} ")
