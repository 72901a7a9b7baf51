"""`train`: fine-tune an in-memory model for calibration and return it with plain results.

The library's training call: LoRA (or all weights), the dataset of the run's scoring mode, the
`CalibTrainer` with RCFT's E-step and the per-epoch held-out monitor. Nothing is written unless
`output_dir` is given (then checkpoints go there, and a run can resume from one); the workflow
`calibtune train` builds on it and writes the run folder.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..config import hf_arguments
from ..data.items import MCQItem
from ..interrupts import finish_first
from ..errors import TrainingError
from ..models import LoadedModel, frozen_prefix
from ..models.lora import decoder_layer_count, top_layers_callbacks, wrap_lora
from ..scoring import make_scorer
from ..scoring.base import Scorer, unpack_model
from ..scoring.prompts import PromptEncoder
from .cloze_dataset import ClozeCollator, ClozeTrainDataset
from .config import TrainConfig
from .dataset import ExampleDataset, MCQCollator, MCQTrainDataset
from .distributed import check_engine, rank_and_world, sharding_engine
from .estep import EStepCallback, RegulariserState, steps_per_epoch
from .faults import TrainingClock, check_resumable, field_defaults, fingerprint
from .memory import return_freed_memory
from .monitor import EpochEvalCallback
from .trainer import CalibTrainer

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    """What `train` returns: the trained model (a `LoadedModel`, eval mode; a PEFT model when
    LoRA) and plain results. `trainer` is kept to save the adapter under sharding engines."""

    model: Any
    log_history: list[dict]
    estep_history: list[dict]
    steps: int
    train_seconds: float | None  # across resumes (`faults.TrainingClock`); None: unknown
    estep_seconds: float | None
    dropped: list[str] = field(default_factory=list)
    trainer: Any = None

    def save_adapter(self, folder: str | Path) -> None:
        """Write the adapter (or the whole model) into `folder`, replacing it atomically."""
        save_adapter(self.trainer, Path(folder))


def build_dataset(cfg: TrainConfig, items: Sequence[MCQItem], tokenizer: Any
                  ) -> tuple[ExampleDataset, Any]:
    """(dataset, collator) of the run's mode. In cloze mode RCFT and label smoothing need
    every option's sequence; CFT and SFT only the gold one."""
    items = list(items)
    if cfg.scoring == "cloze":
        all_options = cfg.method in ("rcft", "label_smoothing")
        dataset = ClozeTrainDataset(items, tokenizer, cfg.max_length, all_options)
        return dataset, ClozeCollator(tokenizer, dataset.k_max)
    encoder = PromptEncoder(tokenizer, cfg.prompt, max(it.n_options for it in items))
    dataset = MCQTrainDataset(items, encoder, cfg.max_length)
    return dataset, MCQCollator(tokenizer, dataset.letter_ids)


def training_arguments(cfg: TrainConfig, output_dir: str | Path, save: bool = True) -> Any:
    """transformers `TrainingArguments`: the fields declared with `hf=` copied by name, plus
    the settings calibtune always uses."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir), **hf_arguments(cfg, TrainingArguments),
        save_strategy="steps" if save else "no", save_total_limit=2,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to], data_seed=cfg.seed,
        remove_unused_columns=False, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, label_names=["label"],
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        disable_tqdm=False)


def config_scorer(cfg: TrainConfig, model: Any, tokenizer: Any, progress: bool | str = False,
                  fewshot: Any = None) -> Scorer:
    """The scorer of this run's mode: the E-step, the epoch monitor and the final evaluation
    all read options the way training does (after `fewshot`'s exemplars, when given). Sharded
    ranks batch by count only (no token budget, no per-group prefix batches), so equal shares
    of items cost every rank the same number of forward calls."""
    budget: dict[str, Any] = {}
    if sharding_engine():  # read once: with ZeRO it opens the DeepSpeed config file
        budget["max_batch_tokens"] = None
        if fewshot is not None:  # no per-group batches (cloze: nor sharing)
            budget["share_prefix"] = False
    return make_scorer(model, tokenizer, cfg.scoring, prompt=cfg.prompt, cloze_norm=cfg.cloze_norm,
                       progress=progress, fewshot=fewshot, **budget)


def prepare_model(model: Any, cfg: TrainConfig) -> Any:
    """The model ready to train: no KV cache, 4-bit weights prepared, LoRA layers added."""
    model.config.use_cache = False
    if getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return wrap_lora(model, cfg) if cfg.lora else model


@contextmanager
def frozen_layers_kept(model: Any, cfg: TrainConfig) -> Iterator[Any]:
    """With `--lora-layers` in one process, the frozen layers' output kept per sequence while
    the block runs (`models.frozen_prefix`), then dropped, and on disk in
    `--frozen-cache-dir` when given; nothing otherwise (sharded ranks gather layers as they
    go; a 4-bit model is left as it is)."""
    skip = (not cfg.lora or cfg.lora_layers is None or cfg.frozen_cache_mb == 0
            or int(os.environ.get("WORLD_SIZE", "1")) > 1 or sharding_engine() is not None
            or getattr(model, "is_loaded_in_4bit", False))
    start = 0 if skip else decoder_layer_count(model) - cfg.lora_layers
    if start <= 0:
        yield None
        return
    cache = frozen_prefix.install(model, start, cfg.frozen_cache_mb, cfg.frozen_cache_dir)
    try:
        yield cache
    finally:
        disk = "" if cache.store is None else \
            f"; {cache.store.loaded} read from and {cache.store.written} written to disk"
        log.info("frozen layers run for %d sequences, reused for %d (%.0f MB kept%s)",
                 cache.stats.misses, cache.stats.hits, cache.stats.bytes / 2**20, disk)
        frozen_prefix.uninstall(cache)


def train(model: Any, items: Sequence[MCQItem], config: TrainConfig | None = None, *,
          eval_items: Sequence[MCQItem] = (), output_dir: str | Path | None = None,
          resume_from: str | None = None, callbacks: list | None = None,
          fewshot: Any = None) -> TrainOutcome:
    """Fine-tune `model` (a `LoadedModel` or a (model, tokenizer) pair) on `items`.

    The model is trained in place (LoRA layers are added to it); the outcome holds it, in eval
    mode. `eval_items` feed the per-epoch held-out monitor (`config.epoch_eval_limit` of them).
    With `output_dir`, checkpoints are saved there every `config.save_steps` steps and
    `resume_from` may name one (refused, with nothing touched, unless it is a whole checkpoint
    of this configuration and these items: `faults.check_resumable`); without it nothing is
    written. A non-finite loss term or gradient raises `TrainingError` (`faults`).
    `fewshot` (a
    `data.fewshot.Fewshot` covering the groups of `items` and `eval_items`) puts exemplars before
    the questions the E-step and the epoch monitor score; training examples stay zero-shot.
    """
    import torch

    cfg = config or TrainConfig()
    check_engine()
    return_freed_memory()  # else glibc keeps the longest step's activations for the whole run
    identity = fingerprint(cfg, items)
    if resume_from:
        check_resumable(resume_from, identity, field_defaults(cfg))
    inner, tokenizer, name = unpack_model(model)
    torch.manual_seed(cfg.seed)
    inner = prepare_model(inner, cfg)
    dataset, collator = build_dataset(cfg, items, tokenizer)
    reg_state = RegulariserState()

    def labelled(label: str):
        """A scorer factory whose bar (rank 0 only) says what a minutes-long pass is doing."""
        def scorer_for(current: Any) -> Scorer:
            return config_scorer(cfg, current, tokenizer,
                                 progress=label if rank_and_world()[0] == 0 else False,
                                 fewshot=fewshot)
        return scorer_for

    world = int(os.environ.get("WORLD_SIZE", "1"))
    extra = list(callbacks or [])
    estep = None
    if cfg.method == "rcft":
        estep = EStepCallback(reg_state, dataset.kept_items, labelled("E-step: training items"),
                              cfg.n_bins,
                              steps_per_epoch(len(dataset), cfg.batch_size, world, cfg.grad_accum),
                              cfg.estep_every_steps, resume_from=resume_from,
                              bin_prior=cfg.ece_bin_prior)
        extra.insert(0, estep)
    extra += top_layers_callbacks(cfg)
    if cfg.epoch_eval_limit > 0 and eval_items:
        extra.append(EpochEvalCallback(list(eval_items)[: cfg.epoch_eval_limit],
                                       labelled("epoch check"), cfg.n_bins,
                                       dataset.kept_items[: cfg.epoch_train_limit]))
    scratch = None if output_dir is not None else tempfile.mkdtemp(prefix="calibtune-train-")
    try:
        args = training_arguments(cfg, output_dir or scratch, save=output_dir is not None)
        clock = TrainingClock.resuming(resume_from)
        if estep:
            clock.estep_seconds = lambda: estep.seconds
        trainer = CalibTrainer(model=inner, args=args, train_dataset=dataset,
                               data_collator=collator, callbacks=extra, calib_config=cfg,
                               reg_state=reg_state, fingerprint=identity, clock=clock)
        finish_saves_first(trainer)
        clock.start()
        with frozen_layers_kept(inner, cfg):
            trainer.train(resume_from_checkpoint=resume_from)
        seconds = clock.seconds() or {"train": None, "estep": None}
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    trained = LoadedModel(trainer.model.eval(), tokenizer, name or "")
    return TrainOutcome(trained, list(trainer.state.log_history), list(reg_state.history),
                        trainer.state.global_step, seconds["train"],
                        seconds["estep"] if estep else 0.0,
                        list(dataset.dropped), trainer)


def finish_saves_first(trainer: Any) -> None:
    """A SIGINT / SIGTERM during a checkpoint save lets the save finish, then stops: the last
    checkpoint is never half-written (`interrupts.finish_first`). Between saves a signal
    discards the step in progress; `--resume` goes on from the last checkpoint."""
    step = getattr(trainer, "_maybe_log_save_evaluate", None)
    if step is None:  # pragma: no cover - a Trainer without it: signals stop at once
        return

    def log_save_evaluate(*args: Any, **kwargs: Any) -> Any:
        with finish_first():
            return step(*args, **kwargs)

    trainer._maybe_log_save_evaluate = log_save_evaluate


def save_adapter(trainer: Any, folder: Path) -> None:
    """The trained adapter (or whole model) into `folder`, atomically. Every rank calls: under
    FSDP / ZeRO-3 the Trainer gathers the sharded weights, and rank 0 writes them."""
    main = trainer.is_world_process_zero()
    tmp = folder.parent / f".{folder.name}.tmp"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.save_model(str(tmp))
    except Exception as err:  # a full disk: torch and safetensors raise OSError or RuntimeError
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        before = "the adapter there before is intact" if folder.exists() else "nothing was left"
        raise TrainingError(f"saving {folder} failed ({type(err).__name__}: {err}); {before} "
                            "and the checkpoints are kept — free space and run again with "
                            "--resume") from None
    trainer.accelerator.wait_for_everyone()
    if main:
        (tmp / "training_args.bin").unlink(missing_ok=True)
        with finish_first():  # never the old adapter deleted and the new one not in place
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
