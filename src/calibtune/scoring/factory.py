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
    """Option scores of `items` under `model`; nothing is written.

    Parameters
    ----------
    model : LoadedModel or (model, tokenizer)
        A causal language model (`calibtune.load_model`, or a transformers pair).
    items : sequence of MCQItem
        The questions, their options and the index of the correct one.
    scoring : {"letter", "cloze"}, default "letter"
        "letter" reads the K option-letter logits after the prompt; "cloze" the summed
        log-likelihood of each option's text.
    prompt : {"plain", "reference", "chat"}, default "plain"
        The prompt template (`scoring.prompts`).
    cloze_norm : {"none", "token", "char"}, default "none"
        Length normalisation of cloze log-likelihoods.
    batch_size, max_batch_tokens : int
        Items per forward pass, and the token budget of a batch (None: no budget).
    progress : bool, default False
        Show a progress bar.
    fewshot : Fewshot, optional
        From `data.fewshot.draw_fewshot`: each item is scored after its group's exemplars.

    Returns
    -------
    OptionScores
        Logits [n, K], labels, mask and ids, in the order of `items`, with the settings in `meta`.

    Examples
    --------
    A tiny random Llama and a word-level tokenizer, built here (real use:
    ``score(calibtune.load_model("smollm2-135m-instruct"), items)``):

    >>> import torch
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    >>> from calibtune import MCQItem, score
    >>> words = "<unk> <pad> ### Question : Answer . ? A B C the sky is blue green red".split()
    >>> wl = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    >>> wl.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
    ...                                             pre_tokenizers.Punctuation()])
    >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=wl, unk_token="<unk>",
    ...                                     pad_token="<pad>")
    >>> _ = torch.manual_seed(0)
    >>> net = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=16,
    ...     intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
    ...     num_key_value_heads=1, pad_token_id=1)).eval()
    >>> items = [MCQItem("q0", "the sky is ?", ("blue", "green", "red"), 0),
    ...          MCQItem("q1", "the sky is ?", ("red", "blue"), 1)]
    >>> scores = score((net, tokenizer), items)
    >>> scores.logits.shape, scores.mask.sum(1).tolist(), scores.labels.tolist()
    ((2, 3), [3, 2], [0, 1])
    >>> scores.meta["scoring"], scores.meta["prompt"]
    ('letter', 'plain')
    >>> bool(abs(scores.probs().sum(1) - 1).max() < 1e-6)
    True
    """
    inner, tokenizer, name = unpack_model(model)
    scorer = make_scorer(inner, tokenizer, scoring, prompt=prompt, cloze_norm=cloze_norm,
                         batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                         progress=progress, fewshot=fewshot)
    meta = {"model": name, "prompt": prompt, "scoring": scoring,
            "cloze_norm": cloze_norm if scoring == "cloze" else None,
            "num_fewshot": fewshot.k if fewshot else None}
    return scorer.score(list(items), {k: v for k, v in meta.items() if v is not None})
