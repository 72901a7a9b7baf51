"""The E-step of RCFT as a TrainerCallback: re-estimate bin accuracies from the current model.

Runs at the start of training and then at every epoch (or every N steps). All ranks score a
shard of the training set and gather the logits, so every rank holds the same bin accuracies
and targets; under FSDP / ZeRO-3 the shards are dealt so that every rank makes the same number
of forward calls. The state is saved with each checkpoint so a resumed run continues
identically.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from transformers import TrainerCallback

from ..data.items import MCQItem
from ..metrics.binning import calibration_error_from_table
from .parallel import lockstep_chunks, rank_and_world, sharding_engine
from .targets import EStepResult, estep_targets, format_bin_table

log = logging.getLogger(__name__)
STATE_FILE = "calibtune_estep.npz"


class RegulariserState:
    """Targets [n_train, K] of the current M-step, and when the E-step last ran."""

    def __init__(self) -> None:
        self.targets: torch.Tensor | None = None
        self.last_estep_step = -1
        self.last_estep_epoch = -1
        self.history: list[dict] = []

    def update(self, result: EStepResult, step: int, epoch: int) -> None:
        self.targets = torch.tensor(result.targets, dtype=torch.float32)
        self.last_estep_step, self.last_estep_epoch = step, epoch
        self.history.append({"step": step, "epoch": epoch, "bins": result.table.to_dict()})

    def save(self, folder: Path) -> None:
        np.savez(folder / STATE_FILE, targets=self.targets.numpy(),
                 steps=np.array([self.last_estep_step, self.last_estep_epoch]))

    def load(self, folder: Path) -> bool:
        path = Path(folder) / STATE_FILE
        if not path.exists():
            return False
        with np.load(path, allow_pickle=False) as z:
            self.targets = torch.tensor(z["targets"])
            self.last_estep_step, self.last_estep_epoch = (int(v) for v in z["steps"])
        return True


def gather_logits(local_index: list[int], local_logits: np.ndarray, n: int, k: int) -> np.ndarray:
    """Every rank's shard of option logits assembled into the full [n, K] array on every rank."""
    full = np.zeros((n, k))
    full[local_index] = local_logits
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        shards: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, (local_index, local_logits))
        for index, values in shards:
            full[index] = values
    return full


class EStepCallback(TrainerCallback):
    def __init__(self, state: RegulariserState, items: list[MCQItem],
                 scorer_for: Callable[[Any], Any], n_bins: int, steps_per_epoch: int,
                 every_steps: int | None = None, resume_from: str | None = None) -> None:
        """`scorer_for(model)` gives the scorer training uses (letter or cloze, same settings)."""
        self.state, self.items, self.scorer_for = state, items, scorer_for
        self.n_bins, self.every_steps = n_bins, every_steps
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.resume_from = resume_from
        self.seconds = 0.0

    def run_estep(self, model: Any, step: int) -> None:
        import time

        start = time.perf_counter()
        was_training = model.training
        model.eval()
        k = max(it.n_options for it in self.items)
        index, local = self.score_shard(self.scorer_for(model), k)
        if was_training:
            model.train()
        logits = gather_logits(index, local, len(self.items), k)
        labels = np.array([it.answer for it in self.items])
        mask = np.arange(k)[None, :] < np.array([it.n_options for it in self.items])[:, None]
        result = estep_targets(logits, labels, mask, self.n_bins)
        self.state.update(result, step, step // self.steps_per_epoch)
        self.seconds += time.perf_counter() - start
        acc = float((logits.argmax(1) == labels).mean())
        ece = calibration_error_from_table(result.table, "l1")
        log.info("E-step at step %d (train accuracy %.3f, train ECE %.3f):\n%s", step, acc, ece,
                 format_bin_table(result.table))

    def score_shard(self, scorer: Any, k: int) -> tuple[list[int], np.ndarray]:
        """(item indices, option logits [n, K]) this rank scores. Unsharded ranks take every
        world-th item in one call; sharded ones (FSDP, ZeRO-3) one batch-sized chunk per call,
        the same number of calls on every rank."""
        rank, world = rank_and_world()
        if sharding_engine() is None or world == 1:
            chunks = [list(range(rank, len(self.items), world))]
        else:
            chunks = lockstep_chunks(len(self.items), scorer.items_per_batch(k), rank, world)
        index = [i for chunk in chunks for i in chunk]
        local = np.zeros((len(index), k))
        row = 0
        for chunk in chunks:
            if chunk:
                shard = scorer.score([self.items[i] for i in chunk]).logits
                local[row: row + len(chunk), : shard.shape[1]] = shard
            row += len(chunk)
        return index, local

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.resume_from and self.state.load(Path(self.resume_from)):
            log.info("restored E-step targets from %s", self.resume_from)
            return
        self.run_estep(model, state.global_step)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if self.every_steps is not None:
            return
        epoch = state.global_step // self.steps_per_epoch
        if epoch > self.state.last_estep_epoch:
            self.run_estep(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_steps and state.global_step % self.every_steps == 0 \
                and state.global_step != self.state.last_estep_step:
            self.run_estep(model, state.global_step)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.exists() and self.state.targets is not None:
            self.state.save(folder)


def steps_per_epoch(n_items: int, batch_size: int, world_size: int, grad_accum: int) -> int:
    return math.ceil(math.ceil(n_items / (batch_size * world_size)) / grad_accum)
