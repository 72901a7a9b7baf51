"""`calibtune train` as a library call: data, LoRA model, trainer, checkpoints, self-evaluation."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..data import load_dataset, sample_items
from ..data.items import MCQItem
from ..errors import ConfigError
from ..integrity import atomic_write_json
from ..scoring.prompts import PromptEncoder
from .run_folder import write_config, write_run
from ..scoring import make_scorer
from ..training.cloze_dataset import ClozeCollator, ClozeTrainDataset
from ..training.config import TrainConfig
from ..training.dataset import MCQCollator, MCQTrainDataset
from ..training.estep import EStepCallback, RegulariserState, steps_per_epoch
from ..training.monitor import EpochEvalCallback
from ..training.distributed import check_engine, sharding_engine
from ..training.trainer import CalibTrainer

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out: Path
    metrics_before: dict | None
    metrics_after: dict
    train_seconds: float
    estep_seconds: float


def load_train_eval_items(cfg: TrainConfig) -> tuple[list[MCQItem], list[MCQItem]]:
    train = sample_items(load_dataset(cfg.data, cfg.split).items, cfg.train_limit, cfg.seed)
    evaluation = sample_items(load_dataset(cfg.eval_data or cfg.data, cfg.eval_split).items,
                              cfg.eval_limit, cfg.seed)
    overlap = {it.id for it in train} & {it.id for it in evaluation}
    if overlap and (cfg.eval_data or cfg.data) == cfg.data:
        raise ConfigError(f"{len(overlap)} evaluation items are also training items (e.g. "
                          f"{sorted(overlap)[0]}); choose disjoint --split and --eval-split")
    return train, evaluation


def build_dataset(cfg: TrainConfig, items: list[MCQItem], tokenizer: Any) -> tuple[Any, Any]:
    """(dataset, collator) of the run's mode. In cloze mode RCFT and label smoothing need
    every option's sequence; CFT and SFT only the gold one."""
    if cfg.scoring == "cloze":
        all_options = cfg.method in ("rcft", "label_smoothing")
        dataset = ClozeTrainDataset(items, tokenizer, cfg.max_length, all_options)
        return dataset, ClozeCollator(tokenizer, dataset.k_max)
    encoder = PromptEncoder(tokenizer, cfg.prompt, max(it.n_options for it in items))
    dataset = MCQTrainDataset(items, encoder, cfg.max_length)
    return dataset, MCQCollator(tokenizer, dataset.letter_ids)


def _wrap_lora(model: Any, cfg: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else \
        [t.strip() for t in cfg.lora_targets.split(",")]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _training_args(cfg: TrainConfig, folder: Path):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(folder), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to], seed=cfg.seed,
        data_seed=cfg.seed, remove_unused_columns=False, bf16=cfg.bf16,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        activation_checkpointing=cfg.gradient_checkpointing, label_names=["label"],
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        disable_tqdm=False)


def config_scorer(cfg: TrainConfig, model: Any, tokenizer: Any, progress: bool = False) -> Any:
    """The scorer of this run's mode: the E-step, the epoch monitor and the final evaluation
    all read options the way training does. Sharded ranks batch by count only (no token
    budget), so equal shares of items cost every rank the same number of forward calls."""
    budget = {"max_batch_tokens": None} if sharding_engine() else {}
    return make_scorer(model, tokenizer, cfg.scoring, prompt=cfg.prompt, cloze_norm=cfg.cloze_norm,
                       progress=progress, **budget)


def evaluate_items(model: Any, tokenizer: Any, items: list[MCQItem], cfg: TrainConfig,
                   out: Path, title: str, write: bool = True) -> dict | None:
    """Score `items` (every rank, in step: a sharded model answers only when all ranks call
    it) and write the run folder from rank 0 (`write`)."""
    scorer = config_scorer(cfg, model, tokenizer, progress=write)
    scores = scorer.score(items, {"model": cfg.model, "method": cfg.method, "prompt": cfg.prompt,
                                  "scoring": cfg.scoring, "cloze_norm": cfg.cloze_norm})
    if not write:
        return None
    return write_run(out, scores, title=title, context={"model": cfg.model, "method": cfg.method},
                     n_bins=cfg.n_bins, seed=cfg.seed, label=cfg.method).metrics


def save_adapter(trainer: Any, out: Path) -> None:
    """The adapter to OUT/adapter, atomically. Every rank calls: under FSDP / ZeRO-3 the
    Trainer gathers the sharded weights, and rank 0 writes them."""
    main = trainer.is_world_process_zero()
    adapter, tmp = out / "adapter", out / ".adapter.tmp"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))
    trainer.accelerator.wait_for_everyone()
    if main:
        (tmp / "training_args.bin").unlink(missing_ok=True)
        shutil.rmtree(adapter, ignore_errors=True)
        os.replace(tmp, adapter)


def run_training(cfg: TrainConfig, *, resume: bool = False, callbacks: list | None = None
                 ) -> TrainResult:
    """Train, save the adapter to OUT/adapter, and evaluate before/after on the held-out items."""
    import torch
    from transformers.trainer_utils import get_last_checkpoint

    from ..models import load_model

    check_engine()
    train_items, eval_items = load_train_eval_items(cfg)
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if resume and ckpt_dir.exists() else None
    if resume and last is None:
        log.warning("--resume: no checkpoint in %s; starting from the beginning", ckpt_dir)
    if not resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # a fresh run never mixes with an old one's checkpoints
    torch.manual_seed(cfg.seed)
    # The Trainer places an unquantised model itself; a 4-bit one is placed as it loads.
    device = "cuda" if cfg.load_in_4bit and torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=device,
                                  load_in_4bit=cfg.load_in_4bit)
    model.config.use_cache = False
    if cfg.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.lora:
        model = _wrap_lora(model, cfg)
    dataset, collator = build_dataset(cfg, train_items, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, asdict(cfg))

    reg_state = RegulariserState()

    def scorer_for(current_model: Any) -> Any:
        return config_scorer(cfg, current_model, tokenizer)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    extra = list(callbacks or [])
    estep = None
    if cfg.method == "rcft":
        estep = EStepCallback(reg_state, dataset.kept_items, scorer_for, cfg.n_bins,
                              steps_per_epoch(len(dataset), cfg.batch_size, world, cfg.grad_accum),
                              cfg.estep_every_steps, resume_from=last)
        extra.insert(0, estep)
    if cfg.epoch_eval_limit > 0:
        extra.append(EpochEvalCallback(eval_items[: cfg.epoch_eval_limit], scorer_for, cfg.n_bins))
    trainer = CalibTrainer(model=model, args=_training_args(cfg, ckpt_dir), train_dataset=dataset,
                           data_collator=collator,
                           callbacks=extra, calib_config=cfg, reg_state=reg_state)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    train_seconds = time.perf_counter() - start
    save_adapter(trainer, out)
    main = trainer.is_world_process_zero()
    if main:
        atomic_write_json(out / "train_log.json", trainer.state.log_history)
        if reg_state.history:
            atomic_write_json(out / "estep_history.json", reg_state.history)

    no_result = TrainResult(out, None, {}, train_seconds, estep.seconds if estep else 0.0)
    if not main and sharding_engine() is None:
        return no_result  # only a sharded model needs every rank to answer

    model = trainer.model.eval()
    before = None
    if cfg.eval_before and cfg.lora:
        with model.disable_adapter():
            before = evaluate_items(model, tokenizer, eval_items, cfg, out / "eval_before",
                                    f"{cfg.model} before {cfg.method}", write=main)
    after = evaluate_items(model, tokenizer, eval_items, cfg, out / "eval",
                           f"{cfg.model} after {cfg.method}", write=main)
    if not main:
        return no_result
    summary = {"method": cfg.method, "train_items": len(train_items),
               "eval_items": len(eval_items), "train_seconds": round(train_seconds, 1),
               "estep_seconds": round(estep.seconds, 1) if estep else 0.0,
               "steps": trainer.state.global_step,
               "after": {k: after[k] for k in ("accuracy", "mean_confidence", "ece", "cw_ece")}}
    if before:
        summary["before"] = {k: before[k] for k in ("accuracy", "mean_confidence", "ece",
                                                    "cw_ece")}
    atomic_write_json(out / "summary.json", summary)
    log.info("training summary: %s", json.dumps(summary))
    return TrainResult(out, before, after, train_seconds, estep.seconds if estep else 0.0)
