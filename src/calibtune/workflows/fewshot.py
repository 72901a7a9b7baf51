"""The exemplars of a run: drawn from the unscored items of its data, or from --fewshot-data,
and written to the run folder as fewshot.json (ids of each group's exemplars, in prompt order)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..data import FieldMap, load_dataset
from ..data.fewshot import Fewshot, draw_fewshot
from ..data.items import MCQItem
from ..integrity import atomic_write_json

FEWSHOT_FILE = "fewshot.json"


def run_fewshot(k: int, seed: int, scored: Sequence[MCQItem], pool: Sequence[MCQItem],
                pool_source: str, fewshot_data: str | None = None,
                fields: FieldMap | None = None) -> Fewshot | None:
    """None for zero-shot; else k exemplars per group of `scored`, from `fewshot_data` when
    given (read with the run's field names), else from `pool` (the data the scored items were
    sampled from): never a scored item."""
    if k == 0:
        return None
    if fewshot_data:
        pool, pool_source = load_dataset(fewshot_data, None, fields).items, fewshot_data
    return draw_fewshot(scored, pool, k, seed, pool_source)


def write_fewshot(folder: str | Path, fewshot: Fewshot | None) -> None:
    if fewshot is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(folder) / FEWSHOT_FILE, fewshot.to_json())


def fewshot_meta(fewshot: Fewshot | None) -> dict:
    """What a scores file records of its exemplars (nothing for zero-shot: unchanged files)."""
    return {} if fewshot is None else {"num_fewshot": fewshot.k, "fewshot_seed": fewshot.seed}
