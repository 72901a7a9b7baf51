"""Few-shot prefix caching: a group's shared prompt start computed once, its keys and values
reused by every item of the group (and by the K options in cloze mode).

The tokens scored are always those of the whole prompt, tokenised as one string (what a
harness feeds the model). The cached prefix is the longest run of tokens that every item of
the group starts with, so a tokenizer that merges across the exemplars/question boundary
(byte-level BPE turns a final "\\n\\n" into one token, but "\\n\\n###" into two) costs a token
or two of caching, never a different prompt. Each item keeps at least one token of its own,
whose hidden state is the one read. One group's cache is alive at a time; a batch gets a copy
of it repeated to the batch's size, so the group's cache is never changed by a batch.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator, Sequence

import torch
from transformers.modeling_outputs import BaseModelOutputWithPast

from ..data.fewshot import group_of
from ..data.items import MCQItem
from .forward import through_forward

# transformers 5.x renamed `past_key_values` to `cache` (in the outputs and as the argument).
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ \
    else "past_key_values"


def item_groups_in_order(items: Sequence[MCQItem]) -> list[list[int]]:
    """Indices of `items` by few-shot group, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(group_of(it), []).append(i)
    return list(groups.values())


def shared_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one token of its own."""
    first = seqs[0]
    n = min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        m = 0
        while m < n and s[m] == first[m]:
            m += 1
        n = m
    return max(0, n)


class PrefixCache:
    """The keys and values of one prefix (batch 1), and copies of it for batches."""

    def __init__(self, model: Any, prefix: Sequence[int], device: Any) -> None:
        self.length = len(prefix)
        ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
        with torch.no_grad():
            out = through_forward(model, lambda hidden, head: None, input_ids=ids,
                                  attention_mask=torch.ones_like(ids), use_cache=True)
        self.cache = getattr(out.output, CACHE_FIELD)

    def for_batch(self, rows: int) -> Any:
        """A new cache holding the prefix `rows` times; the prefix's own cache stays as it is
        (the model extends the copy with the batch's tokens)."""
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(rows)
        return cache

    def attention_mask(self, suffix_mask: torch.Tensor) -> torch.Tensor:
        """[B, prefix + suffix] mask: the prefix is real in every row."""
        ones = suffix_mask.new_ones((suffix_mask.shape[0], self.length))
        return torch.cat([ones, suffix_mask], 1)


def prefix_groups(items: Sequence[MCQItem], seqs: Sequence[Sequence[int]]
                  ) -> Iterator[tuple[list[int], int]]:
    """(item indices, shared prefix length) of each few-shot group with two items or more, in
    order; then the items alone in their group, as one unit scored whole (prefix length 0):
    a prefix cache saves nothing for one item, and whole prompts batch together."""
    alone = []
    for members in item_groups_in_order(items):
        if len(members) == 1:
            alone += members
        else:
            yield members, shared_prefix_length([seqs[i] for i in members])
    if alone:
        yield alone, 0
