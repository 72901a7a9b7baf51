"""The letter scorer: the K option-letter logits of every item at its answer position.

Prompts are tokenised once, sorted by length and packed into batches under a token budget so
padding stays small; only the answer position's hidden state meets the output head, and only
the K letter rows of it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from tqdm.auto import tqdm

from ..data.items import MCQItem
from ..errors import ConfigError, DataError, ModelError
from .prompts import PromptEncoder, letter_token_ids
from ..scores import OptionScores, option_mask

log = logging.getLogger(__name__)


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
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


class LetterScorer:
    """Scores items by the logits of the option letters after the prompt."""

    def __init__(self, model: Any, tokenizer: Any, *, prompt: str = "plain", batch_size: int = 16,
                 max_batch_tokens: int | None = 8192, padding_side: str = "right",
                 progress: bool = True) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.prompt, self.batch_size, self.max_batch_tokens = prompt, batch_size, max_batch_tokens
        self.padding_side, self.progress = padding_side, progress

    def items_per_batch(self, k_max: int) -> int:
        """At most this many items share a forward call (before the token budget splits)."""
        return self.batch_size

    def encode(self, items: list[MCQItem]) -> list[list[int]]:
        """Prompt token ids of every item, checked against the model's context length.

        Call it before writing anything: a too-long prompt fails here, naming its row.
        """
        encoder = PromptEncoder(self.tokenizer, self.prompt, max(it.n_options for it in items))
        encoded = encoder.encode_prompts(items)
        limit = context_limit(self.model)
        for it, ids in zip(items, encoded):
            if limit is not None and len(ids) + 1 > limit:
                raise DataError(f"item {it.id}: prompt is {len(ids)} tokens, longer than the "
                                f"model's context of {limit}", file=it.meta.get("file"),
                                row=it.meta.get("row"), field="question")
        return encoded

    def iter_batches(self, items: list[MCQItem], encoded: list[list[int]] | None = None
                     ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield (item indices, option logits [b, K_max]) batch by batch, longest first."""
        import torch

        k_max = max(it.n_options for it in items)
        encoded = self.encode(items) if encoded is None else encoded
        letter_ids = letter_token_ids(self.tokenizer, k_max, self.prompt)
        plan = plan_batches([len(e) for e in encoded], self.batch_size, self.max_batch_tokens)
        letters = torch.tensor(letter_ids, dtype=torch.long)
        device = next(self.model.parameters()).device
        pad = pad_token_id(self.tokenizer)
        bar = tqdm(total=len(items), desc="scoring", unit="item", disable=not self.progress)
        queue = list(plan.batches)
        while queue:
            batch = queue.pop(0)
            try:
                logits = self._forward([encoded[i] for i in batch], pad, letters, device)
            except torch.cuda.OutOfMemoryError:
                if len(batch) == 1:
                    raise ModelError("out of GPU memory on a single item; use a smaller model, "
                                     "--dtype bfloat16 or a shorter prompt") from None
                torch.cuda.empty_cache()
                half = len(batch) // 2
                log.warning("out of GPU memory at batch %d; retrying as two of %d", len(batch), half)
                queue[:0] = [batch[:half], batch[half:]]
                continue
            bad = ~np.isfinite(logits).all(axis=1)
            if bad.any():
                ids = [items[batch[i]].id for i in np.flatnonzero(bad)[:5]]
                raise ModelError(f"the model returned NaN/inf option logits for items {ids}; "
                                 "check the weights and dtype (float16 overflows easily)")
            bar.update(len(batch))
            yield batch, logits
        bar.close()

    def _forward(self, seqs: list[list[int]], pad: int, letters, device) -> np.ndarray:
        import torch

        from .forward import answer_logits

        ids, mask = pad_batch(seqs, pad, self.padding_side)
        with torch.no_grad():
            out = answer_logits(self.model, ids.to(device), mask.to(device), letters.to(device))
        return out.float().cpu().numpy().astype(np.float64)

    def score(self, items: list[MCQItem], meta: dict | None = None) -> OptionScores:
        """Score every item; rows come back in the order of `items`."""
        return scores_from(items, collect_logits(self, items), meta)


SCORINGS = ("letter", "cloze")


def make_scorer(model: Any, tokenizer: Any, scoring: str = "letter", *, prompt: str = "plain",
                cloze_norm: str = "none", batch_size: int = 16,
                max_batch_tokens: int | None = 8192, progress: bool = True) -> Any:
    """The letter or cloze scorer (both yield option scores per batch and `score` items)."""
    if scoring == "letter":
        return LetterScorer(model, tokenizer, prompt=prompt, batch_size=batch_size,
                            max_batch_tokens=max_batch_tokens, progress=progress)
    if scoring == "cloze":
        from .cloze import ClozeScorer

        return ClozeScorer(model, tokenizer, norm=cloze_norm, batch_size=batch_size,
                           max_batch_tokens=max_batch_tokens, progress=progress)
    raise ConfigError(f"--scoring must be {' or '.join(SCORINGS)}, got {scoring!r}")


def collect_logits(scorer: Any, items: list[MCQItem], encoded: list | None = None) -> np.ndarray:
    """All option scores [n, K_max] of `items`, in item order, from any scorer's iter_batches."""
    if not items:
        raise DataError("no items to score")
    logits = np.zeros((len(items), max(it.n_options for it in items)))
    for batch, block in scorer.iter_batches(items, encoded):
        logits[batch, : block.shape[1]] = block
    return logits


def scores_from(items: list[MCQItem], logits: np.ndarray, meta: dict | None = None) -> OptionScores:
    """Wrap raw option logits of `items` into `OptionScores` (mask from each item's K)."""
    k_max = logits.shape[1]
    mask = option_mask([it.n_options for it in items], k_max)
    return OptionScores(logits=np.where(mask, logits, 0.0),
                        labels=np.array([it.answer for it in items]), mask=mask,
                        ids=np.array([it.id for it in items]), meta=dict(meta or {}))
