"""Training examples in cloze mode: each item is its context followed by option texts.

CFT and SFT need only the gold option's sequence; RCFT and label smoothing need the
distribution over all K options, so every option's sequence goes into the batch (K rows per
item, each a full context + option sequence: gradients flow through every row).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..scoring.cloze import encode_cloze
from ..data.items import MCQItem
from ..option_scores import option_mask
from ..scoring.batching import pad_batch, pad_token_id
from .dataset import ExampleDataset


class ClozeTrainDataset(ExampleDataset):
    """Per item: the sequences to forward (gold only, or all options) and their bookkeeping."""

    def __init__(self, items: list[MCQItem], tokenizer: Any, max_length: int,
                 all_options: bool) -> None:
        self.items = items
        self.k_max = max(it.n_options for it in items)
        self.examples, self.dropped, self.kept_items = [], [], []
        for item, enc in zip(items, encode_cloze(tokenizer, items, None)):
            if len(enc.context) + max(enc.n_tokens) > max_length:
                self.dropped.append(item.id)
                continue
            options = list(range(item.n_options)) if all_options else [item.answer]
            rows = enc.rows()
            self.kept_items.append(item)
            self.examples.append({
                "input_ids": rows[item.answer],  # the gold sequence (also sets length grouping)
                "rows": [rows[k] for k in options],
                "row_options": options,
                "n_cont": [enc.n_tokens[k] for k in options],
                "n_chars": [enc.n_chars[k] for k in options],
                "label": item.answer,
                "n_options": item.n_options,
                "item_index": len(self.kept_items) - 1,  # its row in kept_items
            })
        self._check_kept(len(items), max_length)


@dataclass
class ClozeCollator:
    """Flattens the items' rows into one right-padded batch, remembering which item and option
    each row is; `lm_labels` marks the tokens of gold rows for the full-sequence loss."""

    tokenizer: Any
    k_max: int

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        rows = [r for b in batch for r in b["rows"]]
        ids, mask = pad_batch(rows, pad_token_id(self.tokenizer), "right")
        row_item = torch.tensor([i for i, b in enumerate(batch) for _ in b["rows"]])
        row_option = torch.tensor([k for b in batch for k in b["row_options"]])
        label = torch.tensor([b["label"] for b in batch])
        gold = row_option == label[row_item]
        lm_labels = torch.where(mask.bool() & gold[:, None], ids, torch.full_like(ids, -100))
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "lm_labels": lm_labels,
            "row_item": row_item,
            "row_option": row_option,
            "n_cont": torch.tensor([n for b in batch for n in b["n_cont"]]),
            "n_chars": torch.tensor([n for b in batch for n in b["n_chars"]]),
            "label": label,
            "option_mask": torch.from_numpy(option_mask([b["n_options"] for b in batch],
                                                        self.k_max)),
            "item_index": torch.tensor([b["item_index"] for b in batch]),
        }
