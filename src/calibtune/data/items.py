"""The multiple-choice item: the unit everything in calibtune scores, trains on and reports."""
from __future__ import annotations

import string
from dataclasses import dataclass, field

LETTERS = string.ascii_uppercase
MIN_OPTIONS, MAX_OPTIONS = 2, 26


@dataclass(frozen=True)
class MCQItem:
    """One question with K options (2 <= K <= 26) and the index of the correct one."""

    id: str
    question: str
    options: tuple[str, ...]
    answer: int
    subject: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def n_options(self) -> int:
        return len(self.options)
