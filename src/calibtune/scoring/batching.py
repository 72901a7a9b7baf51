"""Batching and padding: length-sorted batches under a token budget, padded id tensors.

Shared by the scorers and the training collators, so a prompt is padded the same way whether it
is scored or trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BatchPlan:
    """Which items go together: indices into the item list, sorted by prompt length."""

    batches: list[list[int]]


def plan_batches(lengths: list[int], batch_size: int, max_batch_tokens: int | None) -> BatchPlan:
    """Length-sorted batches of at most `batch_size` rows and `max_batch_tokens` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))  # longest first: OOM early
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        too_many = len(current) >= batch_size
        too_long = max_batch_tokens is not None and longest * (len(current) + 1) > max_batch_tokens
        if current and (too_many or too_long):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return BatchPlan(batches)


def context_limit(model: Any) -> int | None:
    """The model's context length, or None when its config does not say."""
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) if config is not None else None


def pad_batch(seqs: list[list[int]], pad_id: int, side: str = "right"):
    """(input_ids, attention_mask) as LongTensors, padded on `side`."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[r, sl] = torch.tensor(s, dtype=torch.long)
        mask[r, sl] = 1
    return ids, mask


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad token, else its EOS token, else 0 (padding is masked anyway)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0
