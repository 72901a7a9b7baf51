"""Alignment configuration: one dataclass, loadable from YAML, every field a CLI option."""
from __future__ import annotations

import math
from dataclasses import dataclass

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
    the LoRA shape follows `calibtune train` (METHOD.md §5); the learning rate and one epoch
    are our choice, not tuned (docs/alignment.md).
    """

    model: str = "smollm2-135m-instruct"
    data: str = "mmlu"  # MCQ items: pairs to train on (unless `preferences`), eval default
    split: str | None = "train"
    train_limit: int | None = None  # train on a seeded sample of N pairs
    preferences: str | None = None  # a .jsonl of prompt/chosen/rejected, or "hhh"
    skip_invalid: bool = False  # keep going past bad preference rows (listed in rejected.jsonl)
    heldout_fraction: float = 0.2  # share of `preferences` pairs held out for retention
    eval_data: str | None = None  # default: the same dataset as `data`
    eval_split: str | None = "test"
    eval_limit: int | None = 500
    eval_before: bool = True
    retention: bool = True  # preference accuracy and KL on held-out pairs after training
    retention_limit: int | None = 200  # held-out pairs / prompts the retention check reads
    prompt: str = "plain"
    scoring: str = "letter"  # letter | cloze: how MCQ pairs read options, and the evaluation
    cloze_norm: str = "none"
    n_bins: int = 10
    loss: str = "dpo"  # dpo (TRL "sigmoid") | ipo
    beta: float = 0.1
    append_eos: bool = False  # TRL's own tokenisation appends EOS to every response; we do not
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 2  # pairs per device step (each a chosen and a rejected sequence)
    grad_accum: int = 1
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    lora_r: int = 128
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"
    max_length: int = 1024  # pairs whose prompt + longer response exceed this are dropped
    dtype: str = "float32"
    bf16: bool = False
    seed: int = 0
    save_steps: int = 50
    logging_steps: int = 10
    report_to: str = "none"
    gradient_checkpointing: bool = False
    out: str = "runs/align"

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
