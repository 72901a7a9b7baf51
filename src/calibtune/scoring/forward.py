"""Answer-position logits without full-vocabulary logits everywhere, inside one forward call.

Every number calibtune reads from a model comes from `through_forward`: one call of the
top-level model (so DDP, FSDP and DeepSpeed wrappers see a normal forward, and FSDP gathers the
sharded layers and head as usual), with the decoder's final hidden states captured by a hook
and the caller's `compute(hidden, head)` run inside the output head's own forward call, where
its weights are live under any engine. `head` may apply any of its rows: the K option letters
at the answer position, or the whole vocabulary at the positions a loss needs. The model's own
logits are kept for the last position only and serve as the anchor that joins its outputs to
the loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch

T = TypeVar("T")


def unwrap(model: Any) -> Any:
    """The transformers model inside a PEFT / DDP wrapper (LoRA layers stay in place)."""
    while hasattr(model, "module") and not hasattr(model, "get_output_embeddings"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore padding, so left and right padding give the same numbers."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (works for left and right padding)."""
    t = attention_mask.shape[1]
    idx = torch.arange(t, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), idx, torch.full_like(idx, -1)).max(-1).values


@dataclass
class Head:
    """The output head (with the model's final-logit soft-capping), applied to chosen rows."""

    module: torch.nn.Module
    softcap: float | None = None

    def __call__(self, hidden: torch.Tensor, token_ids: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Logits of `hidden` [..., d] over the vocabulary, or over `token_ids` rows only, on
        `hidden`'s device (a model placed over several devices may hold its head elsewhere)."""
        weight, bias = self.module.weight, getattr(self.module, "bias", None)
        device = hidden.device
        if weight.device != device:
            hidden = hidden.to(weight.device)
        if token_ids is not None:
            token_ids = token_ids.to(weight.device)
            weight = weight[token_ids]
            bias = bias[token_ids] if bias is not None else None
        logits = torch.nn.functional.linear(hidden, weight, bias)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.to(device)


@dataclass
class ForwardResult:
    """What `through_forward` returns: `compute`'s value and the model's own output."""

    value: Any
    output: Any

    @property
    def anchor(self) -> torch.Tensor:
        """0 × the model's own (last-position) logits: add it to a loss so the top-level
        module's outputs take part in backward, as sharding engines' hooks expect."""
        return self.output.logits.float().sum() * 0.0


def through_forward(model: Any, compute: Callable[[torch.Tensor, Head], T], *,
                    input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor | None = None, **kwargs: Any) -> ForwardResult:
    """One top-level forward call; `compute(final hidden states [B, T, d], head)` runs inside
    the output head's forward, where its weights are live under every engine."""
    inner = unwrap(model)
    decoder, head_module = inner.get_decoder(), inner.get_output_embeddings()
    head = Head(head_module, getattr(inner.config, "final_logit_softcapping", None))
    captured: dict[str, Any] = {}

    def on_decoder(module, args, out):
        captured["hidden"] = out.last_hidden_state

    def on_head(module, args, out):  # hidden states on the inputs' device, as the caller's masks
        captured["value"] = compute(captured["hidden"].to(input_ids.device), head)

    hooks = [decoder.register_forward_hook(on_decoder),
             # prepend: before an engine's own post-forward hook frees the gathered weights
             head_module.register_forward_hook(on_head, prepend=True)]
    if position_ids is None:
        position_ids = positions_from_mask(attention_mask)
    kwargs.setdefault("use_cache", False)
    try:
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    position_ids=position_ids, logits_to_keep=1, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return ForwardResult(captured["value"], out)


def answer_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  token_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B, K] (or [B, V]) at each row's last real token, restricted to `token_ids`."""
    def at_answer(hidden: torch.Tensor, head: Head) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return head(hidden[rows, last_positions(attention_mask)], token_ids)

    return through_forward(model, at_answer, input_ids=input_ids,
                           attention_mask=attention_mask).value
