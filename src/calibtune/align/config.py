"""Alignment configuration: `calibtune train`'s shared options (`options.Finetuning`, the data
and held-out evaluation of `options.FinetuneRun`) and DPO's own; loadable from YAML, every field
a CLI option, mapped to TRL's `DPOConfig` through the fields' `hf=` names."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..errors import ConfigError
from ..options import (EceTerm, Finetuning, FinetuneRun, Lenient, Output, Preferences, check_finite,
                       inherit)

#: calibtune's loss names and TRL's `DPOConfig.loss_type` for each.
LOSSES = {"dpo": "sigmoid", "ipo": "ipo"}


@dataclass
class AlignConfig(FinetuneRun, Preferences, Lenient, EceTerm, Finetuning):
    """Preference optimisation (DPO / IPO) of a LoRA adapter through TRL's `DPOTrainer`.

    Training pairs come from `preferences` (a JSONL file of prompt/chosen/rejected, or ``hhh``)
    when it is set, else they are built from the MCQ items of `data` (gold answer over a seeded
    wrong option, read as `scoring` reads options). The held-out MCQ evaluation before/after is
    the one `calibtune train` runs. β = 0.1 is TRL's default and the DPO paper's usual value;
    the LoRA shape follows `calibtune train` (docs/method.md §5); the learning rate and one epoch
    are our choice, not tuned (docs/alignment.md).
    """

    data: str = inherit(FinetuneRun, "data", "mmlu", "MCQ items for pairs (unless "
                                                     "--preferences); held-out default.")
    train_limit: int | None = inherit(FinetuneRun, "train_limit", None,
                                      "Train on a seeded sample of N pairs.")
    eval_before: bool = inherit(FinetuneRun, "eval_before", True,
                                "Also score the held-out items before training.")
    skip_invalid: bool = inherit(Lenient, "skip_invalid", False, "Keep going past bad "
                                 "preference rows (listed in rejected.jsonl).")
    heldout_fraction: float = option(0.2, "Share of --preferences pairs held out for the "
                                          "retention check.")
    retention: bool = option(True, "Measure preference accuracy and KL on held-out pairs after "
                                   "training.")
    retention_limit: int | None = option(200, "Held-out pairs the retention check reads (200).")
    loss: str = option("dpo", "dpo (TRL's sigmoid loss) | ipo.")
    beta: float = option(0.1, "β of DPO / IPO (default 0.1).", hf="beta")
    calibration_weight: float = option(0.0, "λ of RCFT's ECE term on each pair's option "
                                            "distribution, added to the preference loss (default "
                                            "0: plain DPO / IPO; MCQ pairs only).")
    epochs: float = inherit(Finetuning, "epochs", 1.0, "Epochs (default 1).")
    batch_size: int = inherit(Finetuning, "batch_size", 2, "Pairs per device step (each a "
                                                           "chosen and a rejected sequence).")
    learning_rate: float = inherit(Finetuning, "learning_rate", 5e-5,
                                   "Peak learning rate (default 5e-5).")
    out: str = inherit(Output, "out", "runs/align")

    @property
    def method(self) -> str:
        """The name runs and reports use (`calibtune.workflows.train.evaluate_items` reads it)."""
        return self.loss

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        check_finite("--beta", self.beta, zero_allowed=False)
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"--heldout-fraction must be in (0, 1), got {self.heldout_fraction}")
        if self.retention_limit is not None and self.retention_limit < 1:
            raise ConfigError(f"--retention-limit must be >= 1, got {self.retention_limit}")
        check_finite("--calibration-weight", self.calibration_weight, zero_allowed=True)
        if self.calibration_weight > 0 and self.preferences is not None:
            raise ConfigError("--calibration-weight needs MCQ pairs (--data): the term reads each "
                              "pair's item's options, which a --preferences source does not have")
        if self.preferences is None and not self.data:
            raise ConfigError("give --data (MCQ items to build pairs from) or --preferences")
