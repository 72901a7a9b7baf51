"""`calibtune train`: load data and model, `training.train`, then write the run folder.

OUT/config.yaml, OUT/checkpoints/ (resumable), OUT/adapter/, OUT/train_log.json,
OUT/estep_history.json (RCFT), OUT/eval_before/ and OUT/eval/ (run folders of the held-out items
before and after training) and OUT/summary.json.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import get_last_checkpoint

from ..data import load_dataset, sample_items
from ..data.fewshot import Fewshot, group_of
from ..data.items import MCQItem
from ..errors import ConfigError
from ..integrity import atomic_write_json
from ..models import load_model
from ..run_guard import RunFolder
from ..training.distributed import check_engine, sharding_engine
from ..training.faults import check_resumable, field_defaults, fingerprint, resume_free
from ..training.finetune import config_scorer, frozen_layers_kept, save_adapter, train
from .config import TrainRunConfig
from .fewshot import fewshot_meta, run_fewshot, write_fewshot
from .run_folder import write_run

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out: Path
    metrics_before: dict | None
    metrics_after: dict
    train_seconds: float | None  # across resumes; None: resumed from a checkpoint that
    estep_seconds: float | None  # predates the record, so the total is unknown


def load_train_eval_items(cfg: TrainRunConfig
                          ) -> tuple[list[MCQItem], list[MCQItem], Fewshot | None]:
    """Training and held-out items, and the exemplars of --num-fewshot: drawn per group from
    the items that neither sample holds (or from --fewshot-data), a held-out group's from the
    held-out data only, so they are those `calibtune eval` draws on the same items and seed."""
    train_all = load_dataset(cfg.data, cfg.split).items
    train = sample_items(train_all, cfg.train_limit, cfg.seed)
    eval_seed = getattr(cfg, "eval_seed", None)
    eval_seed = cfg.seed if eval_seed is None else eval_seed
    eval_all = load_dataset(cfg.eval_data or cfg.data, cfg.eval_split).items
    evaluation = sample_items(eval_all, cfg.eval_limit, eval_seed)
    overlap = {it.id for it in train} & {it.id for it in evaluation}
    if overlap and (cfg.eval_data or cfg.data) == cfg.data:
        raise ConfigError(f"{len(overlap)} evaluation items are also training items (e.g. "
                          f"{sorted(overlap)[0]}); choose disjoint --split and --eval-split")
    k = getattr(cfg, "num_fewshot", 0)
    seed = cfg.seed if getattr(cfg, "fewshot_seed", None) is None else cfg.fewshot_seed
    # a held-out group draws from the held-out data alone: the same exemplars as an eval run
    held_out = {group_of(it) for it in evaluation}
    pool = eval_all + [it for it in train_all if group_of(it) not in held_out]
    fewshot = run_fewshot(k, seed, train + evaluation, pool, "the held-out and training data",
                          getattr(cfg, "fewshot_data", None))
    return train, evaluation, fewshot


def evaluate_items(model: Any, tokenizer: Any, items: list[MCQItem], cfg: TrainRunConfig,
                   out: Path, title: str, write: bool = True, fewshot: Fewshot | None = None
                   ) -> dict | None:
    """Score `items` (every rank, in step: a sharded model answers only when all ranks call
    it) and write the run folder from rank 0 (`write`)."""
    scorer = config_scorer(cfg, model, tokenizer, progress=write, fewshot=fewshot)
    scores = scorer.score(items, {"model": cfg.model, "method": cfg.method, "prompt": cfg.prompt,
                                  "scoring": cfg.scoring, "cloze_norm": cfg.cloze_norm,
                                  **fewshot_meta(fewshot)})
    if not write:
        return None
    return write_run(out, scores, title=title, context={"model": cfg.model, "method": cfg.method},
                     n_bins=cfg.n_bins, seed=cfg.seed, label=cfg.method).metrics


def rounded(seconds: float | None) -> float | None:
    """Seconds to 0.1 s for a summary; None (unknown) stays None."""
    return None if seconds is None else round(seconds, 1)


def resume_point(ckpt_dir: Path, resume: bool, identity: dict, defaults: dict | None = None
                 ) -> str | None:
    """The checkpoint a `--resume` run goes on from (None: from the beginning), refused with
    one line, before anything is written, unless it is whole and was made by a run of
    `identity` (`faults.check_resumable`). `calibtune train` and `calibtune align` both use it."""
    last = get_last_checkpoint(str(ckpt_dir)) if resume and ckpt_dir.exists() else None
    if resume and last is None:
        log.warning("--resume: no checkpoint in %s; starting from the beginning", ckpt_dir)
    if last is not None:  # refuse a broken or foreign checkpoint
        check_resumable(last, identity, defaults)
    return last


def resume_guarded(cfg: Any, *, command: str, resume: bool, overwrite: bool, claim: bool = True
                   ) -> RunFolder:
    """The run folder of a fine-tuning run: settings compared on `resume` except those that only
    monitor or place the work (`faults.resume_free`)."""
    fields = asdict(cfg)
    return RunFolder(cfg.out, fields, command=command, resume=resume, overwrite=overwrite,
                     claim=claim, ignore=tuple(resume_free(fields)))


def _launcher_rank0() -> bool:
    """Rank 0 of a launched run (or a single process), from the launcher's RANK: known before
    the process group exists, which `rank_and_world` needs."""
    return os.environ.get("RANK", "0") == "0"


def run_training(cfg: TrainRunConfig, *, resume: bool = False, overwrite: bool = False,
                 callbacks: list | None = None, claim: bool = True) -> TrainResult:
    """Train, save the adapter to OUT/adapter, and evaluate before/after on the held-out items.

    A folder holding another run is refused unless `overwrite`; `resume` continues from the last
    checkpoint of a run with the same settings. `claim=False`: the caller (reproduce) owns the
    folder, so no lock and no check; nor on ranks other than 0 of a multi-process run."""
    claim = claim and _launcher_rank0()
    with resume_guarded(cfg, command="train", resume=resume, overwrite=overwrite,
                        claim=claim) as folder:
        return _train_into(folder, cfg, resume, callbacks)


def _train_into(folder: RunFolder, cfg: TrainRunConfig, resume: bool, callbacks: list | None
                ) -> TrainResult:
    check_engine()
    train_items, eval_items, fewshot = load_train_eval_items(cfg)
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    last = resume_point(ckpt_dir, resume, fingerprint(cfg, train_items), field_defaults(cfg))
    torch.manual_seed(cfg.seed)
    # The Trainer places an unquantised model itself; a 4-bit one is placed as it loads.
    device = "cuda" if cfg.load_in_4bit and torch.cuda.is_available() else "cpu"
    model = load_model(cfg.model, base_adapter=cfg.base_adapter, dtype=cfg.dtype, device=device,
                       load_in_4bit=cfg.load_in_4bit)
    if fewshot is not None:  # a few-shot prompt past the context fails now, not after training
        net, tokenizer = model
        config_scorer(cfg, net, tokenizer, fewshot=fewshot).encode(train_items + eval_items)
    if _launcher_rank0():  # rank 0 alone writes, after its claim passed
        folder.open()  # cleared first with --overwrite; config.yaml written
        write_fewshot(out, fewshot)
        if not resume and ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)  # a fresh run never mixes with an old one's checkpoints
    outcome = train(model, train_items, cfg, eval_items=eval_items, output_dir=ckpt_dir,
                    resume_from=last, callbacks=list(callbacks or []), fewshot=fewshot)
    save_adapter(outcome.trainer, out / "adapter")
    main = outcome.trainer.is_world_process_zero()
    if main:
        atomic_write_json(out / "train_log.json", outcome.log_history)
        if outcome.estep_history:
            atomic_write_json(out / "estep_history.json", outcome.estep_history)

    no_result = TrainResult(out, None, {}, outcome.train_seconds, outcome.estep_seconds)
    if not main and sharding_engine() is None:
        return no_result  # only a sharded model needs every rank to answer

    trained, tokenizer = outcome.model
    before = None
    with frozen_layers_kept(trained, cfg):  # before and after read the same frozen layers
        if cfg.eval_before and cfg.lora:
            with trained.disable_adapter():
                before = evaluate_items(trained, tokenizer, eval_items, cfg,
                                        out / "eval_before", f"{cfg.model} before {cfg.method}",
                                        write=main, fewshot=fewshot)
        after = evaluate_items(trained, tokenizer, eval_items, cfg, out / "eval",
                               f"{cfg.model} after {cfg.method}", write=main, fewshot=fewshot)
    if not main:
        return no_result
    summary = {"method": cfg.method, "train_items": len(train_items),
               "eval_items": len(eval_items), "train_seconds": rounded(outcome.train_seconds),
               "estep_seconds": rounded(outcome.estep_seconds), "steps": outcome.steps,
               "after": {k: after[k] for k in ("accuracy", "mean_confidence", "ece", "cw_ece")}}
    if before:
        summary["before"] = {k: before[k] for k in ("accuracy", "mean_confidence", "ece",
                                                    "cw_ece")}
    atomic_write_json(out / "summary.json", summary)
    log.info("training summary: %s", json.dumps(summary))
    return TrainResult(out, before, after, outcome.train_seconds, outcome.estep_seconds)
