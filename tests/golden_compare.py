"""Compare a run folder file with its golden copy so that the comparison holds on any CPU.

Float kernels differ between processors (vector width, thread count, MKL code path), so a run
on another machine writes logits that differ from the golden ones by about 1e-6 and every number
derived from them moves by as much. What must not move is everything else: which files there
are, the JSON structure and keys, integers, strings, the text around the numbers. So:

- scores.npz: ids, labels, mask and meta exactly; logits to an absolute tolerance.
- JSON: the golden file's keys at every depth (keys added since are allowed), list lengths,
  types, integers, booleans, nulls and strings exactly (strings up to their decimal numbers);
  floats within `tol · max(1, |golden|)`.
- text (report.md, …): line for line equal once decimal numbers are masked; each number within
  the same tolerance plus one unit of its last printed digit (two roundings of values `tol`
  apart can differ by that much, and by no more).

Each function returns a list of human-readable differences (empty = equal) rather than
asserting, so one test can report every differing file at once and another can check that a
planted perturbation is caught.
"""
from __future__ import annotations

import json
import math
import re
import numpy as np

NUMBER = re.compile(r"-?\d+\.(\d+)(?:e[-+]?\d+)?")


def _close(old: float, new: float, tol: float, slack: float = 0.0) -> bool:
    if math.isnan(old) or math.isnan(new):
        return math.isnan(old) and math.isnan(new)
    return abs(new - old) <= tol * max(1.0, abs(old)) + slack


def _last_digit(match: re.Match) -> float:
    """One unit of the number's last printed decimal (0.001 for "0.380", 0 for exponents)."""
    return 0.0 if "e" in match.group(0) else 10.0 ** -len(match.group(1))


def mask_numbers(text: str) -> str:
    return NUMBER.sub("#", text)


def compare_text(old: str, new: str, tol: float, where: str = "") -> list[str]:
    """Differences between two texts equal up to their decimal numbers (see module docstring)."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    if len(old_lines) != len(new_lines):
        return [f"{where}: {len(new_lines)} lines, golden has {len(old_lines)}"]
    diffs = []
    for i, (a, b) in enumerate(zip(old_lines, new_lines), 1):
        if mask_numbers(a) != mask_numbers(b):
            diffs.append(f"{where}:{i}: {b!r} is not {a!r}")
            continue
        for ma, mb in zip(NUMBER.finditer(a), NUMBER.finditer(b)):
            if not _close(float(ma.group(0)), float(mb.group(0)), tol, _last_digit(ma)):
                diffs.append(f"{where}:{i}: {mb.group(0)} is not {ma.group(0)} (tolerance {tol})")
    return diffs


def compare_json(old, new, tol: float, where: str = "$") -> list[str]:
    """Differences between two parsed JSON values; keys only in `new` are allowed."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [f"{where}: {type(new).__name__}, golden has an object"]
        return [d for k in old for d in
                ([f"{where}.{k}: missing"] if k not in new else
                 compare_json(old[k], new[k], tol, f"{where}.{k}"))]
    if isinstance(old, list):
        if not isinstance(new, list) or len(new) != len(old):
            return [f"{where}: {json.dumps(new)[:80]} is not a list of {len(old)}"]
        return [d for i, (a, b) in enumerate(zip(old, new))
                for d in compare_json(a, b, tol, f"{where}[{i}]")]
    if type(old) is not type(new):
        return [f"{where}: {new!r} ({type(new).__name__}), golden has {old!r}"]
    if isinstance(old, float):
        return [] if _close(old, new, tol) else [f"{where}: {new!r} is not {old!r} (tolerance {tol})"]
    if isinstance(old, str):
        return compare_text(old, new, tol, where)
    return [] if old == new else [f"{where}: {new!r} is not {old!r}"]


def compare_scores(old: dict[str, np.ndarray], new: dict[str, np.ndarray], atol: float,
                   where: str = "") -> list[str]:
    """Differences between two scores.npz contents (already read, paths normalised).

    A `groups` or `format` array may have been added since the golden file was written."""
    diffs = []
    if not set(old) <= set(new):
        diffs.append(f"{where}: lost arrays {sorted(set(old) - set(new))}")
    if set(new) - set(old) - {"groups", "format"}:
        diffs.append(f"{where}: unexpected arrays {sorted(set(new) - set(old))}")
    for key in ("labels", "mask", "ids", "meta"):
        if key in old and key in new and not np.array_equal(old[key], new[key]):
            diffs.append(f"{where}: {key} differs")
    a, b = old["logits"], new.get("logits")
    if b is None or a.shape != b.shape:
        diffs.append(f"{where}: logits of shape {getattr(b, 'shape', None)}, golden {a.shape}")
    else:
        finite = np.isfinite(a)
        if not np.array_equal(finite, np.isfinite(b)) or not np.array_equal(a[~finite], b[~finite]):
            diffs.append(f"{where}: non-finite logits differ")
        elif finite.any() and (worst := float(np.abs(a[finite] - b[finite]).max())) > atol:
            diffs.append(f"{where}: logits differ by up to {worst:.3g} (tolerance {atol})")
    return diffs

