"""Training configuration: one dataclass, each field declared once with its help and flag.

`TrainConfig` holds what the library's `train` needs (method, losses, optimiser, LoRA); the
workflow's `TrainRunConfig` adds the model, data and output folder. Both load from YAML, and the
CLI builds `calibtune train`'s options from their fields. Importing this module imports no
torch, so the CLI starts fast.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..defaults import N_BINS, TRAIN_METHODS
from ..options import (ECE_REDUCTIONS, ECE_TARGETS, PROMPT_HELP, SCORING_HELP,  # noqa: F401
                       SEED_HELP, EceTerm, Finetuning, inherit)
from ..errors import ConfigError

#: `calibtune train --method` choices (one home: `calibtune.defaults.TRAIN_METHODS`).
METHODS = TRAIN_METHODS
SFT_LOSSES = ("full", "completion")
SFT_NORMALISATIONS = ("token", "sequence")


@dataclass
class TrainConfig(EceTerm, Finetuning):
    """The options shared with `calibtune align` (`options.Finetuning`: LoRA r 128, α 64,
    dropout 0.05, all linear layers, 5 epochs, cosine schedule with 10% warm-up, AdamW, as the
    reference code, docs/method.md §5) and the calibration methods' own; the learning rate and λ
    are ours (docs/training.md says where each default comes from). Shrink epochs/steps for a
    CPU run."""

    scoring: str = inherit(Finetuning, "scoring", "letter",
                           SCORING_HELP + " Training and evaluation read the same.")
    cloze_norm: str = inherit(Finetuning, "cloze_norm", "none",
                              "Cloze score RCFT regularises: none | token | char.")
    n_bins: int = inherit(Finetuning, "n_bins", N_BINS,
                          "Confidence bins of the E-step and the evaluation (default 10).")
    method: str = option("cft", "sft | cft | rcft | label_smoothing.")
    sft_loss: str | None = option(None, "full | completion (default: full for sft and rcft, "
                                        "else completion).")
    sft_weight: float = option(1.0, "Weight of the SFT term (0 with rcft: L_ECE alone).")
    sft_normalise: str = option("token", "L_SFT: token (mean over tokens, default) | sequence "
                                         "(per-sequence sum).")
    ece_lambda: float = option(1.0, "Weight λ of the ECE regulariser.", flag="--lambda")
    label_smoothing: float = option(0.1, "ε of the label_smoothing baseline.")
    lora: bool = option(True, "Train all weights instead of a LoRA adapter.",
                        flag="--full-finetune", invert=True)
    max_step_tokens: int | None = option(None, "Most padded tokens per forward call of a "
                                         "training step: a longer batch runs as micro-batches "
                                         "with the same gradient (less activation memory; one "
                                         "process only). Default: the whole batch.")
    frozen_cache_mb: float = option(2048.0, "With --lora-layers: memory (MB) for the frozen "
                                            "layers' output, computed once per sequence and "
                                            "reused by later epochs and E-steps (0: off).")
    frozen_cache_dir: str | None = option(None, "With --lora-layers: also keep the frozen "
                                          "layers' output on disk here, shared by every run "
                                          "over the same frozen weights (reproduce uses "
                                          "OUT/frozen-states). Default: memory only.")
    group_by_length: bool = option(True, "Batch items of similar length: far less padding.")
    epoch_eval_limit: int = option(100, "Held-out items scored at each epoch end (default 100; "
                                        "0: off).")
    epoch_train_limit: int = option(100, "Training items scored at each epoch end, for the "
                                         "accuracy-ECE plane (default 100; 0: off).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.frozen_cache_mb < 0:
            raise ConfigError(f"--frozen-cache-mb must be >= 0, got {self.frozen_cache_mb}")
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
        if self.sft_normalise not in SFT_NORMALISATIONS:
            raise ConfigError(f"--sft-normalise must be one of {', '.join(SFT_NORMALISATIONS)}, "
                              f"got {self.sft_normalise!r}")
        if self.ece_lambda < 0 or self.sft_weight < 0:
            raise ConfigError("--lambda and --sft-weight must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_step_tokens is not None and self.max_step_tokens < 1:
            raise ConfigError(f"--max-step-tokens must be >= 1, got {self.max_step_tokens}")
