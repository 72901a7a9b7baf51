"""The training objective as plain functions: what the Trainer minimises, without a Trainer.

`loss_terms` runs one forward call of the model on a collated batch and returns the SFT term and
the option scores the ECE regulariser reads; `total_loss` weighs them into the loss. In letter
mode the terms read the answer letter's position; in cloze mode the option texts' summed
log-likelihoods (one row per option), so CFT is the completion loss on the gold text and RCFT
regularises the softmax over the K option log-likelihoods.

The terms are computed inside the top-level forward call (`scoring.forward.through_forward`),
from the decoder's final hidden states and only the rows of the output head a loss needs, so DDP,
FSDP2 and ZeRO-3 see every parameter used within a forward call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from ..scoring.cloze import continuation_mask, selected_logliks
from ..scoring.forward import Head, through_forward
from .config import TrainConfig
from .losses import completion_loss, ece_regulariser, full_sequence_loss, smoothed_completion_loss

if TYPE_CHECKING:
    from .estep import RegulariserState

Inputs = dict[str, torch.Tensor]  # a collated batch, as the Trainer passes it


@dataclass
class LossTerms:
    """What one forward call yields: the SFT term, the option scores [items, K] the regulariser
    reads (None when the method has no such term), and the anchor that joins the model's own
    outputs to the loss (0, see `ForwardResult.anchor`)."""

    sft: torch.Tensor | None
    option_scores: torch.Tensor | None
    anchor: torch.Tensor


def letter_terms(head: Head, hidden: torch.Tensor, inputs: Inputs, cfg: TrainConfig
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(SFT term or None, K option-letter logits for the regulariser or None)."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    h_answer = hidden[rows, inputs["answer_pos"]]
    letter_ids = inputs["letter_ids"]
    answer_token = letter_ids[rows, inputs["label"]]
    sft = None
    if cfg.sft_weight > 0:
        if cfg.sft_loss == "full":
            sft = full_sequence_loss(head, hidden, inputs["lm_labels"], cfg.sft_normalise)
        elif cfg.method == "label_smoothing":
            sft = smoothed_completion_loss(head(h_answer), answer_token, letter_ids,
                                           inputs["option_mask"], cfg.label_smoothing)
        else:
            sft = completion_loss(head(h_answer), answer_token)
    option_logits = head(h_answer, letter_ids[0]) if cfg.method == "rcft" else None
    return sft, option_logits


def cloze_terms(head: Head, hidden: torch.Tensor, inputs: Inputs, cfg: TrainConfig
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The same terms on option texts: per row the summed log-likelihood of its option."""
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


def loss_terms(model: Any, inputs: Inputs, cfg: TrainConfig) -> LossTerms:
    """The terms of `cfg`'s method and scoring mode, from one forward call of `model`."""
    terms = cloze_terms if cfg.scoring == "cloze" else letter_terms
    result = through_forward(model, lambda hidden, head: terms(head, hidden, inputs, cfg),
                             input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    sft, option_scores = result.value
    return LossTerms(sft, option_scores, result.anchor)


def total_loss(terms: LossTerms, inputs: Inputs, cfg: TrainConfig,
               reg_state: "RegulariserState | None" = None,
               shares: tuple[float, float] = (1.0, 1.0)) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, the terms to log): anchor + sft_weight · L_SFT + λ · L_ECE.

    `reg_state` supplies the regulariser's targets from the last E-step (needed for rcft).
    `shares` scale the two terms of a micro-batch (`microbatch.split_batch`) so that the
    micro-batches' gradients add up to their batch's."""
    loss, logged = terms.anchor, {}
    if terms.sft is not None:
        loss = loss + cfg.sft_weight * shares[0] * terms.sft
        logged["loss_sft"] = float(terms.sft.detach())
    if terms.option_scores is not None:
        if reg_state is None:
            raise ConfigError("--method rcft: the ECE regulariser needs the E-step's targets "
                              "(pass reg_state)")
        targets, weights = reg_state.batch_targets(
            terms.option_scores, inputs["option_mask"], inputs["item_index"], cfg.ece_targets,
            cfg.ece_reduction)
        reg = ece_regulariser(terms.option_scores, inputs["option_mask"], targets, weights)
        loss = loss + cfg.ece_lambda * shares[1] * reg
        logged["loss_ece"] = float(reg.detach())
    return loss, logged
