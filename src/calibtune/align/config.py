"""Alignment configuration: one dataclass, loadable from YAML, every field a CLI option."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import option
from ..errors import ConfigError

#: calibtune's loss names and TRL's `DPOConfig.loss_type` for each.
LOSSES = {"dpo": "sigmoid", "ipo": "ipo"}


@dataclass
class AlignConfig:
    """Preference optimisation (DPO / IPO) of a LoRA adapter through TRL's `DPOTrainer`.

    Training pairs come from `preferences` (a JSONL file of prompt/chosen/rejected, or ``hhh``)
    when it is set, else they are built from the MCQ items of `data` (gold answer over a seeded
    wrong option, read as `scoring` reads options). The held-out MCQ evaluation before/after is
    the one `calibtune train` runs. β = 0.1 is TRL's default and the DPO paper's usual value;
    the LoRA shape follows `calibtune train` (docs/method.md §5); the learning rate and one epoch
    are our choice, not tuned (docs/alignment.md).
    """

    model: str = option("smollm2-135m-instruct", 'Built-in name, model folder or .gguf file.')
    base_adapter: str | None = option(None, "A PEFT adapter merged into the model first (e.g. "
                                            "an earlier SFT/CFT run's OUT/adapter).")
    data: str = option("mmlu", 'MCQ items for pairs (unless --preferences); held-out default.')
    split: str | None = option("train", 'Split of a built-in dataset (default train).')
    train_limit: int | None = option(None, 'Train on a seeded sample of N pairs.')
    preferences: str | None = option(None, 'prompt/chosen/rejected .jsonl, or hhh (BIG-bench).')
    skip_invalid: bool = option(False, 'Keep going past bad preference rows (listed in rejected.jsonl).')
    heldout_fraction: float = option(0.2, 'Share of --preferences pairs held out for the retention check.')
    eval_data: str | None = option(None, 'Held-out MCQ data (default: the same dataset as --data).')
    eval_split: str | None = option("test", 'Held-out split (default test).')
    eval_limit: int | None = option(500, 'Evaluate on a seeded sample of N items (default 500).')
    eval_before: bool = option(True, 'Also score the held-out items before training.')
    retention: bool = option(True, 'Measure preference accuracy and KL on held-out pairs after training.')
    retention_limit: int | None = option(200, 'Held-out pairs the retention check reads (200).')
    prompt: str = option("plain", 'Prompt style: plain | reference | chat.')
    scoring: str = option("letter", 'letter | cloze: how MCQ pairs read options, and the evaluation.')
    cloze_norm: str = option("none", 'Cloze length normalisation: none | token | char.')
    n_bins: int = option(10, 'Number of confidence bins.')
    loss: str = option("dpo", "dpo (TRL's sigmoid loss) | ipo.")
    beta: float = option(0.1, 'β of DPO / IPO (default 0.1).')
    append_eos: bool = option(False, "Append EOS to every response (TRL's own tokenisation does).")
    epochs: float = option(1.0, 'Epochs (default 1).')
    max_steps: int = option(-1, 'Stop after N optimiser steps.')
    batch_size: int = option(2, 'Pairs per device step (each a chosen and a rejected sequence).')
    grad_accum: int = option(1, 'Gradient accumulation steps.')
    learning_rate: float = option(5e-5, 'Peak learning rate (default 5e-5).')
    warmup_ratio: float = option(0.1, 'Share of steps for linear warm-up.')
    weight_decay: float = option(0.0, 'AdamW weight decay.')
    lr_scheduler: str = option("cosine", "Learning-rate schedule (transformers' names).")
    lora_r: int = option(128, 'LoRA rank.')
    lora_alpha: int = option(64, 'LoRA alpha.')
    lora_dropout: float = option(0.05, 'LoRA dropout.')
    lora_targets: str = option("all-linear", 'all-linear or comma-separated module names.')
    max_length: int = option(1024, 'Longer pairs (prompt + response tokens) are dropped.')
    dtype: str = option("float32", 'float32 | bfloat16.')
    bf16: bool = option(False, 'Mixed precision in bfloat16.')
    seed: int = option(0, 'Seed of sampling, pairing, splits and training.')
    save_steps: int = option(50, 'Checkpoint every N steps.')
    logging_steps: int = option(10, 'Log the loss every N steps.')
    report_to: str = option("none", 'none | tensorboard.')
    gradient_checkpointing: bool = option(False, 'Recompute activations in backward (less memory).')
    out: str = option("runs/align", 'Output folder.')

    @property
    def method(self) -> str:
        """The name runs and reports use (`calibtune.workflows.train.evaluate_items` reads it)."""
        return self.loss

    def __post_init__(self) -> None:
        from ..scoring.cloze import CLOZE_NORMS
        from ..scoring.prompts import PROMPT_STYLES
        from ..scoring import SCORINGS

        if self.loss not in LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) \
                or not (0 < self.beta < math.inf):
            raise ConfigError(f"--beta must be a finite number > 0, got {self.beta!r}")
        if self.scoring not in SCORINGS:
            raise ConfigError(f"--scoring must be {' or '.join(SCORINGS)}, got {self.scoring!r}")
        if self.cloze_norm not in CLOZE_NORMS:
            raise ConfigError(f"--cloze-norm must be one of {', '.join(CLOZE_NORMS)}, "
                              f"got {self.cloze_norm!r}")
        if self.prompt not in PROMPT_STYLES:
            raise ConfigError(f"--prompt must be one of {', '.join(PROMPT_STYLES)}, "
                              f"got {self.prompt!r}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"--heldout-fraction must be in (0, 1), got {self.heldout_fraction}")
        for name, value in (("--train-limit", self.train_limit), ("--eval-limit", self.eval_limit),
                            ("--retention-limit", self.retention_limit)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.n_bins < 1:
            raise ConfigError(f"--n-bins must be >= 1, got {self.n_bins}")
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
        if self.max_length < 2:
            raise ConfigError(f"--max-length must be >= 2, got {self.max_length}")
        if self.save_steps < 1 or self.logging_steps < 1:
            raise ConfigError("--save-steps and --logging-steps must be >= 1")
        if self.preferences is None and not self.data:
            raise ConfigError("give --data (MCQ items to build pairs from) or --preferences")
