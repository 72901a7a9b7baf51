"""One trainer for sft / cft / rcft / label smoothing: a Trainer that overrides compute_loss.

The loss itself is `objective.loss_terms` and `objective.total_loss` (plain functions, one
forward call per step); this class adds what only a Trainer has: the E-step state it reads, the
logging of the loss terms, and the fault guards of `faults`: a non-finite loss term or gradient
stops training before the optimiser step, non-finite weights are never saved, and a checkpoint
is whole (sealed, with the E-step state) or removed.
"""
from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from pathlib import Path

from transformers import Trainer, TrainerCallback

from ..errors import TrainingError
from .config import TrainConfig
from .estep import RegulariserState
from .faults import (TrainingClock, all_finite, checkpoints, current_lr, fault_message,
                     nonfinite_term, seal_checkpoint)
from .microbatch import split_batch
from .objective import loss_terms, total_loss

logger = logging.getLogger(__name__)


def ignored_step_tokens_message(budget: int, world_size: int) -> str:
    """Micro-batches are one process's: ranks must make the same number of forward calls."""
    return (f"--max-step-tokens {budget} is ignored on {world_size} processes: each step runs "
            "its whole per-device batch (lower --batch-size or use --gradient-checkpointing "
            "to bound memory)")


class CalibTrainer(Trainer):
    def __init__(self, *args, calib_config: TrainConfig, reg_state: RegulariserState,
                 fingerprint: dict | None = None, clock: TrainingClock | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calib_config = calib_config
        self.reg_state = reg_state
        self.fingerprint = fingerprint or {}
        self.clock = clock
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: scale for GA
        self._terms: dict[str, list[float]] = defaultdict(list)
        self._fault: str | None = None  # the first non-finite term of the step in progress
        self.add_callback(FaultGuard(self))
        self._shares = (1.0, 1.0)  # of the micro-batch in flight (`training_step`)
        if calib_config.max_step_tokens and self.args.world_size > 1 \
                and self.is_world_process_zero():
            logger.warning(ignored_step_tokens_message(calib_config.max_step_tokens,
                                                       self.args.world_size))

    def training_step(self, model, inputs, num_items_in_batch=None):
        """One optimiser step's forward and backward; a batch over `max_step_tokens` padded
        tokens runs as micro-batches whose gradients add up to its own (one process only: ranks
        of a multi-process run must make the same number of forward calls)."""
        budget = self.calib_config.max_step_tokens
        if not budget or self.args.world_size > 1:
            return super().training_step(model, inputs, num_items_in_batch)
        total, shares = None, []
        marks = {name: len(values) for name, values in self._terms.items()}
        for part in split_batch(inputs, budget, self.calib_config):
            self._shares = (part.sft_share, part.ece_share)
            shares.append(self._shares)
            loss = super().training_step(model, part.inputs, num_items_in_batch)
            total = loss if total is None else total + loss
        self._shares = (1.0, 1.0)
        self._fold_micro_batch_terms(marks, shares)
        return total

    def _fold_micro_batch_terms(self, marks: dict[str, int], shares: list[tuple[float, float]]
                                ) -> None:
        """The micro-batches' logged terms as the batch's own: their share-weighted sum."""
        for name, values in self._terms.items():
            new = values[marks.get(name, 0):]
            if len(new) == len(shares) > 1 and name in ("loss_sft", "loss_ece"):
                which = 0 if name == "loss_sft" else 1
                del values[marks.get(name, 0):]
                values.append(sum(share[which] * v for share, v in zip(shares, new)))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms = loss_terms(model, inputs, self.calib_config)
        loss, logged = total_loss(terms, inputs, self.calib_config, self.reg_state,
                                  self._shares)
        for name, value in logged.items():
            self._terms[name].append(value)
        if self._fault is None:  # raised before the optimiser step, on every rank alike
            self._fault = nonfinite_term(loss, logged)
        return (loss, {"option_scores": terms.option_scores}) if return_outputs else loss

    def check_step(self) -> None:
        """Before the optimiser step: stop on a non-finite loss term or gradient."""
        problem, self._fault = self._fault, None
        if problem is None and not all_finite(p.grad for p in self.model.parameters()
                                              if p.grad is not None):
            problem = "the gradient is not finite (every loss term is)"
        if problem:
            raise TrainingError(fault_message(self.state.global_step + 1,
                                              f"{problem}; its update was not applied",
                                              current_lr(self.args, self.lr_scheduler), self.args))

    def _save_checkpoint(self, model, trial) -> None:
        """HF's checkpoint, then the E-step state and the seal; finite weights only. A save that
        fails (a full disk) removes its partial folder, so the previous checkpoint is the last."""
        step = self.state.global_step
        folder = Path(self.args.output_dir) / f"checkpoint-{step}"
        if not all_finite(p for p in self.model.parameters() if p.requires_grad):
            raise TrainingError(fault_message(step, "the weights are not finite after this step "
                                              "(checkpoint not saved)",
                                              current_lr(self.args, self.lr_scheduler), self.args))
        previous = [c for c in checkpoints(folder.parent) if c != folder]
        try:
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                if self.reg_state.targets is not None:
                    self.reg_state.save(folder)
                seal_checkpoint(folder, self.fingerprint, step,
                                self.clock.seconds() if self.clock else None)
        except BaseException as err:
            if self.args.should_save:
                shutil.rmtree(folder, ignore_errors=True)
            if not isinstance(err, Exception):
                raise  # an interrupt: the partial checkpoint is gone, the earlier ones stay
            kept = f"{previous[-1]} is intact" if previous else "no earlier checkpoint exists"
            raise TrainingError(f"saving checkpoint {folder} at step {step} failed "
                                f"({type(err).__name__}: {err}); the partial folder was removed "
                                f"and {kept} — free space and resume with --resume") from None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, values in self._terms.items():
            if values:
                logs[name] = round(sum(values) / len(values), 6)
        self._terms.clear()
        super().log(logs, start_time)


class FaultGuard(TrainerCallback):
    """Calls `CalibTrainer.check_step` after gradient clipping, before `optimizer.step()`."""

    def __init__(self, trainer: CalibTrainer) -> None:
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.check_step()
