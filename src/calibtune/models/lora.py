"""The LoRA adapter of a run's options: one shape for `calibtune train` and `calibtune align`."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError


def decoder_layer_count(model: Any) -> int:
    """How many decoder layers `model` stacks (its text config's `num_hidden_layers`)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
        else model.config
    return int(config.num_hidden_layers)


def decoder_linear_names(model: Any) -> list[str]:
    """The leaf names of the linear modules inside the decoder layers (q_proj, ..., down_proj):
    what peft's "all-linear" adapts, spelled out so that `layers_to_transform` may narrow it
    (peft refuses a layer choice with the "all-linear" shorthand)."""
    import torch

    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and ".layers." in name}
    if not names:
        raise ConfigError("--lora-layers: found no linear module inside a `.layers.` stack of "
                          f"{type(model).__name__}; name the modules with --lora-targets")
    return sorted(names)


def lora_config(cfg: Any, model: Any = None) -> Any:
    """peft's `LoraConfig` of `cfg`'s rank, alpha, dropout and target modules (any config of the
    `options.Finetuning` family). With `cfg.lora_layers` N, only the top N decoder layers of
    `model` get adapters: the frozen layers below need no backward pass."""
    from peft import LoraConfig

    targets: Any = cfg.lora_targets if cfg.lora_targets == "all-linear" else \
        [t.strip() for t in cfg.lora_targets.split(",")]
    layers = None
    if getattr(cfg, "lora_layers", None) is not None:
        if model is None:
            raise ConfigError("--lora-layers needs the model to count its decoder layers")
        total = decoder_layer_count(model)
        if cfg.lora_layers > total:
            raise ConfigError(f"--lora-layers {cfg.lora_layers} exceeds the model's "
                              f"{total} decoder layers")
        layers = list(range(total - cfg.lora_layers, total))
        if targets == "all-linear":
            targets = decoder_linear_names(model)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, layers_to_transform=layers, task_type="CAUSAL_LM")


def wrap_lora(model: Any, cfg: Any) -> Any:
    """`model` with fresh LoRA adapters of `lora_config(cfg, model)`."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(cfg, model))


def stop_backward_below_adapters(model: Any) -> None:
    """Undo the input-gradient hook that transformers adds when it turns on activation
    checkpointing. With adapters in every layer the hook is harmless; with `--lora-layers` it
    would make autograd run back through every frozen layer (and recompute each checkpointed
    one) for gradients nobody reads. Non-reentrant checkpointing, transformers' default, needs
    no input gradient."""
    model.disable_input_require_grads()


def top_layers_callbacks(cfg: Any) -> list:
    """With `--lora-layers` and `--gradient-checkpointing`: a `TrainerCallback` that calls
    `stop_backward_below_adapters` once the Trainer has turned activation checkpointing on (it
    does so inside `train()`, before `on_train_begin`). No callback otherwise."""
    if cfg.lora_layers is None or not cfg.gradient_checkpointing:
        return []
    from transformers import TrainerCallback

    class StopBackwardBelowAdapters(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if model is not None:
                stop_backward_below_adapters(model)

    return [StopBackwardBelowAdapters()]
