"""The LoRA adapter of a run's options: one shape for `calibtune train` and `calibtune align`."""
from __future__ import annotations

from typing import Any


def lora_config(cfg: Any) -> Any:
    """peft's `LoraConfig` of `cfg`'s rank, alpha, dropout and target modules (any config of the
    `options.Finetuning` family)."""
    from peft import LoraConfig

    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else \
        [t.strip() for t in cfg.lora_targets.split(",")]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def wrap_lora(model: Any, cfg: Any) -> Any:
    """`model` with fresh LoRA adapters of `lora_config(cfg)`."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(cfg))
