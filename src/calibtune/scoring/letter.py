"""The letter scorer: the K option-letter logits of every item at its answer position.

Prompts are tokenised once, sorted by length and packed into batches under a token budget so
padding stays small; only the answer position's hidden state meets the output head, and only
the K letter rows of it. Few-shot prompts (`fewshot`) are scored group by group: the exemplar
prefix of a group is computed once and its keys and values serve every item of the group
(`share_prefix`; `prefix.py`).
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np
from tqdm.auto import tqdm

from ..data.items import MCQItem
from ..errors import DataError, ModelError
from ..option_scores import OptionScores
from .base import collect_logits, scores_from
from .batching import context_limit, pad_batch, pad_token_id, plan_batches
from .prompts import PromptEncoder, letter_token_ids

log = logging.getLogger(__name__)


class LetterScorer:
    """Scores items by the logits of the option letters after the prompt."""

    def __init__(self, model: Any, tokenizer: Any, *, prompt: str = "plain", batch_size: int = 16,
                 max_batch_tokens: int | None = 8192, padding_side: str = "right",
                 progress: bool = True, fewshot: Any = None, share_prefix: bool = True) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.prompt, self.batch_size, self.max_batch_tokens = prompt, batch_size, max_batch_tokens
        self.padding_side, self.progress = padding_side, progress
        self.fewshot, self.share_prefix = fewshot, share_prefix

    def items_per_batch(self, k_max: int) -> int:
        """At most this many items share a forward call (before the token budget splits)."""
        return self.batch_size

    def encode(self, items: list[MCQItem]) -> list[list[int]]:
        """Prompt token ids of every item, checked against the model's context length.

        Call it before writing anything: a too-long prompt fails here, naming its row.
        """
        encoder = PromptEncoder(self.tokenizer, self.prompt, max(it.n_options for it in items),
                                self.fewshot)
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
        letters = torch.tensor(letter_ids, dtype=torch.long)
        device = next(self.model.parameters()).device
        pad = pad_token_id(self.tokenizer)
        label = self.progress if isinstance(self.progress, str) else "scoring"
        bar = tqdm(total=len(items), desc=label, unit="item", disable=not self.progress)
        if self.fewshot is None or not self.share_prefix:
            plan = plan_batches([len(e) for e in encoded], self.batch_size, self.max_batch_tokens)
            yield from self._run(plan.batches, items, lambda batch: self._forward(
                [encoded[i] for i in batch], pad, letters, device), bar)
        else:
            from .prefix import PrefixCache, prefix_groups

            for members, n in prefix_groups(items, encoded):
                prefix = PrefixCache(self.model, encoded[members[0]][:n], device) if n else None
                plan = plan_batches([len(encoded[i]) - n for i in members], self.batch_size,
                                    self.max_batch_tokens)
                batches = [[members[j] for j in b] for b in plan.batches]
                yield from self._run(batches, items, lambda batch: self._forward(
                    [encoded[i][n:] for i in batch], pad, letters, device, prefix), bar)
                del prefix  # one group's cache in memory at a time
        bar.close()

    def _run(self, batches: list[list[int]], items: list[MCQItem], forward, bar
             ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield (batch, forward(batch)); a batch out of GPU memory is retried as two halves."""
        import torch

        queue = list(batches)
        while queue:
            batch = queue.pop(0)
            try:
                logits = forward(batch)
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

    def _forward(self, seqs: list[list[int]], pad: int, letters, device,
                 prefix: Any = None) -> np.ndarray:
        """Letter logits of `seqs`, or of their continuations of a cached `prefix`."""
        import torch

        from .forward import answer_logits, last_positions, through_forward

        if prefix is None:
            ids, mask = pad_batch(seqs, pad, self.padding_side)
            with torch.no_grad():
                out = answer_logits(self.model, ids.to(device), mask.to(device),
                                    letters.to(device))
            return out.float().cpu().numpy().astype(np.float64)
        from .prefix import CACHE_FIELD

        ids, mask = (t.to(device) for t in pad_batch(seqs, pad, "right"))
        letters = letters.to(device)
        last = last_positions(mask)

        def at_answer(hidden, head):
            return head(hidden[torch.arange(hidden.shape[0], device=device), last], letters)

        positions = prefix.length + torch.arange(ids.shape[1], device=device)[None, :]
        with torch.no_grad():
            out = through_forward(self.model, at_answer, input_ids=ids,
                                  attention_mask=prefix.attention_mask(mask),
                                  position_ids=positions.expand_as(ids), use_cache=True,
                                  **{CACHE_FIELD: prefix.for_batch(len(seqs))}).value
        return out.float().cpu().numpy().astype(np.float64)

    def score(self, items: list[MCQItem], meta: dict | None = None) -> OptionScores:
        """Score every item; rows come back in the order of `items`."""
        return scores_from(items, collect_logits(self, items), meta)
