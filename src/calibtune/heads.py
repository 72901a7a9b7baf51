"""Answer-position logits without full-vocabulary logits everywhere.

The decoder's last hidden state is gathered at each row's answer position, and only the rows of
the output head that are needed (the K option letters, or the whole vocabulary at that one
position) are applied. Used by the scorer and the trainer alike, so both read the same numbers.
"""
from __future__ import annotations

from typing import Any

import torch


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


def hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final (normed) hidden states [B, T, d] of the decoder, computed once."""
    inner = unwrap(model)
    out = inner.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=positions_from_mask(attention_mask), use_cache=False)
    return out.last_hidden_state


def head_logits(model: Any, hidden: torch.Tensor, token_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Apply the output head to `hidden` [..., d], restricted to `token_ids` rows if given."""
    inner = unwrap(model)
    head = inner.get_output_embeddings()
    weight = head.weight if token_ids is None else head.weight[token_ids]
    bias = getattr(head, "bias", None)
    if bias is not None and token_ids is not None:
        bias = bias[token_ids]
    logits = torch.nn.functional.linear(hidden, weight, bias)
    cap = getattr(inner.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def answer_hidden(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  answer_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Hidden state [B, d] at the position whose next token is the answer letter."""
    hidden = hidden_states(model, input_ids, attention_mask)
    if answer_pos is None:
        answer_pos = last_positions(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), answer_pos]
