"""One trainer for sft / cft / rcft / label smoothing: a Trainer that overrides compute_loss.

In letter mode the losses read the answer letter's position; in cloze mode the option texts'
summed log-likelihoods (one row per option), so CFT is the completion loss on the gold text and
RCFT regularises the softmax over the K option log-likelihoods.

A single forward pass per step: the decoder's final hidden states are captured by a hook on the
top-level call (so DDP / DeepSpeed wrappers see a normal forward), the answer position's state
is gathered, and only the rows of the output head that a loss needs are applied.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from transformers import Trainer

from ..cloze import continuation_mask, selected_logliks
from ..heads import head_logits, positions_from_mask, unwrap
from .config import TrainConfig
from .estep import RegulariserState
from .losses import (completion_loss, ece_regulariser, full_sequence_loss,
                     smoothed_completion_loss)


def forward_hidden(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
                   ) -> torch.Tensor:
    """Final hidden states [B, T, d] from one top-level forward call (logits of one position
    only, which we discard: every loss applies the head to the states it needs)."""
    captured: dict[str, torch.Tensor] = {}
    decoder = unwrap(model).get_decoder()
    hook = decoder.register_forward_hook(
        lambda mod, args, out: captured.__setitem__("h", out.last_hidden_state))
    try:
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    position_ids=positions_from_mask(attention_mask), use_cache=False,
                    logits_to_keep=1)
    finally:
        hook.remove()
    del out
    return captured["h"]


class CalibTrainer(Trainer):
    def __init__(self, *args, calib_config: TrainConfig, reg_state: RegulariserState, **kwargs):
        super().__init__(*args, **kwargs)
        self.calib_config = calib_config
        self.reg_state = reg_state
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: scale for GA
        self._terms: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        hidden = forward_hidden(model, inputs["input_ids"], inputs["attention_mask"])
        if self.calib_config.scoring == "cloze":
            sft, option_scores = self._cloze_terms(model, hidden, inputs)
        else:
            sft, option_scores = self._letter_terms(model, hidden, inputs)
        cfg = self.calib_config
        loss = hidden.new_zeros((), dtype=torch.float32)
        if sft is not None:
            loss = loss + cfg.sft_weight * sft
            self._terms["loss_sft"].append(float(sft.detach()))
        if option_scores is not None:
            targets = self.reg_state.targets.to(hidden.device)[inputs["item_index"]]
            reg = ece_regulariser(option_scores, inputs["option_mask"], targets)
            loss = loss + cfg.ece_lambda * reg
            self._terms["loss_ece"].append(float(reg.detach()))
        return (loss, {"hidden": hidden}) if return_outputs else loss

    def _letter_terms(self, model, hidden, inputs):
        """(SFT term or None, K option-letter logits for the regulariser or None)."""
        cfg = self.calib_config
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        h_answer = hidden[rows, inputs["answer_pos"]]
        letter_ids = inputs["letter_ids"]
        answer_token = letter_ids[rows, inputs["label"]]
        sft = None
        if cfg.sft_weight > 0:
            if cfg.sft_loss == "full":
                sft = full_sequence_loss(model, hidden, inputs["lm_labels"])
            elif cfg.method == "label_smoothing":
                sft = smoothed_completion_loss(head_logits(model, h_answer), answer_token,
                                               letter_ids, inputs["option_mask"],
                                               cfg.label_smoothing)
            else:
                sft = completion_loss(head_logits(model, h_answer), answer_token)
        option_logits = head_logits(model, h_answer, letter_ids[0]) if cfg.method == "rcft" else None
        return sft, option_logits

    def _cloze_terms(self, model, hidden, inputs):
        """The same terms on option texts: per row the summed log-likelihood of its option."""
        cfg = self.calib_config
        ids, mask, n_cont = inputs["input_ids"], inputs["attention_mask"], inputs["n_cont"]
        select = continuation_mask(mask.sum(1), n_cont, ids.shape[1])
        loglik = selected_logliks(model, hidden[:, :-1], ids[:, 1:], select)  # [rows]
        row_item = inputs["row_item"]
        gold = inputs["row_option"] == inputs["label"][row_item]
        per_token = loglik / n_cont
        sft = None
        if cfg.sft_weight > 0:
            if cfg.sft_loss == "full":
                sft = full_sequence_loss(model, hidden[gold], inputs["lm_labels"][gold])
            elif cfg.method == "label_smoothing":  # (1 − ε)·gold + ε·mean over the K options
                n_items = inputs["label"].shape[0]
                spread = per_token.new_zeros(n_items).index_add(0, row_item, per_token)
                spread = spread / inputs["option_mask"].sum(1)
                sft = -((1 - cfg.label_smoothing) * per_token[gold]
                        + cfg.label_smoothing * spread).mean()
            else:  # completion-only: mean token NLL of the gold option's text
                sft = -per_token[gold].mean()
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
