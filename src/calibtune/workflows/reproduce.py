"""`calibtune reproduce`: the whole comparison into one resumable folder.

The steps (what is trained and scored, cached by their settings) are `reproduce_steps`; the
tables, figures and page made from them are `reproduce_tables`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from .config import ReproduceCommand  # noqa: F401 - declared with the other workflow configs
from ..integrity import atomic_write_json
from ..run_guard import RunFolder, read_config
from .reproduce_steps import (ARMS, ReproduceConfig, _train_key, describe_plan,  # noqa: F401
                              execute, load_reproduce_config, plan, save_config)
from .reproduce_tables import summarise, table_markdown, write_outputs


def run_reproduce(config: str | Path, *, seeds: list[int] | None = None,
                  out: str | Path | None = None, dry_run: bool = False, overwrite: bool = False,
                  say: Callable[[str], None] = logging.getLogger(__name__).info) -> str:
    """Plan (dry run) or run the whole comparison into OUT; returns the plan or the table.

    A rerun into the folder of the same comparison (same `name`) goes on: finished steps are
    kept, changed settings rerun the steps they touch. A folder holding anything else is
    refused unless `overwrite`."""
    cfg = load_reproduce_config(config, seeds)
    if dry_run:
        return describe_plan(cfg)
    out = Path(out or f"runs/{cfg.name}")
    saved = read_config(out) or {}
    held_name = saved.get("name") if "methods" in saved else None  # a reproduce config's name
    same = held_name is not None and held_name == cfg.name
    held = (f"the comparison {held_name!r}, not {cfg.name!r}" if held_name
            else "no reproduce config.yaml")
    with RunFolder(out, None, command="reproduce", resume=same and not overwrite,
                   overwrite=overwrite,
                   resume_hint=f"it holds {held}, and a folder goes on only with "
                               "its own comparison") as folder:
        folder.open()
        save_config(cfg, out)
        return _reproduce_into(cfg, out, say)


def _reproduce_into(cfg: ReproduceConfig, out: Path, say: Callable[[str], None]) -> str:
    start = time.perf_counter()
    outcomes = execute(cfg, out, say=say)
    say("all steps done; summarising")
    cells = summarise(cfg, out / "steps")
    write_outputs(cfg, out, cells, outcomes)
    total = time.perf_counter() - start
    atomic_write_json(out / "timing.json", {"seconds_this_call": round(total, 1),
                                            "steps": [o.__dict__ for o in outcomes]})
    return table_markdown(cells, cfg) + f"\nwrote {out}/ (table.md, table.csv, results.json, " \
                                        "report.html)"
