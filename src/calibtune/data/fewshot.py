"""Few-shot exemplars: k solved items per group, drawn with a seed from a pool disjoint from
the scored items.

A group is an item's `--group-field` value when the data names one (``meta["group"]``), else its
subject; items with neither form one group. Every item of a group reads the same k exemplars, so
their prompts share a prefix that the scorers compute once (docs/prompts.md). The draw depends
only on the seed, the group's name and the pool's order, never on the other groups, and is
recorded in the run folder (`Fewshot.to_json`, written as ``fewshot.json``).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .items import MCQItem


def group_of(item: MCQItem) -> str:
    """The few-shot group of an item: its --group-field value, else its subject, else ""."""
    return str(item.meta.get("group") or item.subject or "")


@dataclass(frozen=True)
class Fewshot:
    """The exemplars of every group (in prompt order) and where they were drawn from."""

    k: int
    seed: int
    exemplars: dict[str, tuple[MCQItem, ...]]
    source: str = ""

    def for_item(self, item: MCQItem) -> tuple[MCQItem, ...]:
        group = group_of(item)
        if group not in self.exemplars:
            raise ConfigError(f"item {item.id}: no few-shot exemplars drawn for its group "
                              f"{group!r}")
        return self.exemplars[group]

    def to_json(self) -> dict:
        return {"num_fewshot": self.k, "seed": self.seed, "source": self.source,
                "groups": {g: [ex.id for ex in exs] for g, exs in sorted(self.exemplars.items())}}


def _key(item: MCQItem) -> tuple:
    return item.question.strip(), tuple(o.strip() for o in item.options)


def draw_fewshot(scored: Sequence[MCQItem], pool: Sequence[MCQItem], k: int, seed: int,
                 source: str = "") -> Fewshot:
    """k exemplars for each group of `scored`, drawn without replacement from the same group's
    items of `pool` that are not scored (by id, or by identical question and options).

    Raises one `ConfigError` line naming the groups whose pool holds fewer than k candidates.
    """
    if k < 1:
        raise ConfigError(f"--num-fewshot must be at least 1 to draw exemplars, got {k}")
    ids, keys = {it.id for it in scored}, {_key(it) for it in scored}
    candidates: dict[str, list[MCQItem]] = {}
    for it in pool:
        if it.id not in ids and _key(it) not in keys:
            candidates.setdefault(group_of(it), []).append(it)
    groups = sorted({group_of(it) for it in scored})
    short = sorted((len(candidates.get(g, [])), g) for g in groups
                   if len(candidates.get(g, [])) < k)
    if short:
        n, g = short[0]
        raise ConfigError(
            f"--num-fewshot {k}: {len(short)} of {len(groups)} group(s) have fewer than {k} "
            f"exemplar candidates outside the scored items (e.g. {g!r}: {n}){_hint(source)}")
    exemplars = {}
    for g in groups:
        rng = np.random.default_rng([seed, zlib.crc32(g.encode("utf-8"))])
        pick = rng.choice(len(candidates[g]), size=k, replace=False)
        exemplars[g] = tuple(candidates[g][i] for i in pick)
    return Fewshot(k, seed, exemplars, source)


def _hint(source: str) -> str:
    where = f" in {source}" if source else ""
    return (f"{where}; lower --num-fewshot, score fewer items (--limit) or give exemplars with "
            "--fewshot-data FILE")
