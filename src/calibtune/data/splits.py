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


def split_indices(n: int, fraction: float, seed: int = 0, name: str = "fraction"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted (first, rest) row indices, round(fraction·n) of them first, chosen by a
    seeded permutation: the one seeded split behind `random_split` and posthoc's fit/report."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{name} must be in (0, 1), got {fraction}")
    n_first = int(round(fraction * n))
    if n_first < 1 or n_first >= n:
        raise ConfigError(f"{name} {fraction} of {n} items leaves a side empty")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_first]), np.sort(perm[n_first:])


def random_split(items: list[MCQItem], fraction: float, seed: int = 0
                 ) -> tuple[list[MCQItem], list[MCQItem]]:
    """Split into (first, rest) with round(fraction·n) items in `first`, chosen by seed."""
    first, rest = split_indices(len(items), fraction, seed)
    return [items[i] for i in first], [items[i] for i in rest]


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
