"""Digest checks and atomic writes: nothing half-written, nothing silently corrupted."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import IntegrityError


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
