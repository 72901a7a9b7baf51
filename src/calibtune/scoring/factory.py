"""Pick a scorer by name, and `score`: option scores of items in one call, nothing written."""
from __future__ import annotations

from typing import Any, Sequence

from ..data.items import MCQItem
from ..errors import ConfigError
from ..option_scores import OptionScores
from .base import SCORINGS, Scorer, unpack_model


def make_scorer(model: Any, tokenizer: Any, scoring: str = "letter", *, prompt: str = "plain",
                cloze_norm: str = "none", batch_size: int = 16,
                max_batch_tokens: int | None = 8192, progress: bool | str = True,
                fewshot: Any = None, share_prefix: bool = True) -> Scorer:
    """The letter or cloze scorer (both yield option scores per batch and `score` items);
    `progress`: a bar per call, labelled with the string when one is given.

    `fewshot` (a `data.fewshot.Fewshot`) puts each item's group exemplars before it; with
    `share_prefix` a group's exemplar prefix is computed once and cached."""
    if scoring == "letter":
        from .letter import LetterScorer

        return LetterScorer(model, tokenizer, prompt=prompt, batch_size=batch_size,
                            max_batch_tokens=max_batch_tokens, progress=progress,
                            fewshot=fewshot, share_prefix=share_prefix)
    if scoring == "cloze":
        from .cloze import ClozeScorer  # imports torch and transformers: only when asked

        return ClozeScorer(model, tokenizer, norm=cloze_norm, batch_size=batch_size,
                           max_batch_tokens=max_batch_tokens, progress=progress,
                           fewshot=fewshot, share_context=share_prefix)
    raise ConfigError(f"--scoring must be {' or '.join(SCORINGS)}, got {scoring!r}")


def score(model: Any, items: Sequence[MCQItem], *, scoring: str = "letter", prompt: str = "plain",
          cloze_norm: str = "none", batch_size: int = 16, max_batch_tokens: int | None = 8192,
          progress: bool = False, fewshot: Any = None) -> OptionScores:
    """Option scores of `items` under `model` (a `LoadedModel` or a (model, tokenizer) pair).

    `scoring="letter"` reads the K option-letter logits after the prompt; `"cloze"` the summed
    log-likelihood of each option's text (`cloze_norm` none | token | char). Returns
    `OptionScores` in the order of `items`; nothing is written. `fewshot` (from
    `data.fewshot.draw_fewshot`) scores each item after its group's exemplars.
    """
    inner, tokenizer, name = unpack_model(model)
    scorer = make_scorer(inner, tokenizer, scoring, prompt=prompt, cloze_norm=cloze_norm,
                         batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                         progress=progress, fewshot=fewshot)
    meta = {"model": name, "prompt": prompt, "scoring": scoring,
            "cloze_norm": cloze_norm if scoring == "cloze" else None,
            "num_fewshot": fewshot.k if fewshot else None}
    return scorer.score(list(items), {k: v for k, v in meta.items() if v is not None})
