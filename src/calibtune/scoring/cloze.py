"""Cloze scoring: the log-likelihood of each option's text after the question.

The question is the context (no lettered list); each option's text is a continuation. The
option distribution is the softmax over the summed continuation log-likelihoods, raw or
length-normalised (per token, or per character as lm-eval's `acc_norm`). Tokenisation at the
context/continuation boundary follows lm-eval: encode context + continuation as one string and
take the tokens past the context's own encoding.

The context is computed once per item: its keys and values are cached and shared by the K
continuations (`share_context=True`), so an item costs its context plus K short option texts
instead of K full sequences. The output head is applied only where a continuation token is
predicted.

Few-shot (`fewshot`): each exemplar is its context followed by " " and its gold option's text,
separated by a blank line from the next and from the item's context. Items are scored group by
group; the group's shared prefix is computed once (`prefix.py`) and the item contexts, then
their K continuations, extend copies of its cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.items import MCQItem
from ..errors import ConfigError, DataError, ModelError
from .forward import Head, positions_from_mask, through_forward
from .base import CLOZE_NORMS, collect_logits, scores_from
from .batching import context_limit, pad_batch, pad_token_id, plan_batches
from .prefix import CACHE_FIELD, PrefixCache, prefix_groups
from .prompts import FEWSHOT_SEPARATOR


def cloze_context(item: MCQItem, exemplars: Sequence[MCQItem] = ()) -> str:
    """`Question: …\nAnswer:`, after the answered `exemplars` (few-shot)."""
    shots = [f"{cloze_context(ex)} {ex.options[ex.answer].strip()}" for ex in exemplars]
    return FEWSHOT_SEPARATOR.join([*shots, f"Question: {item.question.strip()}\nAnswer:"])


def encode_continuation(tokenizer: Any, context: str, continuation: str
                        ) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) split as lm-eval does: trailing context spaces move over."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    return ctx, whole[len(ctx):]


@dataclass(frozen=True)
class ClozeItem:
    """One item tokenised for cloze scoring: its context and one continuation per option."""

    context: list[int]
    continuations: list[list[int]]
    n_chars: list[int]

    @property
    def n_tokens(self) -> list[int]:
        return [len(c) for c in self.continuations]

    def rows(self) -> list[list[int]]:
        """The K full sequences context + option (for models scored without a shared cache)."""
        return [self.context + c for c in self.continuations]


def encode_cloze(tokenizer: Any, items: list[MCQItem], limit: int | None,
                 fewshot: Any = None) -> list[ClozeItem]:
    """Tokenise every item (after its group's exemplars with `fewshot`); an empty option or a
    too-long prompt fails naming its row."""
    out = []
    for it in items:
        context, conts = None, []
        text = cloze_context(it, fewshot.for_item(it) if fewshot else ())
        for opt in it.options:
            ctx, cont = encode_continuation(tokenizer, text, " " + opt.strip())
            if not cont:
                raise DataError(f"item {it.id}: option {opt[:40]!r} encodes to no tokens",
                                file=it.meta.get("file"), row=it.meta.get("row"), field="options")
            if context is not None and ctx != context:  # cannot happen with lm-eval's split
                raise ModelError(f"item {it.id}: the tokenizer splits the context differently "
                                 "per option")
            context = ctx
            conts.append(cont)
            if limit is not None and len(ctx) + len(cont) > limit:
                raise DataError(f"item {it.id}: prompt is {len(ctx) + len(cont)} tokens, longer "
                                f"than the model's context of {limit}", file=it.meta.get("file"),
                                row=it.meta.get("row"), field="question")
        out.append(ClozeItem(context, conts, [len(o.strip()) for o in it.options]))
    return out


def normalise(sums: np.ndarray, n_tokens: np.ndarray, n_chars: np.ndarray, norm: str) -> np.ndarray:
    """Raw summed log-likelihoods, or divided by the option's tokens or characters."""
    if norm == "token":
        return sums / np.maximum(1, n_tokens)
    if norm == "char":
        return sums / np.maximum(1, n_chars)
    return sums


def selected_logliks(head: Head, predictors: torch.Tensor, targets: torch.Tensor,
                     select: torch.Tensor) -> torch.Tensor:
    """Per row, the sum of log π(targets[t] | states[t]) over positions where `select` holds.

    `predictors` [R, T, d] are the hidden states that predict `targets` [R, T]; only selected
    positions meet the (full-vocabulary) output head. Differentiable: training uses it too.
    """
    logp = torch.log_softmax(head(predictors[select]).float(), dim=-1)
    token_ll = logp.gather(1, targets[select][:, None]).squeeze(1)
    rows = torch.arange(select.shape[0], device=select.device)[:, None].expand_as(select)
    return token_ll.new_zeros(select.shape[0]).index_add(0, rows[select], token_ll)


def continuation_mask(lengths: torch.Tensor, n_cont: torch.Tensor, width: int) -> torch.Tensor:
    """[R, width-1] True where position t (of right-padded rows) predicts a continuation token."""
    t = torch.arange(width - 1, device=lengths.device)[None, :]
    return (t >= (lengths - n_cont - 1)[:, None]) & (t < (lengths - 1)[:, None])


class ClozeScorer:
    """Scores items by the (normalised) log-likelihood of each option's text."""

    def __init__(self, model: Any, tokenizer: Any, *, norm: str = "none", batch_size: int = 16,
                 max_batch_tokens: int | None = 8192, share_context: bool = True,
                 progress: bool = True, fewshot: Any = None) -> None:
        if norm not in CLOZE_NORMS:
            raise ConfigError(f"--cloze-norm must be one of {', '.join(CLOZE_NORMS)}, got {norm!r}")
        self.model, self.tokenizer, self.norm = model, tokenizer, norm
        self.batch_size, self.max_batch_tokens, self.progress = batch_size, max_batch_tokens, progress
        self.share_context, self.fewshot = share_context, fewshot

    def items_per_batch(self, k_max: int) -> int:
        """At most this many items share a forward call: `batch_size` counts option rows."""
        return max(1, self.batch_size // k_max)

    def encode(self, items: list[MCQItem]) -> list[ClozeItem]:
        return encode_cloze(self.tokenizer, items, context_limit(self.model), self.fewshot)

    def iter_batches(self, items: list[MCQItem], encoded: list[ClozeItem] | None = None
                     ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield (item indices, option scores [b, K_max]); an item's K options share a batch."""
        encoded = self.encode(items) if encoded is None else encoded
        for batch, sums in self.iter_raw(items, encoded):
            out = np.zeros_like(sums)
            for b, i in enumerate(batch):
                k = len(encoded[i].continuations)
                out[b, :k] = normalise(sums[b, :k], np.array(encoded[i].n_tokens),
                                       np.array(encoded[i].n_chars), self.norm)
            yield batch, out

    def iter_raw(self, items: list[MCQItem], encoded: list[ClozeItem]
                 ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield (item indices, raw summed option log-likelihoods [b, K_max])."""
        k_max = max(it.n_options for it in items)
        # Padded cost of an item: its context once plus its K options (K full rows unshared).
        cost = [len(e.context) + sum(e.n_tokens) if self.share_context
                else sum(len(e.context) + n for n in e.n_tokens) for e in encoded]
        rows_per_item = 1 if self.share_context else k_max
        label = self.progress if isinstance(self.progress, str) else "scoring (cloze)"
        bar = tqdm(total=len(items), desc=label, unit="item", disable=not self.progress)
        if self.fewshot is None or not self.share_context:
            units = [(list(range(len(items))), 0)]
        else:  # group by group, each group's shared prefix cached once
            units = list(prefix_groups(items, [e.context for e in encoded]))
        device = next(self.model.parameters()).device
        for members, n in units:
            prefix = PrefixCache(self.model, encoded[members[0]].context[:n], device) \
                if n else None
            plan = plan_batches([(cost[i] - n) // rows_per_item for i in members],
                                self.items_per_batch(k_max),
                                self.max_batch_tokens and self.max_batch_tokens // rows_per_item)
            for planned in plan.batches:
                batch = [members[j] for j in planned]
                group = [encoded[i] for i in batch]
                with torch.no_grad():
                    sums = self._shared(group, k_max, prefix) if self.share_context \
                        else self._unshared(group, k_max)
                if not np.isfinite(sums).all():
                    raise ModelError(f"NaN/inf option log-likelihoods for items "
                                     f"{[items[i].id for i in batch][:5]}")
                bar.update(len(batch))
                yield batch, sums
            del prefix  # one group's cache in memory at a time
        bar.close()

    def _unshared(self, group: list[ClozeItem], k_max: int) -> np.ndarray:
        """K full rows per item, right-padded: the simple path, and the test's second opinion."""
        device = next(self.model.parameters()).device
        rows = [r for e in group for r in e.rows()]
        ids, mask = pad_batch(rows, pad_token_id(self.tokenizer), "right")
        ids, mask = ids.to(device), mask.to(device)
        n_cont = torch.tensor([n for e in group for n in e.n_tokens], device=device)
        select = continuation_mask(mask.sum(1), n_cont, ids.shape[1])
        flat = through_forward(
            self.model, lambda hidden, head: selected_logliks(head, hidden[:, :-1], ids[:, 1:],
                                                              select),
            input_ids=ids, attention_mask=mask).value
        return self._per_item(group, flat.double().cpu().numpy(), k_max)

    def _shared(self, group: list[ClozeItem], k_max: int, prefix: PrefixCache | None = None
                ) -> np.ndarray:
        """Contexts once (left-padded, cached), then all K continuations on the cached keys.
        With a few-shot `prefix`, the contexts' own tokens extend a copy of its cache."""
        device = next(self.model.parameters()).device
        pad = pad_token_id(self.tokenizer)
        n = prefix.length if prefix else 0
        ctx_ids, ctx_mask = pad_batch([e.context[n:] for e in group], pad, "left")
        ctx_ids, ctx_mask = ctx_ids.to(device), ctx_mask.to(device)
        extra = {}
        if prefix:
            extra = {"position_ids": n + positions_from_mask(ctx_mask),
                     CACHE_FIELD: prefix.for_batch(len(group))}
            ctx_mask = prefix.attention_mask(ctx_mask)
        first = through_forward(self.model, lambda hidden, head: hidden[:, -1],
                                input_ids=ctx_ids, attention_mask=ctx_mask, use_cache=True,
                                **extra)
        cache = getattr(first.output, CACHE_FIELD)
        cache.batch_repeat_interleave(k_max)
        last_ctx = first.value.repeat_interleave(k_max, 0)
        # Items with fewer than k_max options get a one-token dummy row, dropped below.
        conts = [(e.continuations + [[pad]] * k_max)[:k_max] for e in group]
        cont_ids, cont_mask = pad_batch([c for cs in conts for c in cs], pad, "right")
        cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)
        ctx_mask_k = ctx_mask.repeat_interleave(k_max, 0)
        ctx_len = ctx_mask_k.sum(1, keepdim=True)
        positions = ctx_len + torch.arange(cont_ids.shape[1], device=device)[None, :]

        def continuation_logliks(hidden: torch.Tensor, head: Head) -> torch.Tensor:
            predictors = torch.cat([last_ctx[:, None], hidden[:, :-1]], 1)
            return selected_logliks(head, predictors, cont_ids, cont_mask.bool())

        flat = through_forward(self.model, continuation_logliks, input_ids=cont_ids,
                               attention_mask=torch.cat([ctx_mask_k, cont_mask], 1),
                               position_ids=positions, use_cache=True,
                               **{CACHE_FIELD: cache}).value
        return self._per_item(group, flat.double().cpu().numpy(), k_max, stride=k_max)

    @staticmethod
    def _per_item(group: list[ClozeItem], flat: np.ndarray, k_max: int,
                  stride: int | None = None) -> np.ndarray:
        """Row-wise sums laid out as [items, K_max] (rows of an item are consecutive)."""
        out = np.zeros((len(group), k_max))
        pos = 0
        for b, e in enumerate(group):
            k = len(e.continuations)
            out[b, :k] = flat[pos: pos + k]
            pos += stride or k
        return out

    def score(self, items: list[MCQItem], meta: dict | None = None):
        return scores_from(items, collect_logits(self, items),
                           {"scoring": "cloze", "cloze_norm": self.norm, **(meta or {})})
