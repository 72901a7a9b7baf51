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
from .objective import loss_terms, total_loss


class CalibTrainer(Trainer):
    def __init__(self, *args, calib_config: TrainConfig, reg_state: RegulariserState, **kwargs):
        super().__init__(*args, **kwargs)
        self.calib_config = calib_config
        self.reg_state = reg_state
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: scale for GA
        self._terms: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms = loss_terms(model, inputs, self.calib_config)
        loss, logged = total_loss(terms, inputs, self.calib_config, self.reg_state)
        for name, value in logged.items():
            self._terms[name].append(value)
        return (loss, {"option_scores": terms.option_scores}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, values in self._terms.items():
            if values:
                logs[name] = round(sum(values) / len(values), 6)
        self._terms.clear()
        super().log(logs, start_time)
