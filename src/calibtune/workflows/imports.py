"""`calibtune eval --from lm-eval|table PATH`: another harness's saved outputs as a run folder.

No model is loaded: the per-option scores come from lm-evaluation-harness `--log_samples`
files or a plain table, and the same run folder as a model run is written (scores.npz,
metrics.json, diagrams, report.md, report.html), with where the scores came from recorded.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .config import ImportConfig  # noqa: F401 - declared with the other workflow configs
from ..errors import ConfigError
from ..interop import load_lm_eval_samples, load_option_table
from ..option_scores import OptionScores
from ..run_guard import RunFolder
from .run_folder import RunOutputs, write_run

def _lm_eval(cfg: ImportConfig) -> OptionScores:
    return load_lm_eval_samples(cfg.path, tasks=cfg.tasks, norm=cfg.norm)


def _table(cfg: ImportConfig) -> OptionScores:
    fields = cfg.fields or {}
    return load_option_table(cfg.path, kind=cfg.kind, renormalise=cfg.renormalise,
                             id_col=fields.get("id", "id"), label_col=fields.get("answer", "label"),
                             options=fields.get("options"),
                             label_format=fields.get("answer_format", "auto"),
                             group_col=fields.get("subject", "subject"))


#: The sources `--from` reads: name → loader of `OptionScores` (add a source here).
LOADERS: dict[str, Callable[[ImportConfig], OptionScores]] = {"lm-eval": _lm_eval, "table": _table}
SOURCES = tuple(LOADERS)


def load_imported(cfg: ImportConfig) -> OptionScores:
    """The source's scores; with `limit`, its first `limit` items (in the file's order)."""
    if cfg.source not in LOADERS:
        raise ConfigError(f"--from must be one of {', '.join(LOADERS)}, got {cfg.source!r}")
    scores = LOADERS[cfg.source](cfg)
    if cfg.limit is not None and cfg.limit < len(scores):
        scores = scores.subset(np.arange(cfg.limit))
    return scores


def run_import(cfg: ImportConfig, *, resume: bool = False, overwrite: bool = False
               ) -> RunOutputs:
    """Read the saved outputs and write the run folder (nothing is written if reading fails;
    a folder holding another run is refused unless `overwrite` or, same settings, `resume`)."""
    with RunFolder(cfg.out, dict(cfg.__dict__), command="eval --from", resume=resume,
                   overwrite=overwrite) as folder:
        scores = load_imported(cfg)
        return _write_import(folder, cfg, scores)


def _write_import(folder: RunFolder, cfg: ImportConfig, scores) -> RunOutputs:
    meta = scores.meta
    context = {"source": f"{cfg.source}: {cfg.path}", "items": len(scores)}
    if cfg.source == "lm-eval":
        context |= {"tasks": ", ".join(meta.get("tasks") or {}), "model": meta.get("model"),
                    "lm-eval version": meta.get("lm_eval_version"), "normalisation": cfg.norm}
    else:
        context |= {"values": cfg.kind, "renormalised": cfg.renormalise}
    out = folder.open()
    return write_run(out, scores, title=f"calibtune eval --from {cfg.source}",
                     context={k: v for k, v in context.items() if v not in (None, "")},
                     n_bins=cfg.n_bins, n_boot=cfg.n_boot, seed=cfg.seed, label=cfg.source)
