"""What every scorer does, and how its batches become `OptionScores`.

A scorer encodes items (failing on a bad one before anything is written), yields option scores
batch by batch in any order, and scores a list of items. The letter and cloze scorers both
follow this protocol, so chunked evaluation, the E-step and the epoch monitor take either.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from ..data.items import MCQItem
from ..errors import DataError
from ..defaults import CLOZE_NORMS, SCORINGS  # noqa: F401 - their home; re-exported here
from ..option_scores import OptionScores, option_mask


class Scorer(Protocol):
    """Option scores [n, K_max] of items: letter logits or cloze log-likelihoods."""

    def items_per_batch(self, k_max: int) -> int:
        """At most this many items share a forward call."""

    def encode(self, items: list[MCQItem]) -> list:
        """Tokenised items, checked against the model (a bad item raises `DataError`)."""

    def iter_batches(self, items: list[MCQItem], encoded: list | None = None
                     ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield (item indices, option scores [b, K_max]) batch by batch."""

    def score(self, items: list[MCQItem], meta: dict | None = None) -> OptionScores:
        """Every item's option scores, in the order of `items`."""


def collect_logits(scorer: Scorer, items: Sequence[MCQItem], encoded: list | None = None
                   ) -> np.ndarray:
    """All option scores [n, K_max] of `items`, in item order, from any scorer's iter_batches."""
    if not items:
        raise DataError("no items to score")
    logits = np.zeros((len(items), max(it.n_options for it in items)))
    for batch, block in scorer.iter_batches(list(items), encoded):
        logits[batch, : block.shape[1]] = block
    return logits


def scores_from(items: Sequence[MCQItem], logits: np.ndarray, meta: dict | None = None
                ) -> OptionScores:
    """Wrap raw option scores of `items` into `OptionScores` (mask from each item's K)."""
    k_max = logits.shape[1]
    mask = option_mask([it.n_options for it in items], k_max)
    return OptionScores(logits=np.where(mask, logits, 0.0),
                        labels=np.array([it.answer for it in items]), mask=mask,
                        ids=np.array([it.id for it in items]), meta=dict(meta or {}),
                        groups=item_groups(items))


def item_groups(items: Sequence[MCQItem]) -> np.ndarray | None:
    """Each item's subject (the group of the per-group table), or None when none has one."""
    subjects = [it.subject for it in items]
    return None if all(s is None for s in subjects) else np.array([s or "" for s in subjects])


def unpack_model(model: Any) -> tuple[Any, Any, str | None]:
    """(model, tokenizer, name) of a `LoadedModel` or a (model, tokenizer) pair."""
    if hasattr(model, "tokenizer") and hasattr(model, "model"):
        return model.model, model.tokenizer, getattr(model, "name", None)
    try:
        inner, tokenizer = model
    except (TypeError, ValueError):
        raise TypeError("expected a LoadedModel (calibtune.load_model) or a (model, tokenizer) "
                        f"pair, got {type(model).__name__}") from None
    return inner, tokenizer, None
