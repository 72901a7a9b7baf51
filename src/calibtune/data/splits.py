"""Deterministic, seeded ways to cut a list of items: samples, random splits, subject splits."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .items import MCQItem


def sample_items(items: list[MCQItem], n: int | None, seed: int = 0) -> list[MCQItem]:
    """A seeded random sample of `n` items in their original order (all items if n is None)."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        raise ConfigError(f"limit must be positive, got {n}")
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[i] for i in keep]


def random_split(items: list[MCQItem], fraction: float, seed: int = 0
                 ) -> tuple[list[MCQItem], list[MCQItem]]:
    """Split into (first, rest) with round(fraction·n) items in `first`, chosen by seed."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction must be in (0, 1), got {fraction}")
    n_first = int(round(fraction * len(items)))
    if n_first == 0 or n_first == len(items):
        raise ConfigError(f"fraction {fraction} of {len(items)} items leaves one side empty")
    perm = np.random.default_rng(seed).permutation(len(items))
    first = set(perm[:n_first].tolist())
    return ([it for i, it in enumerate(items) if i in first],
            [it for i, it in enumerate(items) if i not in first])


def subject_split(items: list[MCQItem], train_fraction: float = 0.25, seed: int = 0
                  ) -> tuple[list[MCQItem], list[MCQItem]]:
    """Split by subject so no subject appears on both sides (train, test).

    Subjects are shuffled with `seed`; whole subjects go to train until it holds at least
    `train_fraction` of the items.
    """
    subjects = sorted({it.subject or "" for it in items})
    if len(subjects) < 2:
        raise ConfigError("a subject split needs items from at least two subjects")
    order = [subjects[i] for i in np.random.default_rng(seed).permutation(len(subjects))]
    counts = {s: 0 for s in subjects}
    for it in items:
        counts[it.subject or ""] += 1
    train_subjects: set[str] = set()
    total = 0
    for s in order[:-1]:
        if total >= train_fraction * len(items):
            break
        train_subjects.add(s)
        total += counts[s]
    return ([it for it in items if (it.subject or "") in train_subjects],
            [it for it in items if (it.subject or "") not in train_subjects])
