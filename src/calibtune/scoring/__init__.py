"""Option scores from a model: prompts, batching, one forward call, the letter and cloze scorers.

`score(model, items)` is the one-call entry; `make_scorer` gives a scorer to drive batch by batch.
Importing this package does not import torch: `forward` and `cloze` load it when used.
"""
from typing import Any

from .base import CLOZE_NORMS, SCORINGS, Scorer, collect_logits, scores_from
from .batching import BatchPlan, context_limit, pad_batch, pad_token_id, plan_batches
from .factory import make_scorer, score
from .letter import LetterScorer

__all__ = ["CLOZE_NORMS", "SCORINGS", "BatchPlan", "ClozeScorer", "LetterScorer", "Scorer",
           "collect_logits", "context_limit", "make_scorer", "pad_batch", "pad_token_id",
           "plan_batches", "score", "scores_from"]


def __getattr__(name: str) -> Any:
    if name == "ClozeScorer":  # torch and transformers load with it
        from .cloze import ClozeScorer

        return ClozeScorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
