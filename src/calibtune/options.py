"""The config family: options shared by several commands, each declared once.

TRL's way: `DPOConfig` inherits `TrainingArguments` and only changes the defaults that differ.
Here every command's config inherits the groups of options it shares with others, so `--seed`,
`--n-bins`, the optimiser and the LoRA shape have one declaration (help, flag, aliases, the
`TrainingArguments`/`DPOConfig` name) whatever command reads them. A command whose default
differs says so with `inherit` (the declaration stays the base's). Importing this module imports
no torch.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .config import option
from .defaults import CLOZE_NORMS, N_BINS, N_BOOT, PROMPT_STYLES, SCORINGS, SEED
from .errors import ConfigError

SEED_HELP = "Seed of sampling, splits, shuffling and the bootstrap (default 0)."
PROMPT_HELP = "Prompt style: plain | reference (the reference code's template) | chat."
SCORING_HELP = "letter (option letters) or cloze (option texts)."
MODEL_HELP = "Built-in name, model folder or .gguf file."
BASE_ADAPTER_HELP = ("A PEFT adapter merged into the model first (e.g. a `calibtune align` "
                     "run's OUT/adapter: the DPO'd model).")
OUT_HELP = "Output folder."


def inherit(base: type, name: str, default: Any, help: str | None = None) -> Any:
    """Field `name` of `base` with another default (and, if given, a command's own wording of
    its help): flag, aliases and `hf=` name stay the base's one declaration."""
    field = base.__dataclass_fields__[name]
    meta = dict(field.metadata) | {"inherited": True}
    if help is not None:
        meta["help"] = help
    return dataclasses.field(default=default, metadata=meta)


def check_choice(flag: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def check_finite(flag: str, value: Any, *, zero_allowed: bool) -> None:
    """`value` a finite real number (not a bool) > 0, or >= 0 with `zero_allowed`."""
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not number or not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
        raise ConfigError(f"{flag} must be a finite number {'>=' if zero_allowed else '>'} 0, "
                          f"got {value!r}")


@dataclass
class Options:
    """The root: `__post_init__` runs every group's checks (each calls `super()`'s)."""

    def __post_init__(self) -> None:
        pass


@dataclass
class Seeded(Options):
    seed: int = option(SEED, SEED_HELP, hf="seed")


@dataclass
class Binned(Options):
    n_bins: int = option(N_BINS, "Number of confidence bins (default 10).", aliases=("--bins",),
                         keys=("bins",))

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 1:
            raise ConfigError(f"--n-bins must be an integer >= 1, got {self.n_bins!r}")


@dataclass
class Bootstrapped(Options):
    n_boot: int = option(N_BOOT, "Bootstrap resamples for intervals (default 1000; 0: none).")


@dataclass
class Output(Options):
    out: str = option("runs/run", OUT_HELP)


@dataclass
class ModelChoice(Options):
    """The model a command loads (and an adapter merged into it first)."""

    model: str = option("smollm2-135m-instruct", MODEL_HELP)
    base_adapter: str | None = option(None, BASE_ADAPTER_HELP)
    dtype: str = option("float32", "float32 | bfloat16 | float16.")


@dataclass
class Prompted(Options):
    prompt: str = option("plain", PROMPT_HELP)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("--prompt", self.prompt, PROMPT_STYLES)


@dataclass
class Reading(Prompted):
    """How a question is shown and its options read."""

    scoring: str = option("letter", SCORING_HELP)
    cloze_norm: str = option("none", "Cloze length normalisation: none | token | char.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("--scoring", self.scoring, SCORINGS)
        check_choice("--cloze-norm", self.cloze_norm, CLOZE_NORMS)


@dataclass
class Limited(Options):
    limit: int | None = option(None, "Score a seeded random sample of N items (--preferences: "
                                     "N pairs; --from: the first N items of the file).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")


@dataclass
class Lenient(Options):
    skip_invalid: bool = option(False, "Keep going past bad rows; list them in rejected.jsonl.")


@dataclass
class Inference(ModelChoice):
    """A model loaded to score (not to train): its adapter, device and batches."""

    adapter: str | None = option(None, "A PEFT adapter folder to apply.")
    device: str | None = option(None, "cpu, cuda, cuda:1 … (default: cuda if present; under "
                                      "accelerate launch, each process's own).")
    trust_remote_code: bool = option(False, "Allow a model folder's own code to run.")
    batch_size: int = option(16, "Most items per forward pass.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")


@dataclass
class Preferences(Options):
    """Preference pairs (prompt, chosen, rejected), tokenised as calibtune scores them."""

    preferences: str | None = option(None, "prompt/chosen/rejected .jsonl, or hhh (BIG-bench "
                                           "hhh_alignment).")
    append_eos: bool = option(False, "Append EOS to every response (TRL's own tokenisation "
                                     "does).")


@dataclass
class Finetuning(Reading, Binned, Seeded):
    """What `calibtune train` and `calibtune align` share: optimiser, schedule, LoRA shape,
    checkpoints. `hf=` names the `TrainingArguments` (and `DPOConfig`) field each is copied to.
    LoRA r 128, α 64, dropout 0.05, all linear layers, cosine schedule with 10% warm-up follow
    the reference code (docs/method.md §5)."""

    epochs: float = option(5.0, "Epochs (default 5, as the reference code).", hf="num_train_epochs")
    max_steps: int = option(-1, "Stop after N optimiser steps.", hf="max_steps")
    batch_size: int = option(2, "Per-device batch size.", hf="per_device_train_batch_size")
    grad_accum: int = option(1, "Gradient accumulation steps.",
                             hf="gradient_accumulation_steps")
    learning_rate: float = option(1e-4, "Peak learning rate.", hf="learning_rate")
    # transformers reads a warmup_steps below 1 as a share of the steps
    warmup_ratio: float = option(0.1, "Share of the steps that warm the learning rate up.",
                                 hf="warmup_steps")
    weight_decay: float = option(0.0, "AdamW weight decay.", hf="weight_decay")
    lr_scheduler: str = option("cosine", "Learning-rate schedule (transformers' names: cosine, "
                                         "linear, constant, ...).", hf="lr_scheduler_type")
    lora_r: int = option(128, "LoRA rank (default 128).")
    lora_alpha: int = option(64, "LoRA alpha (default 64).")
    lora_dropout: float = option(0.05, "LoRA dropout (default 0.05).")
    lora_targets: str = option("all-linear", "all-linear or comma-separated module names.")
    lora_layers: int | None = option(None, "Adapt only the top N decoder layers (default: all). "
                                           "The frozen layers below need no backward pass: "
                                           "a cheaper step on a large model on CPU.")
    max_length: int = option(1024, "Longer training examples (prompt + response tokens) are "
                                   "dropped with a warning, not truncated.", hf="max_length")
    bf16: bool = option(False, "Mixed precision in bfloat16.", hf="bf16")
    save_steps: int = option(50, "Checkpoint every N steps.", hf="save_steps")
    logging_steps: int = option(10, "Log the loss terms every N steps.", hf="logging_steps")
    report_to: str = option("none", "none | tensorboard.")
    gradient_checkpointing: bool = option(False, "Recompute activations in backward (less "
                                                 "memory).", hf="activation_checkpointing")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("--batch-size and --grad-accum must be >= 1")
        if self.learning_rate <= 0:
            raise ConfigError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("--epochs must be > 0 (or set --max-steps)")
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise ConfigError("--lora-r must be >= 1 and --lora-alpha > 0")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lora_layers is not None and self.lora_layers < 1:
            raise ConfigError(f"--lora-layers must be >= 1, got {self.lora_layers}")
        if self.max_length < 2:
            raise ConfigError(f"--max-length must be >= 2, got {self.max_length}")
        if self.save_steps < 1 or self.logging_steps < 1:
            raise ConfigError("--save-steps and --logging-steps must be >= 1")


#: `--ece-targets` / `--ece-reduction` choices (RCFT's M-step; `align --calibration-weight`).
ECE_TARGETS = ("live", "frozen")
ECE_REDUCTIONS = ("item", "bin")


@dataclass
class EceTerm(Options):
    """How RCFT's ECE term L_ECE reads its E-step targets: `calibtune train --method rcft` and
    `calibtune align --calibration-weight` share it."""

    ece_targets: str = option("live", "M-step targets: live (re-binned from current "
                                      "probabilities, default) | frozen (fixed at the E-step).")
    ece_reduction: str = option("item", "L_ECE over a batch: item (mean, default) | bin (every "
                                        "bin the same weight, as the reference).")
    estep_every_steps: int | None = option(None, "Run the E-step every N steps (default: at the "
                                                 "start and every epoch).")
    ece_bin_prior: float = option(0.0, "Pseudo-items at the training accuracy added to each "
                                       "E-step bin's accuracy (default 0: the bin's own, an "
                                       "empty bin borrowing its nearest bin's).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("--ece-targets", self.ece_targets, ECE_TARGETS)
        check_choice("--ece-reduction", self.ece_reduction, ECE_REDUCTIONS)
        if self.estep_every_steps is not None and self.estep_every_steps < 1:
            raise ConfigError("--estep-every-steps must be >= 1")
        check_finite("--ece-bin-prior", self.ece_bin_prior, zero_allowed=True)


@dataclass
class FinetuneRun(ModelChoice, Output):
    """The data and held-out evaluation of a fine-tuning run (`train`, `align`)."""

    dtype: str = inherit(ModelChoice, "dtype", "float32", "float32 | bfloat16.")
    data: str = option("mmlu", "Training data: built-in name or file.")
    split: str | None = option("train", "Split of a built-in training dataset (default train).")
    train_limit: int | None = option(None, "Train on a seeded sample of N items.")
    eval_data: str | None = option(None, "Held-out data (default: same dataset).")
    eval_split: str | None = option("test", "Held-out split (default test).")
    eval_limit: int | None = option(500, "Evaluate on a seeded sample of N items (default 500).")
    eval_before: bool = option(True, "Also score the held-out items before training (LoRA).")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, value in (("--train-limit", self.train_limit), ("--eval-limit", self.eval_limit)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
