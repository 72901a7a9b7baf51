"""Cloze scoring: the log-likelihood of each option's text after the question.

The question is the context (no lettered list); each option's text is a continuation. The
option distribution is the softmax over the summed continuation log-likelihoods, raw or
length-normalised (per token, or per character as lm-eval's `acc_norm`). Tokenisation at the
context/continuation boundary follows lm-eval: encode context + continuation as one string and
take the tokens past the context's own encoding. The K rows of an item are scored in one batch;
the output head is applied only at continuation positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from tqdm.auto import tqdm

from .data.items import MCQItem
from .errors import ConfigError, DataError, ModelError
from .scoring import (collect_logits, context_limit, pad_batch, pad_token_id, plan_batches,
                      scores_from)

CLOZE_NORMS = ("none", "token", "char")


def cloze_context(item: MCQItem) -> str:
    return f"Question: {item.question.strip()}\nAnswer:"


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) split as lm-eval does: trailing context spaces move over."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    return ctx, whole[len(ctx):]


@dataclass(frozen=True)
class ClozeRow:
    """One (item, option) sequence: token ids and how many trailing tokens are the option."""

    ids: list[int]
    n_cont: int
    n_chars: int


class ClozeScorer:
    """Scores items by the (normalised) log-likelihood of each option's text."""

    def __init__(self, model: Any, tokenizer: Any, *, norm: str = "none", batch_size: int = 16,
                 max_batch_tokens: int | None = 8192, progress: bool = True) -> None:
        if norm not in CLOZE_NORMS:
            raise ConfigError(f"--cloze-norm must be one of {', '.join(CLOZE_NORMS)}, got {norm!r}")
        self.model, self.tokenizer, self.norm = model, tokenizer, norm
        self.batch_size, self.max_batch_tokens, self.progress = batch_size, max_batch_tokens, progress

    def encode(self, items: list[MCQItem]) -> list[list[ClozeRow]]:
        """Per item, one row per option; prompts longer than the context fail naming the row."""
        limit = context_limit(self.model)
        out = []
        for it in items:
            rows = []
            for opt in it.options:
                ctx, cont = encode_pair(self.tokenizer, cloze_context(it), " " + opt.strip())
                if not cont:
                    raise DataError(f"item {it.id}: option {opt[:40]!r} encodes to no tokens",
                                    file=it.meta.get("file"), row=it.meta.get("row"),
                                    field="options")
                ids = ctx + cont
                if limit is not None and len(ids) > limit:
                    raise DataError(f"item {it.id}: prompt is {len(ids)} tokens, longer than the "
                                    f"model's context of {limit}", file=it.meta.get("file"),
                                    row=it.meta.get("row"), field="question")
                rows.append(ClozeRow(ids, len(cont), len(opt.strip())))
            out.append(rows)
        return out

    def iter_batches(self, items: list[MCQItem], encoded: list[list[ClozeRow]] | None = None
                     ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield (item indices, option scores [b, K_max]); an item's K rows share a batch."""
        encoded = self.encode(items) if encoded is None else encoded
        k_max = max(it.n_options for it in items)
        lengths = [sum(len(r.ids) for r in rows) // len(rows) for rows in encoded]
        per_item = max(1, self.batch_size // k_max)
        plan = plan_batches(lengths, per_item, self.max_batch_tokens and
                            self.max_batch_tokens // k_max)
        bar = tqdm(total=len(items), desc="scoring (cloze)", unit="item",
                   disable=not self.progress)
        for batch in plan.batches:
            rows = [r for i in batch for r in encoded[i]]
            values = self._loglik(rows)
            out = np.zeros((len(batch), k_max))
            pos = 0
            for b, i in enumerate(batch):
                k = len(encoded[i])
                out[b, :k] = values[pos: pos + k]
                pos += k
            if not np.isfinite(out).all():
                raise ModelError(f"NaN/inf option log-likelihoods for items "
                                 f"{[items[i].id for i in batch][:5]}")
            bar.update(len(batch))
            yield batch, out
        bar.close()

    def _loglik(self, rows: list[ClozeRow]) -> np.ndarray:
        import torch

        from .heads import head_logits, hidden_states

        device = next(self.model.parameters()).device
        ids, mask = pad_batch([r.ids for r in rows], pad_token_id(self.tokenizer), "right")
        ids, mask = ids.to(device), mask.to(device)
        with torch.inference_mode():
            hidden = hidden_states(self.model, ids, mask)
            sums = []
            for r, row in enumerate(rows):
                end = len(row.ids)
                positions = torch.arange(end - row.n_cont - 1, end - 1, device=device)
                logp = torch.log_softmax(head_logits(self.model, hidden[r, positions]).float(), -1)
                targets = ids[r, positions + 1]
                sums.append(float(logp.gather(1, targets[:, None]).sum()))
        sums = np.array(sums, dtype=np.float64)
        if self.norm == "token":
            sums /= np.array([r.n_cont for r in rows])
        elif self.norm == "char":
            sums /= np.maximum(1, np.array([r.n_chars for r in rows]))
        return sums

    def score(self, items: list[MCQItem], meta: dict | None = None):
        return scores_from(items, collect_logits(self, items),
                           {"scoring": "cloze", "cloze_norm": self.norm, **(meta or {})})
