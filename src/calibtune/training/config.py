"""Training configuration: one dataclass, loadable from YAML, every field a CLI option."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .losses import SFT_NORMALISATIONS
from .targets import ECE_REDUCTIONS, ECE_TARGETS

METHODS = ("sft", "cft", "rcft", "label_smoothing")


@dataclass
class TrainConfig:
    """Defaults follow the paper (METHOD.md §5): LoRA r 128, α 64, dropout 0.05, all linear
    layers, cosine schedule with 10% warm-up, AdamW. Shrink epochs/steps for a CPU run."""

    model: str = "smollm2-135m-instruct"
    data: str = "mmlu"
    split: str | None = "train"
    train_limit: int | None = None
    eval_data: str | None = None  # default: the same dataset
    eval_split: str | None = "test"
    eval_limit: int | None = 500
    eval_before: bool = True
    epoch_eval_limit: int = 100  # held-out items scored at every epoch end (0: off)
    prompt: str = "plain"
    scoring: str = "letter"  # letter | cloze: how options are scored in training and evaluation
    cloze_norm: str = "none"  # none | token | char: the cloze option score RCFT regularises
    method: str = "cft"
    sft_loss: str | None = None  # full | completion; default: full for rcft and sft, else completion
    sft_weight: float = 1.0  # 0 with rcft gives the paper's "L_ECE alone" ablation
    sft_normalise: str = "token"  # token | sequence: mean over tokens, or per-sequence sum
    ece_lambda: float = 1.0
    ece_targets: str = "live"  # live | frozen: M-step targets from current or E-step probabilities
    ece_reduction: str = "item"  # item | bin: mean over items, or every bin the same weight
    n_bins: int = 10
    estep_every_steps: int | None = None  # default: at the start and every epoch
    label_smoothing: float = 0.1
    epochs: float = 5.0
    max_steps: int = -1
    batch_size: int = 2
    grad_accum: int = 1
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    lora: bool = True
    lora_r: int = 128
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"
    load_in_4bit: bool = False  # QLoRA: NF4 frozen weights (bitsandbytes), LoRA in `dtype`
    max_length: int = 1024  # training items with longer prompts are dropped (with a warning)
    dtype: str = "float32"
    bf16: bool = False
    seed: int = 0
    save_steps: int = 50
    logging_steps: int = 10
    report_to: str = "none"
    gradient_checkpointing: bool = False
    group_by_length: bool = True  # batches of similar length: far less padding to compute
    out: str = "runs/train"

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
        if self.sft_loss not in ("full", "completion"):
            raise ConfigError(f"--sft-loss must be full or completion, got {self.sft_loss!r}")
        if self.method == "sft" and self.sft_loss != "full":
            raise ConfigError("--method sft is the full-sequence loss; use --method cft for "
                              "the completion-only loss")
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
        if self.load_in_4bit and not self.lora:
            raise ConfigError("--load-in-4bit trains a LoRA adapter on frozen 4-bit weights; "
                              "it cannot be combined with --full-finetune")
        if self.estep_every_steps is not None and self.estep_every_steps < 1:
            raise ConfigError("--estep-every-steps must be >= 1")
