"""One trainer for sft / cft / rcft / label smoothing: a Trainer that overrides compute_loss.

In letter mode the losses read the answer letter's position; in cloze mode the option texts'
summed log-likelihoods (one row per option), so CFT is the completion loss on the gold text and
RCFT regularises the softmax over the K option log-likelihoods.

A single forward pass per step (`heads.through_forward`): the loss terms are computed inside the
top-level call, from the decoder's final hidden states and only the rows of the output head a
loss needs, so DDP, FSDP2 and ZeRO-3 see every parameter used within a forward call.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from transformers import Trainer

from ..scoring.cloze import continuation_mask, selected_logliks
from ..scoring.forward import Head, through_forward
from .config import TrainConfig
from .estep import RegulariserState
from .losses import (completion_loss, ece_regulariser, full_sequence_loss,
                     smoothed_completion_loss)


class CalibTrainer(Trainer):
    def __init__(self, *args, calib_config: TrainConfig, reg_state: RegulariserState, **kwargs):
        super().__init__(*args, **kwargs)
        self.calib_config = calib_config
        self.reg_state = reg_state
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: scale for GA
        self._terms: dict[str, list[float]] = defaultdict(list)

    def loss_terms(self, model, inputs) -> tuple[tuple, torch.Tensor]:
        """((SFT term or None, option scores or None), anchor) from one forward call."""
        terms = self._cloze_terms if self.calib_config.scoring == "cloze" else self._letter_terms
        result = through_forward(model, lambda hidden, head: terms(head, hidden, inputs),
                                 input_ids=inputs["input_ids"],
                                 attention_mask=inputs["attention_mask"])
        return result.value, result.anchor

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        (sft, option_scores), loss = self.loss_terms(model, inputs)
        cfg = self.calib_config
        if sft is not None:
            loss = loss + cfg.sft_weight * sft
            self._terms["loss_sft"].append(float(sft.detach()))
        if option_scores is not None:
            targets, weights = self.reg_state.batch_targets(
                option_scores, inputs["option_mask"], inputs["item_index"], cfg.ece_targets,
                cfg.ece_reduction)
            reg = ece_regulariser(option_scores, inputs["option_mask"], targets, weights)
            loss = loss + cfg.ece_lambda * reg
            self._terms["loss_ece"].append(float(reg.detach()))
        return (loss, {"option_scores": option_scores}) if return_outputs else loss

    def _letter_terms(self, head: Head, hidden: torch.Tensor, inputs: dict):
        """(SFT term or None, K option-letter logits for the regulariser or None)."""
        cfg = self.calib_config
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        h_answer = hidden[rows, inputs["answer_pos"]]
        letter_ids = inputs["letter_ids"]
        answer_token = letter_ids[rows, inputs["label"]]
        sft = None
        if cfg.sft_weight > 0:
            if cfg.sft_loss == "full":
                sft = full_sequence_loss(head, hidden, inputs["lm_labels"], cfg.sft_normalise)
            elif cfg.method == "label_smoothing":
                sft = smoothed_completion_loss(head(h_answer), answer_token,
                                               letter_ids, inputs["option_mask"],
                                               cfg.label_smoothing)
            else:
                sft = completion_loss(head(h_answer), answer_token)
        option_logits = head(h_answer, letter_ids[0]) if cfg.method == "rcft" else None
        return sft, option_logits

    def _cloze_terms(self, head: Head, hidden: torch.Tensor, inputs: dict):
        """The same terms on option texts: per row the summed log-likelihood of its option."""
        cfg = self.calib_config
        ids, mask, n_cont = inputs["input_ids"], inputs["attention_mask"], inputs["n_cont"]
        select = continuation_mask(mask.sum(1), n_cont, ids.shape[1])
        loglik = selected_logliks(head, hidden[:, :-1], ids[:, 1:], select)  # [rows]
        row_item = inputs["row_item"]
        gold = inputs["row_option"] == inputs["label"][row_item]
        per_token = loglik / n_cont
        sft = None
        if cfg.sft_weight > 0:
            if cfg.sft_loss == "full":
                sft = full_sequence_loss(head, hidden[gold], inputs["lm_labels"][gold],
                                         cfg.sft_normalise)
            elif cfg.method == "label_smoothing":  # (1 − ε)·gold + ε·mean over the K options
                n_items = inputs["label"].shape[0]
                spread = per_token.new_zeros(n_items).index_add(0, row_item, per_token)
                spread = spread / inputs["option_mask"].sum(1)
                sft = -((1 - cfg.label_smoothing) * per_token[gold]
                        + cfg.label_smoothing * spread).mean()
            else:  # completion-only: NLL of the gold option's text, per token or summed
                sft = -(per_token if cfg.sft_normalise == "token" else loglik)[gold].mean()
        option_scores = None
        if cfg.method == "rcft":
            norm = {"token": n_cont, "char": inputs["n_chars"]}.get(cfg.cloze_norm)
            scores = loglik if norm is None else loglik / norm.clamp(min=1)
            option_scores = scores.new_zeros(inputs["option_mask"].shape)
            option_scores = option_scores.index_put((row_item, inputs["row_option"]), scores)
        return sft, option_scores

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, values in self._terms.items():
            if values:
                logs[name] = round(sum(values) / len(values), 6)
        self._terms.clear()
        super().log(logs, start_time)
