"""Read lm-evaluation-harness ``--log_samples`` output into `OptionScores`.

lm-eval 0.4.x writes, under ``--output_path``, one folder per model (the sanitised model name)
holding ``results_<date>.json`` and one ``samples_<task>_<date>.jsonl`` per task, where <date>
is the run's ISO time with ':' replaced by '-'. Each sample line holds (as written by
`EvaluationTracker.save_results_samples`, 0.4.13):

- ``doc_id`` (int), ``doc`` (the raw document), ``filter`` (the filter's name, "none" for
  plain multiple choice; a task with several filters logs one line per doc and filter);
- ``target``: ``str(doc_to_target(doc))`` — a gold index ("2"), a choice's text, a letter, or a
  list ("[0, 2]") for multi-target tasks (refused here: one gold label per item). Digits are
  read as an index, as lm-eval's `doc_to_target` does for templated targets; other text is
  matched against the choices, then read as a letter;
- ``arguments``: ``{"gen_args_<i>": {"arg_0": context, "arg_1": target_delimiter + choice}}``
  (in-memory `simple_evaluate` samples hold lists ``[context, continuation]`` instead);
- ``resps`` / ``filtered_resps``: every value turned into a string by `sanitize_list`; for a
  multiple-choice task ``filtered_resps`` is ``[[loglik, is_greedy], ...]`` one pair per choice
  (e.g. ``["-4.99", "False"]``) and ``resps`` the same pairs wrapped in one more list.

The logits are the summed log-likelihoods of each choice's continuation, which is what lm-eval's
``acc`` ranks. `norm="char"` divides by the choice's length in characters and `norm="byte"` by
its UTF-8 bytes, exactly as lm-eval's ``acc_norm`` and ``acc_bytes``; the choice text is the
logged continuation less the task's ``target_delimiter`` (from the results file; " " when
absent), so a log without ``arguments`` only supports raw sums. For ``acc_mutual_info`` tasks
the K unconditional log-likelihoods logged after the K conditional ones are dropped.

Ids are ``f"{task}/{doc_id}"``; items are ordered by task, then doc_id. When a folder holds
several runs of one task, the latest (by date in the file name) is read and the others are
listed in ``meta["skipped_files"]``. Reference: Gao et al., "The Language Model Evaluation
Harness", 2023 (lm-evaluation-harness 0.4).
"""
from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.items import LETTERS, MAX_OPTIONS
from ..errors import DataError
from ..option_scores import OptionScores, pad_option_rows

NORMS = ("none", "char", "byte")
_DATE = r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?"
SAMPLES_RE = re.compile(rf"^samples_(?P<task>.+?)(?:_(?P<date>{_DATE}))?\.jsonl$")


def parse_samples_name(path: str | Path) -> tuple[str, str | None] | None:
    """(task, date) from ``samples_<task>_<date>.jsonl``; None if the name is not of that form."""
    m = SAMPLES_RE.match(Path(path).name)
    return (m.group("task"), m.group("date")) if m else None


def find_sample_files(path: str | Path, tasks: Sequence[str] | None = None
                      ) -> tuple[list[Path], list[Path]]:
    """(files to read, older runs skipped): the latest samples file per folder and task."""
    path = Path(path)
    if not path.exists():
        raise DataError("not found", file=str(path))
    if path.is_file():
        if parse_samples_name(path) is None:
            raise DataError("not an lm-eval samples file (expected samples_<task>_<date>.jsonl)",
                            file=str(path))
        return [path], []
    latest: dict[tuple[Path, str], list[Path]] = {}
    for f in sorted(path.rglob("samples_*.jsonl")):
        parsed = parse_samples_name(f)
        if parsed is None or (tasks is not None and parsed[0] not in tasks):
            continue
        latest.setdefault((f.parent, parsed[0]), []).append(f)
    if not latest:
        wanted = f" for tasks {', '.join(tasks)}" if tasks else ""
        raise DataError(f"no lm-eval samples_<task>_<date>.jsonl files{wanted} in this folder "
                        "(run lm-eval with --output_path and --log_samples)", file=str(path))
    keep, skipped = [], []
    for files in latest.values():
        files.sort(key=lambda f: parse_samples_name(f)[1] or "")
        keep.append(files[-1])
        skipped.extend(files[:-1])
    return sorted(keep), sorted(skipped)


def find_results(samples_file: Path) -> tuple[Path | None, dict]:
    """The run's results JSON (same folder, same date), or (None, {}) when absent or unreadable."""
    parsed = parse_samples_name(samples_file)
    date = parsed[1] if parsed else None
    if date is None:
        return None, {}
    for cand in sorted(samples_file.parent.glob(f"*_{date}.json")):
        try:
            data = json.loads(cand.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and ("results" in data or "configs" in data):
            return cand, data
    return None, {}


def _obj(value: Any) -> dict:
    """`value` when it is a JSON object, else {}: a results file's fields of another shape (an
    edited file, another lm-eval version) count as absent; they are metadata only."""
    return value if isinstance(value, dict) else {}


def _model_name(results: dict) -> str | None:
    """The evaluated model, from any of the places lm-eval versions have put it."""
    if results.get("model_name"):
        return str(results["model_name"])
    config = _obj(results.get("config"))
    args = config.get("model_args")
    if isinstance(args, dict):
        for key in ("peft", "delta", "pretrained", "model", "path", "engine"):
            if args.get(key):
                return str(args[key])
    if isinstance(args, str):
        for key in ("peft", "delta", "pretrained", "model", "path", "engine"):
            m = re.search(rf"(?:^|,){key}=([^,]+)", args)
            if m:
                return m.group(1)
    return str(config["model"]) if config.get("model") else None


def run_info(results: dict, task: str) -> dict:
    """Task, model and harness version of one run, tolerant of missing fields."""
    task_cfg = _obj(_obj(results.get("configs")).get(task))
    config = _obj(results.get("config"))
    info = {"model": _model_name(results), "model_type": config.get("model"),
            "lm_eval_version": results.get("lm_eval_version"), "git_hash": results.get("git_hash"),
            "task_version": _obj(results.get("versions")).get(task),
            "num_fewshot": _obj(results.get("n-shot")).get(task, task_cfg.get("num_fewshot")),
            "output_type": task_cfg.get("output_type"),
            "target_delimiter": task_cfg.get("target_delimiter")}
    return {k: v for k, v in info.items() if v is not None}


def _loglik(entry: Any, *, file: str, row: int, fname: str) -> float:
    """The log-likelihood of one choice from a [loglik, is_greedy] pair in any logged form."""
    value = entry
    if isinstance(value, str) and value.strip()[:1] in "([":
        try:
            value = ast.literal_eval(value.strip())
        except (SyntaxError, ValueError):
            pass
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"not a log-likelihood: {str(entry)[:60]!r} (only multiple-choice tasks, "
                        "scored by log-likelihood, can be imported)", file=file, row=row,
                        field=fname) from None
    if not math.isfinite(x):
        raise DataError(f"log-likelihood must be finite, got {x}", file=file, row=row, field=fname)
    return x


def _arguments(raw: dict) -> list[tuple[str, str]] | None:
    """[(context, continuation)] per request, from the file form or the in-memory form."""
    args = raw.get("arguments")
    if isinstance(args, dict):
        def index(key: str) -> int:
            m = re.search(r"(\d+)$", key)
            return int(m.group(1)) if m else 0
        out = []
        for key in sorted(args, key=index):
            a = args[key]
            if not isinstance(a, dict) or "arg_1" not in a:
                return None
            out.append((str(a.get("arg_0", "")), str(a["arg_1"])))
        return out
    if isinstance(args, list) and all(isinstance(a, (list, tuple)) and len(a) >= 2 for a in args):
        return [(str(a[0]), str(a[1])) for a in args]
    return None


def _gold(target: Any, choices: list[str] | None, *, file: str, row: int) -> int:
    """Gold index from the logged target: an index, a choice's text, or a letter."""
    if isinstance(target, bool):
        raise DataError(f"target {target!r} is not a gold index", file=file, row=row, field="target")
    if isinstance(target, int):
        return target
    if isinstance(target, list):
        raise DataError(f"{len(target)} gold targets; only single-answer tasks can be imported",
                        file=file, row=row, field="target")
    text = str(target).strip()
    if text.isascii() and text.isdigit():  # lm-eval makes a digit target an index (tasks with choices)
        return int(text)
    if text.startswith("[") and text.endswith("]"):
        raise DataError(f"multiple gold targets {text[:40]}; only single-answer tasks can be "
                        "imported", file=file, row=row, field="target")
    if choices is not None:
        hits = [i for i, c in enumerate(choices) if c.strip() == text]
        if len(hits) == 1:
            return hits[0]
    if len(text) == 1 and text.upper() in LETTERS:
        return LETTERS.index(text.upper())
    raise DataError(f"target {text[:40]!r} is neither an index, a letter nor one of the choices",
                    file=file, row=row, field="target")


def _choice_text(continuation: str, delimiter: str) -> str:
    return continuation[len(delimiter):] if delimiter and continuation.startswith(delimiter) \
        else continuation


def read_samples_file(path: Path, *, norm: str = "none", filter_name: str | None = None,
                      results: dict | None = None, task: str | None = None
                      ) -> tuple[list[str], list[int], list[list[float]], dict]:
    """(ids, gold indices, per-choice scores, info) of one samples file; rows by doc_id."""
    file = str(path)
    task = task or (parse_samples_name(path) or ("unknown",))[0]
    info = run_info(results or {}, task)
    delimiter = info.get("target_delimiter", " ")
    if not isinstance(delimiter, str):
        delimiter = " "
    lines: list[tuple[int, dict]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"not valid UTF-8 (byte {err.start})", file=file) from None
    for row, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"malformed JSON ({err.msg} at column {err.colno})", file=file,
                            row=row) from None
        if not isinstance(raw, dict):
            raise DataError(f"expected a JSON object, got {type(raw).__name__}", file=file, row=row)
        lines.append((row, raw))
    if not lines:
        raise DataError("file holds no samples", file=file)
    filters = sorted({str(raw.get("filter", "none")) for _, raw in lines})
    if filter_name is None:
        if len(filters) > 1 and "none" not in filters:
            raise DataError(f"samples of several filters ({', '.join(filters)}); choose one with "
                            "filter_name=", file=file)
        filter_name = "none" if "none" in filters else filters[0]
    elif filter_name not in filters:
        raise DataError(f"no samples with filter {filter_name!r} (found {', '.join(filters)})",
                        file=file)
    by_doc: dict[Any, tuple[int, str, int, list[float]]] = {}
    mutual_info = False
    for row, raw in lines:
        if str(raw.get("filter", "none")) != filter_name:
            continue
        if "doc_id" not in raw:
            raise DataError("missing field", file=file, row=row, field="doc_id")
        doc_id = raw["doc_id"]
        if isinstance(doc_id, (bool, list, dict)) or doc_id is None:
            raise DataError(f"doc_id must be a number or text, got {type(doc_id).__name__}",
                            file=file, row=row, field="doc_id")
        if doc_id in by_doc:
            raise DataError(f"duplicate doc_id {doc_id!r} (first in row {by_doc[doc_id][0]})",
                            file=file, row=row, field="doc_id")
        if isinstance(raw.get("filtered_resps"), list) and raw["filtered_resps"]:
            fname, resps = "filtered_resps", raw["filtered_resps"]
        elif isinstance(raw.get("resps"), list) and raw["resps"]:
            fname, resps = "resps", raw["resps"]
        else:
            raise DataError("no filtered_resps or resps list", file=file, row=row,
                            field="filtered_resps")
        lls = [_loglik(e, file=file, row=row, fname=f"{fname}[{i}]") for i, e in enumerate(resps)]
        args = _arguments(raw)
        if args is not None and len(args) != len(lls):
            raise DataError(f"{len(args)} arguments but {len(lls)} responses", file=file, row=row,
                            field=fname)
        k = len(lls)
        if args is not None and k % 2 == 0 and k >= 4 and all(c == "" for c, _ in args[k // 2:]) \
                and any(c != "" for c, _ in args[: k // 2]):  # acc_mutual_info: drop P(choice)
            lls, args, mutual_info = lls[: k // 2], args[: k // 2], True
        choices = [_choice_text(cont, delimiter) for _, cont in args] if args is not None else None
        if not 2 <= len(lls) <= MAX_OPTIONS:
            raise DataError(f"{len(lls)} choices; need 2 to {MAX_OPTIONS}", file=file, row=row,
                            field=fname)
        if "target" not in raw:
            raise DataError("missing field", file=file, row=row, field="target")
        gold = _gold(raw["target"], choices, file=file, row=row)
        if not 0 <= gold < len(lls):
            raise DataError(f"gold index {gold} out of range for {len(lls)} choices", file=file,
                            row=row, field="target")
        if norm != "none":
            if choices is None:
                raise DataError(f"norm={norm!r} needs the logged arguments (choice texts); use "
                                "norm='none' for raw sums", file=file, row=row, field="arguments")
            lengths = [len(c) if norm == "char" else len(c.encode("utf-8")) for c in choices]
            lls = [ll / max(1, n) for ll, n in zip(lls, lengths)]
        by_doc[doc_id] = (row, f"{task}/{doc_id}", gold, lls)
    order = sorted(by_doc, key=lambda d: (0, d, "") if isinstance(d, int) else (1, 0, str(d)))
    info = info | {"n": len(order), "file": file, "filter": filter_name,
                   "target_delimiter": delimiter}
    if mutual_info:
        info["mutual_info_dropped"] = True
    return ([by_doc[d][1] for d in order], [by_doc[d][2] for d in order],
            [by_doc[d][3] for d in order], info)


def load_lm_eval_samples(path: str | Path, *, tasks: Sequence[str] | None = None,
                         norm: str = "none", filter_name: str | None = None) -> OptionScores:
    """`OptionScores` from one samples file or a results folder (nested model folders too).

    `tasks` restricts a folder to those task names; `norm` is "none" (summed log-likelihoods,
    lm-eval's ``acc``), "char" (``acc_norm``) or "byte" (``acc_bytes``); `filter_name` picks
    one filter when a task logged several ("none" by default when present).
    Reference: Gao et al. 2023 (lm-evaluation-harness).
    """
    if norm not in NORMS:
        raise DataError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}", file=str(path))
    files, skipped = find_sample_files(path, tasks)
    ids: list[str] = []
    labels: list[int] = []
    scores: list[list[float]] = []
    task_meta: dict[str, dict] = {}
    first_file: dict[str, str] = {}
    results_files: list[str] = []
    for f in files:
        task = parse_samples_name(f)[0]
        results_path, results = find_results(f)
        if results_path is not None and str(results_path) not in results_files:
            results_files.append(str(results_path))
        f_ids, f_labels, f_scores, info = read_samples_file(f, norm=norm, filter_name=filter_name,
                                                            results=results, task=task)
        for i in f_ids:
            if i in first_file:
                raise DataError(f"item {i!r} also in {first_file[i]}: two runs of task {task!r} "
                                "(e.g. two models); read one model's folder or file at a time",
                                file=str(f))
            first_file[i] = str(f)
        if results_path is not None:
            info["results_file"] = str(results_path)
        task_meta[task] = info
        ids += f_ids
        labels += f_labels
        scores += f_scores
    logits, mask = pad_option_rows(scores)
    order = sorted(range(len(ids)), key=lambda i: (ids[i].split("/", 1)[0], i))
    models = sorted({m["model"] for m in task_meta.values() if "model" in m})
    versions = sorted({m["lm_eval_version"] for m in task_meta.values() if "lm_eval_version" in m})
    meta = {"source": "lm_eval", "path": str(path), "tasks": task_meta,
            "model": models[0] if len(models) == 1 else (models or None),
            "lm_eval_version": versions[0] if len(versions) == 1 else (versions or None),
            "scoring": "lm_eval_loglikelihood", "norm": norm, "files": [str(f) for f in files],
            "results_files": results_files, "skipped_files": [str(f) for f in skipped]}
    ids = np.array(ids)[order]
    return OptionScores(logits[order], np.array(labels)[order], mask[order], ids, meta,
                        groups=np.array([i.split("/", 1)[0] for i in ids]))  # the task
