"""Training configuration: one dataclass, each field declared once with its help and flag.

`TrainConfig` holds what the library's `train` needs (method, losses, optimiser, LoRA); the
workflow's `TrainRunConfig` adds the model, data and output folder. Both load from YAML, and the
CLI builds `calibtune train`'s options from their fields. Importing this module imports no
torch, so the CLI starts fast.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..errors import ConfigError

METHODS = ("sft", "cft", "rcft", "label_smoothing")
SFT_LOSSES = ("full", "completion")
SFT_NORMALISATIONS = ("token", "sequence")
ECE_TARGETS = ("live", "frozen")
ECE_REDUCTIONS = ("item", "bin")
PROMPT_HELP = "Prompt style: plain | reference (the reference code's template) | chat."
SCORING_HELP = "letter (option letters) or cloze (option texts)."
SEED_HELP = "Seed of sampling, splits, shuffling and the bootstrap (default 0)."


@dataclass
class TrainConfig:
    """LoRA r 128, α 64, dropout 0.05, all linear layers, 5 epochs, cosine schedule with 10%
    warm-up, AdamW follow the reference code (docs/method.md §5); the learning rate and λ are ours
    (docs/training.md says where each default comes from). Shrink epochs/steps for a CPU run."""

    prompt: str = option("plain", PROMPT_HELP)
    scoring: str = option("letter", SCORING_HELP + " Training and evaluation read the same.")
    cloze_norm: str = option("none", "Cloze score RCFT regularises: none | token | char.")
    method: str = option("cft", "sft | cft | rcft | label_smoothing.")
    sft_loss: str | None = option(None, "full | completion (default: full for sft and rcft, "
                                        "else completion).")
    sft_weight: float = option(1.0, "Weight of the SFT term (0 with rcft: L_ECE alone).")
    sft_normalise: str = option("token", "L_SFT: token (mean over tokens, default) | sequence "
                                         "(per-sequence sum).")
    ece_lambda: float = option(1.0, "Weight λ of the ECE regulariser.", flag="--lambda")
    ece_targets: str = option("live", "M-step targets: live (re-binned from current "
                                      "probabilities, default) | frozen (fixed at the E-step).")
    ece_reduction: str = option("item", "L_ECE over a batch: item (mean, default) | bin (every "
                                        "bin the same weight, as the reference).")
    n_bins: int = option(10, "Confidence bins of the E-step and the evaluation (default 10).")
    estep_every_steps: int | None = option(None, "Run the E-step every N steps (default: at the "
                                                 "start and every epoch).")
    label_smoothing: float = option(0.1, "ε of the label_smoothing baseline.")
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
    lora: bool = option(True, "Train all weights instead of a LoRA adapter.",
                        flag="--full-finetune", invert=True)
    lora_r: int = option(128, "LoRA rank (default 128).")
    lora_alpha: int = option(64, "LoRA alpha (default 64).")
    lora_dropout: float = option(0.05, "LoRA dropout (default 0.05).")
    lora_targets: str = option("all-linear", "all-linear or comma-separated module names.")
    max_length: int = option(1024, "Training items with longer prompts are dropped (with a "
                                   "warning), not truncated.")
    bf16: bool = option(False, "Mixed precision in bfloat16.", hf="bf16")
    seed: int = option(0, SEED_HELP, hf="seed")
    save_steps: int = option(50, "Checkpoint every N steps.", hf="save_steps")
    logging_steps: int = option(10, "Log the loss terms every N steps.", hf="logging_steps")
    report_to: str = option("none", "none | tensorboard.")
    gradient_checkpointing: bool = option(False, "Recompute activations in backward (less "
                                                 "memory).", hf="activation_checkpointing")
    max_step_tokens: int | None = option(None, "Most padded tokens per forward call of a "
                                         "training step: a longer batch runs as micro-batches "
                                         "with the same gradient (less activation memory; one "
                                         "process only). Default: the whole batch.")
    group_by_length: bool = option(True, "Batch items of similar length: far less padding.")
    epoch_eval_limit: int = option(100, "Held-out items scored at each epoch end (default 100; "
                                        "0: off).")
    epoch_train_limit: int = option(100, "Training items scored at each epoch end, for the "
                                         "accuracy-ECE plane (default 100; 0: off).")

    def __post_init__(self) -> None:
        from ..scoring.base import CLOZE_NORMS, SCORINGS

        if self.scoring not in SCORINGS:
            raise ConfigError(f"--scoring must be {' or '.join(SCORINGS)}, got {self.scoring!r}")
        if self.cloze_norm not in CLOZE_NORMS:
            raise ConfigError(f"--cloze-norm must be one of {', '.join(CLOZE_NORMS)}, "
                              f"got {self.cloze_norm!r}")
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.sft_loss is None:
            self.sft_loss = "full" if self.method in ("sft", "rcft") else "completion"
        if self.sft_loss not in SFT_LOSSES:
            raise ConfigError(f"--sft-loss must be full or completion, got {self.sft_loss!r}")
        if self.method == "sft" and self.sft_loss != "full":
            raise ConfigError("--method sft is the full-sequence loss; use --method cft for "
                              "the completion-only loss")
        if self.method in ("cft", "label_smoothing") and self.sft_loss == "full":
            # the full-sequence loss replaces the completion term these methods are made of
            raise ConfigError(f"--method {self.method} is a completion-only loss; with "
                              "--sft-loss full it would train exactly as --method sft (drop "
                              "--sft-loss, or use --method sft or rcft)")
        for name, value, allowed in (("--sft-normalise", self.sft_normalise, SFT_NORMALISATIONS),
                                     ("--ece-targets", self.ece_targets, ECE_TARGETS),
                                     ("--ece-reduction", self.ece_reduction, ECE_REDUCTIONS)):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.ece_lambda < 0 or self.sft_weight < 0:
            raise ConfigError("--lambda and --sft-weight must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.n_bins < 1:
            raise ConfigError(f"--n-bins must be >= 1, got {self.n_bins}")
        if self.max_step_tokens is not None and self.max_step_tokens < 1:
            raise ConfigError(f"--max-step-tokens must be >= 1, got {self.max_step_tokens}")
        if self.estep_every_steps is not None and self.estep_every_steps < 1:
            raise ConfigError("--estep-every-steps must be >= 1")
