"""Option scores from a model: prompts, batching, the forward call, letter and cloze scorers."""
from .letter import (SCORINGS, BatchPlan, LetterScorer, collect_logits, context_limit, make_scorer,
                     pad_batch, pad_token_id, plan_batches, scores_from)

__all__ = ["SCORINGS", "BatchPlan", "LetterScorer", "collect_logits", "context_limit", "make_scorer",
           "pad_batch", "pad_token_id", "plan_batches", "scores_from"]
