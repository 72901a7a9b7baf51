"""Token-level training examples built with the same prompt builder as the scorer."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from ..data.items import MCQItem
from ..errors import DataError
from ..scoring.prompts import PromptEncoder
from ..option_scores import option_mask
from ..scoring.batching import pad_token_id

log = logging.getLogger(__name__)


class ExampleDataset(torch.utils.data.Dataset):
    """A list of prepared examples; items over the length limit are dropped, not truncated.

    `kept_items[e["item_index"]]` is the item of example e: the E-step scores exactly these.
    """

    examples: list[dict]
    dropped: list[str]
    kept_items: list[MCQItem]

    def _check_kept(self, n_items: int, max_length: int) -> None:
        """Warn about dropped items; fail when none is left."""
        if self.dropped:
            log.warning("dropped %d of %d training items longer than --max-length %d tokens "
                        "(e.g. %s)", len(self.dropped), n_items, max_length, self.dropped[0])
        if not self.examples:
            raise DataError(f"every training item is longer than --max-length {max_length}")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]


class MCQTrainDataset(ExampleDataset):
    """Each example: prompt ids + the gold letter, its answer position and option bookkeeping."""

    def __init__(self, items: list[MCQItem], encoder: PromptEncoder, max_length: int) -> None:
        self.items = items
        self.k_max = max(it.n_options for it in items)
        self.letter_ids = encoder.letter_ids[: self.k_max]
        prompts = encoder.encode_prompts(items)
        self.examples = []
        self.dropped: list[str] = []
        self.kept_items: list[MCQItem] = []
        for item, ids in zip(items, prompts):
            if len(ids) + 1 > max_length:  # dropped, not truncated: a cut prompt loses its options
                self.dropped.append(item.id)
                continue
            self.kept_items.append(item)
            self.examples.append({
                "input_ids": list(ids) + [self.letter_ids[item.answer]],
                "answer_pos": len(ids) - 1,
                "label": item.answer,
                "n_options": item.n_options,
                "item_index": len(self.kept_items) - 1,  # its row in kept_items
            })
        self._check_kept(len(items), max_length)


@dataclass
class MCQCollator:
    """Right-pads a batch and adds the K letter token ids and the option mask."""

    tokenizer: Any
    letter_ids: list[int]

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        pad = pad_token_id(self.tokenizer)
        n, k = len(batch), len(self.letter_ids)
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        lm_labels = torch.full((n, width), -100, dtype=torch.long)
        for r, b in enumerate(batch):
            seq = torch.tensor(b["input_ids"], dtype=torch.long)
            ids[r, : len(seq)] = seq
            mask[r, : len(seq)] = 1
            lm_labels[r, : len(seq)] = seq
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "lm_labels": lm_labels,
            "answer_pos": torch.tensor([b["answer_pos"] for b in batch]),
            "label": torch.tensor([b["label"] for b in batch]),
            "letter_ids": torch.tensor(self.letter_ids).expand(n, k).clone(),
            "option_mask": torch.from_numpy(option_mask([b["n_options"] for b in batch], k)),
            "item_index": torch.tensor([b["item_index"] for b in batch]),
        }
