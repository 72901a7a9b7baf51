"""Prompt templates and option-letter tokens, shared by scoring and training.

- `plain` (ours): ``### Question: <question>\nA. …\nB. …\n ### Answer:``, no chat template; the
  letter follows a space.
- `reference`: the reference code's template, exactly (docs/method.md §2):
  ``### Question: Question: <q>\n\nOptions:\nA. …\nB. …\n\nAnswer with only a single letter:\n
  ### Answer:`` with the letter appended without a space. The paper's printed template is not
  available to us, so no style here is called the paper's.
- `chat`: the question and options in the tokenizer's chat template with a generation prompt;
  the letter is the first assistant token.

Few-shot (`exemplars`): in `plain` and `reference` each exemplar is the style's prompt followed
by its answer letter, exemplars and the question separated by a blank line (`FEWSHOT_SEPARATOR`);
in `chat` each exemplar is a user turn (its question) and an assistant turn (its letter) before
the question's user turn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..data.items import LETTERS, MCQItem
from ..defaults import PROMPT_STYLES
from ..errors import ConfigError, ModelError

REFERENCE_INSTRUCTION = "Answer with only a single letter:"
CHAT_INSTRUCTION = "Answer with the letter of the correct option only."
FEWSHOT_SEPARATOR = "\n\n"  # between exemplars, and before the scored question


def format_question(item: MCQItem) -> str:
    """The question followed by its lettered options, one per line."""
    lines = [item.question.strip()]
    lines += [f"{LETTERS[i]}. {opt.strip()}" for i, opt in enumerate(item.options)]
    return "\n".join(lines)


def render_prompt(item: MCQItem, style: str, tokenizer: Any = None,
                  exemplars: Sequence[MCQItem] = ()) -> str:
    """The text the model reads before it answers, after `exemplars` answered (few-shot)."""
    if exemplars and style != "chat":
        shots = [render_prompt(ex, style) + letter_prefix(style) + LETTERS[ex.answer]
                 for ex in exemplars]
        return FEWSHOT_SEPARATOR.join([*shots, render_prompt(item, style)])
    if style == "plain":
        return f"### Question: {format_question(item)}\n ### Answer:"
    if style == "reference":
        options = "\n".join(f"{LETTERS[i]}. {opt.strip()}" for i, opt in enumerate(item.options))
        return (f"### Question: Question: {item.question.strip()}\n\nOptions:\n{options}\n\n"
                f"{REFERENCE_INSTRUCTION}\n ### Answer:")
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ModelError("prompt style 'chat' needs a tokenizer with a chat template; "
                             "this one has none: use --prompt plain")
        messages = []
        for ex in exemplars:
            messages += [chat_turn(ex), {"role": "assistant", "content": LETTERS[ex.answer]}]
        messages.append(chat_turn(item))
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ConfigError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")


def chat_turn(item: MCQItem) -> dict:
    """The user turn that asks `item` in the chat style."""
    return {"role": "user", "content": f"{format_question(item)}\n\n{CHAT_INSTRUCTION}"}


def letter_prefix(style: str) -> str:
    """What precedes the letter in the model's answer: a space after the plain template's
    'Answer:', none after the reference template's (as its code appends it) or in chat."""
    return " " if style == "plain" else ""


def letter_token_ids(tokenizer: Any, n_options: int, style: str) -> list[int]:
    """Token id of each option letter as the model would emit it, checked to be one token each."""
    ids = []
    for letter in LETTERS[:n_options]:
        text = letter_prefix(style) + letter
        toks = tokenizer.encode(text, add_special_tokens=False)
        if len(toks) != 1:
            raise ModelError(f"option letter {text!r} is {len(toks)} tokens {toks} for this "
                             f"tokenizer with prompt style {style!r}; letter scoring needs one "
                             "token per letter (try the other --prompt style)")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise ModelError(f"option letters map to repeated token ids {ids}")
    return ids


@dataclass
class PromptEncoder:
    """Turns items into token ids for one tokenizer and style; the one place prompts are built."""

    tokenizer: Any
    style: str = "plain"
    max_options: int = 4
    fewshot: Any = None  # a data.fewshot.Fewshot: each item's prompt starts with its exemplars

    def __post_init__(self) -> None:
        if self.style not in PROMPT_STYLES:
            raise ConfigError(f"unknown prompt style {self.style!r}; choose one of "
                              f"{', '.join(PROMPT_STYLES)}")
        self.letter_ids = letter_token_ids(self.tokenizer, self.max_options, self.style)

    def encode_prompts(self, items: list[MCQItem]) -> list[list[int]]:
        """Token ids of each item's prompt (the answer letter comes right after the last one)."""
        texts = [render_prompt(it, self.style, self.tokenizer,
                               self.fewshot.for_item(it) if self.fewshot else ()) for it in items]
        # the chat template already holds its special tokens; plain prompts get the BOS
        # token where the tokenizer adds one by default
        return self.tokenizer(texts, add_special_tokens=self.style != "chat")["input_ids"]
