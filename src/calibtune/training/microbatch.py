"""A training batch in micro-batches under a token budget, with the same gradient.

A step's activation memory grows with its padded tokens, and length-grouped batches still carry
much padding (a batch of `configs/cpu-demo.yaml`: 2,672 padded tokens for 964 real ones;
docs/performance.md, Training memory). `split_batch` cuts a collated batch into
micro-batches of whole items, each at most `max_tokens` padded tokens once its padding is cut to
its own longest row (at least one item), and gives each the share of the batch's loss terms it
carries: the SFT term is a mean over items, or over label tokens (`--sft-loss full`,
token-normalised), the ECE term a mean over items. The Trainer runs one forward and backward
per micro-batch with the terms scaled by these shares, so the gradients add up to the whole
batch's (to float rounding); cutting the padding also saves its compute.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import TrainConfig

Inputs = dict[str, torch.Tensor]
# Keys with one entry per sequence row (cloze: one row per option); the others are per item.
ROW_KEYS = frozenset({"input_ids", "attention_mask", "lm_labels", "row_item", "row_option",
                      "n_cont", "n_chars"})
WIDE_KEYS = frozenset({"input_ids", "attention_mask", "lm_labels"})  # [rows, padded width]


@dataclass
class MicroBatch:
    inputs: Inputs
    sft_share: float
    ece_share: float


def sft_units(inputs: Inputs, cfg: TrainConfig) -> int:
    """What the SFT term averages over: label tokens (of the gold rows in cloze mode) for the
    token-normalised full-sequence loss, else items."""
    if cfg.sft_loss == "full" and cfg.sft_normalise == "token":
        labels = inputs["lm_labels"]
        if "row_item" in inputs:
            labels = labels[inputs["row_option"] == inputs["label"][inputs["row_item"]]]
        return int((labels[:, 1:] != -100).sum())
    return int(inputs["label"].shape[0])


def split_batch(inputs: Inputs, max_tokens: int, cfg: TrainConfig) -> list[MicroBatch]:
    """Micro-batches of whole items, each at most `max_tokens` padded tokens once cut to its own
    longest row (rows are right-padded, so the cut drops padding only). Items go longest
    first, so items of similar length share a micro-batch and little padding is left."""
    n_items = int(inputs["label"].shape[0])
    device = inputs["label"].device
    row_item = inputs.get("row_item", torch.arange(n_items, device=device))
    lengths = inputs["attention_mask"].sum(1)
    rows_of = [torch.nonzero(row_item == i).flatten() for i in range(n_items)]
    longest = [int(lengths[r].max()) for r in rows_of]
    groups: list[list[int]] = [[]]
    rows = 0
    for i in sorted(range(n_items), key=lambda i: (-longest[i], i)):
        width = longest[groups[-1][0]] if groups[-1] else longest[i]
        if groups[-1] and (rows + len(rows_of[i])) * width > max_tokens:
            groups.append([])
            rows = 0
        groups[-1].append(i)
        rows += len(rows_of[i])
    if len(groups) == 1:
        return [MicroBatch(inputs, 1.0, 1.0)]
    total_sft = sft_units(inputs, cfg)
    parts = []
    for group in groups:
        items = torch.tensor(group, device=device)
        part_rows = torch.cat([rows_of[i] for i in group])
        part = {k: v[part_rows] if k in ROW_KEYS else v[items] for k, v in inputs.items()}
        width = longest[group[0]]
        for key in WIDE_KEYS & part.keys():
            part[key] = part[key][:, :width]
        if "row_item" in inputs:  # the rows' item numbers, within the micro-batch
            local = torch.full((n_items,), -1, dtype=row_item.dtype, device=device)
            local[items] = torch.arange(len(group), dtype=row_item.dtype, device=device)
            part["row_item"] = local[part["row_item"]]
        sft = sft_units(part, cfg) / total_sft if total_sft else len(group) / n_items
        parts.append(MicroBatch(part, sft, len(group) / n_items))
    return parts
