"""The E-step of RCFT as a TrainerCallback: re-estimate bin accuracies from the current model.

Runs at the start of training and then at every epoch (or every N steps). All ranks score a
shard of the training set and gather the logits, so every rank holds the same bin accuracies
and targets; under FSDP / ZeRO-3 the shards are dealt so that every rank makes the same number
of forward calls. The state is saved with each checkpoint (by `CalibTrainer`, before the seal)
so a resumed run continues identically. Non-finite option scores stop training (`faults`).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from transformers import TrainerCallback

from ..data.items import MCQItem
from ..errors import ModelError, TrainingError
from ..integrity import atomic_write, atomic_write_json
from ..metrics.binning import calibration_error_from_table
from ..metrics.proper import accuracy
from ..metrics.validation import softmax
from ..option_scores import option_mask
from .distributed import lockstep_chunks, rank_and_world, sharding_engine
from .faults import current_lr, fault_message
from .targets import EStepResult, estep_targets, format_bin_table, live_targets

log = logging.getLogger(__name__)
STATE_FILE = "calibtune_estep.npz"
HISTORY_FILE = "calibtune_estep_history.json"


class RegulariserState:
    """What the M-step reads from the last E-step: bin edges, accuracies â_k and counts N_k
    (live targets), the frozen per-item targets and bins, and when the E-step last ran."""

    def __init__(self) -> None:
        self.targets: torch.Tensor | None = None
        self.bin_of_item: np.ndarray | None = None
        self.edges: np.ndarray | None = None
        self.bin_accuracy: np.ndarray | None = None
        self.bin_count: np.ndarray | None = None
        self.bin_count_raw: np.ndarray | None = None
        self.last_estep_step = -1
        self.last_estep_epoch = -1
        self.history: list[dict] = []

    def update(self, result: EStepResult, step: int, epoch: int, extra: dict | None = None
               ) -> None:
        self.targets = torch.tensor(result.targets, dtype=torch.float32)
        self.bin_of_item = result.bin_of_item
        self.edges = result.table.edges
        self.bin_accuracy, self.bin_count = result.bin_accuracy, result.bin_count
        self.bin_count_raw = result.table.count
        self.last_estep_step, self.last_estep_epoch = step, epoch
        self.history.append({"step": step, "epoch": epoch, "bins": result.table.to_dict(),
                             **(extra or {})})

    def batch_targets(self, option_scores: torch.Tensor, option_mask: torch.Tensor,
                      item_index: torch.Tensor, mode: str, reduction: str
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(targets [B, K], per-item weights [B] or None) for one M-step batch.

        `live` re-bins every item by its current confidence (targets are constants: no gradient
        through them); `frozen` reads the last E-step's. `bin` reduction weights each item by
        n / (M' · N_k) — every non-empty bin the same total weight, as the reference's 1/N_k,
        scaled so that the expected batch term is the mean over bins of their mean error.
        """
        idx = item_index.cpu().numpy()
        if mode == "live":
            z = option_scores.detach().float().masked_fill(~option_mask, float("-inf"))
            probs = torch.softmax(z, dim=-1).cpu().numpy()
            targets, bins = live_targets(probs, option_mask.cpu().numpy(), self.edges,
                                         self.bin_accuracy)
            targets = torch.tensor(targets, dtype=torch.float32)
        else:
            targets, bins = self.targets[item_index.cpu()], self.bin_of_item[idx]
        weights = None
        if reduction == "bin":
            n_items = float(self.bin_count_raw.sum())
            n_full = int(np.count_nonzero(self.bin_count_raw))
            weights = torch.tensor(n_items / (n_full * self.bin_count[bins]), dtype=torch.float32)
            weights = weights.to(option_scores.device)
        return targets.to(option_scores.device), weights

    def save(self, folder: Path) -> None:
        """Into a checkpoint folder, atomically (a resumed run continues identically)."""
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, targets=self.targets.numpy(), bin_of_item=self.bin_of_item,
                         edges=self.edges, bin_accuracy=self.bin_accuracy,
                         bin_count=self.bin_count, bin_count_raw=self.bin_count_raw,
                         steps=np.array([self.last_estep_step, self.last_estep_epoch]))
        atomic_write(folder / STATE_FILE, write)
        atomic_write_json(folder / HISTORY_FILE, self.history)

    def load(self, folder: Path) -> bool:
        path = Path(folder) / STATE_FILE
        if not path.exists():
            return False
        with np.load(path, allow_pickle=False) as z:
            self.targets = torch.tensor(z["targets"])
            self.bin_of_item, self.edges = z["bin_of_item"], z["edges"]
            self.bin_accuracy, self.bin_count = z["bin_accuracy"], z["bin_count"]
            self.bin_count_raw = z["bin_count_raw"]
            self.last_estep_step, self.last_estep_epoch = (int(v) for v in z["steps"])
        history = Path(folder) / HISTORY_FILE
        if history.exists():
            self.history = json.loads(history.read_text())
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
                 every_steps: int | None = None, resume_from: str | None = None,
                 bin_prior: float = 0.0) -> None:
        """`scorer_for(model)` gives the scorer training uses (letter or cloze, same settings)."""
        self.state, self.items, self.scorer_for = state, items, scorer_for
        self.n_bins, self.every_steps, self.bin_prior = n_bins, every_steps, bin_prior
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.resume_from = resume_from
        self.seconds = 0.0

    def run_estep(self, model: Any, step: int, args: Any = None, lr_scheduler: Any = None
                  ) -> None:
        import time

        start = time.perf_counter()
        was_training = model.training
        model.eval()
        k = max(it.n_options for it in self.items)
        problem = None
        try:
            index, local = self.score_shard(self.scorer_for(model), k)
        except ModelError as err:
            problem, index, local = f"the E-step (RCFT's EM targets) failed: {err}", [], None
        if was_training:
            model.train()
        mask = option_mask([it.n_options for it in self.items], k)
        if problem is None:
            logits = gather_logits(index, local, len(self.items), k)
            if not np.isfinite(logits[mask]).all():
                problem = "the E-step (RCFT's EM targets) scored non-finite option logits"
        if problem is not None:  # `args` is None only when called outside a Trainer
            raise TrainingError(f"training stopped at step {step}: {problem}" if args is None else
                                fault_message(step, problem, current_lr(args, lr_scheduler), args))
        labels = np.array([it.answer for it in self.items])
        result = estep_targets(logits, labels, mask, self.n_bins, self.bin_prior)
        acc = accuracy(softmax(logits, mask), labels, mask)
        ece = calibration_error_from_table(result.table, "l1")
        self.state.update(result, step, step // self.steps_per_epoch,
                          {"train_accuracy": acc, "train_ece": ece, "n": len(self.items),
                           "bin_prior": self.bin_prior,
                           "target_accuracy": result.bin_accuracy.tolist()})
        self.seconds += time.perf_counter() - start
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
        self.run_estep(model, state.global_step, args, kwargs.get("lr_scheduler"))

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if self.every_steps is not None:
            return
        epoch = state.global_step // self.steps_per_epoch
        if epoch > self.state.last_estep_epoch:
            self.run_estep(model, state.global_step, args, kwargs.get("lr_scheduler"))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_steps and state.global_step % self.every_steps == 0 \
                and state.global_step != self.state.last_estep_step:
            self.run_estep(model, state.global_step, args, kwargs.get("lr_scheduler"))


def steps_per_epoch(n_items: int, batch_size: int, world_size: int, grad_accum: int) -> int:
    return math.ceil(math.ceil(n_items / (batch_size * world_size)) / grad_accum)
