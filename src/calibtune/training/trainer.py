"""One trainer for sft / cft / rcft / label smoothing: a Trainer that overrides compute_loss.

The loss itself is `objective.loss_terms` and `objective.total_loss` (plain functions, one
forward call per step); this class adds what only a Trainer has: the E-step state it reads and
the logging of the loss terms.
"""
from __future__ import annotations

from collections import defaultdict

from transformers import Trainer

from .config import TrainConfig
from .estep import RegulariserState
from .microbatch import split_batch
from .objective import loss_terms, total_loss


class CalibTrainer(Trainer):
    def __init__(self, *args, calib_config: TrainConfig, reg_state: RegulariserState, **kwargs):
        super().__init__(*args, **kwargs)
        self.calib_config = calib_config
        self.reg_state = reg_state
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: scale for GA
        self._terms: dict[str, list[float]] = defaultdict(list)
        self._shares = (1.0, 1.0)  # of the micro-batch in flight (`training_step`)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """One optimiser step's forward and backward; a batch over `max_step_tokens` padded
        tokens runs as micro-batches whose gradients add up to its own (one process only: ranks
        of a multi-process run must make the same number of forward calls)."""
        budget = self.calib_config.max_step_tokens
        if not budget or self.args.world_size > 1:
            return super().training_step(model, inputs, num_items_in_batch)
        total = None
        for part in split_batch(inputs, budget, self.calib_config):
            self._shares = (part.sft_share, part.ece_share)
            loss = super().training_step(model, part.inputs, num_items_in_batch)
            total = loss if total is None else total + loss
        self._shares = (1.0, 1.0)
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms = loss_terms(model, inputs, self.calib_config)
        loss, logged = total_loss(terms, inputs, self.calib_config, self.reg_state,
                                  self._shares)
        for name, value in logged.items():
            self._terms[name].append(value)
        return (loss, {"option_scores": terms.option_scores}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, values in self._terms.items():
            if values:
                logs[name] = round(sum(values) / len(values), 6)
        self._terms.clear()
        super().log(logs, start_time)
