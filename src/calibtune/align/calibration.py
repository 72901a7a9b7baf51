"""Calibration-aware preference optimisation: the preference loss plus λ × RCFT's ECE term.

`calibtune align --calibration-weight λ` trains on

    L = L_DPO/IPO(chosen, rejected) + λ · L_ECE(p_i, q_i)

where p_i is the policy's option distribution for the pair's item, read from the same forward
pass TRL makes for the DPO loss, and L_ECE is `training.losses.ece_regulariser` with the
targets q_i of RCFT's E-step (`training.estep`: bin accuracies of the policy on the training
items, re-estimated at the start and every epoch or `--estep-every-steps`). What p_i is:

- **letter** mode: the softmax over the item's K option-letter logits at the position that
  predicts the chosen letter (the chosen row's last prompt token), i.e. exactly what the letter
  scorer reads; the E-step scores the pairs' own items (K options).
- **cloze** mode: the softmax over the two completions of the pair (gold and the rejected
  option), each scored as the cloze scorer scores an option (summed log-likelihood, divided by
  its tokens or characters per `--cloze-norm`), from the policy rows TRL already runs. The other
  K − 2 options are not scored (they would cost K − 2 more rows per pair), so the term
  calibrates the model's two-way choice between the pair's options, and the E-step scores the
  same two-option view of each item. This is our choice (docs/alignment.md says what it implies).

The term reads the decoder's final hidden states, captured by a hook on the policy's forward
call, and applies only the rows of the output head it needs (`scoring.forward.Head`), so TRL's
fused log-prob head and its reference forward are untouched. These are plain functions, tested
without a Trainer; `dpo.make_dpo_trainer` uses them when λ > 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..data.items import MCQItem
from ..errors import ConfigError
from ..scoring.cloze import selected_logliks
from ..scoring.forward import Head
from ..training.losses import ece_regulariser

#: Dataset columns the term adds to TRL's (per pair; see `pair_columns`).
EXTRA_COLUMNS = ("item_index", "gold_option", "n_options", "n_chars_chosen", "n_chars_rejected")


@dataclass(frozen=True)
class PairOptionScores:
    """The option scores [pairs, K] the term reads (logits or normalised log-likelihoods: their
    softmax is the option distribution), their mask and each pair's gold option."""

    scores: torch.Tensor
    mask: torch.Tensor
    label: torch.Tensor


def calibration_items(items: Sequence[MCQItem], pair_items: Sequence[str],
                      rejected_options: Sequence[int], scoring: str) -> list[MCQItem]:
    """The items the E-step scores, one per training pair, in the pairs' order.

    Letter mode: each pair's own item. Cloze mode: its two-option view (gold first, then the
    rejected option), the distribution the term calibrates there."""
    by_id = {it.id: it for it in items}
    missing = [i for i in pair_items if i not in by_id]
    if missing:
        raise ConfigError(f"--calibration-weight: pair {missing[0]!r} has no MCQ item (the term "
                          "needs each pair's options)")
    chosen = [by_id[i] for i in pair_items]
    if scoring == "letter":
        return chosen
    return [MCQItem(id=it.id, question=it.question,
                    options=(it.options[it.answer], it.options[wrong]), answer=0,
                    subject=it.subject, meta=dict(it.meta))
            for it, wrong in zip(chosen, rejected_options)]


def pair_columns(items: Sequence[MCQItem]) -> list[dict[str, int]]:
    """The extra dataset columns of each pair, from its `calibration_items` item: its index
    (the E-step's row), gold option, K, and (cloze) the characters of its two option texts."""
    def chars(it: MCQItem, i: int) -> int:
        return len(it.options[i].strip()) if it.n_options == 2 else 0

    return [{"item_index": i, "gold_option": it.answer, "n_options": it.n_options,
             "n_chars_chosen": chars(it, 0), "n_chars_rejected": chars(it, 1)}
            for i, it in enumerate(items)]


def first_completion_positions(completion_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's first completion token (rows have at least one)."""
    return completion_mask.long().argmax(dim=1)


def letter_option_scores(head: Head, hidden: torch.Tensor, batch: dict[str, torch.Tensor],
                         letter_ids: torch.Tensor) -> PairOptionScores:
    """K letter logits at the position that predicts each pair's chosen letter.

    `hidden` [2B, T, d] are TRL's rows (the B chosen sequences, then the B rejected); the
    chosen rows' last prompt position is the one the letter scorer reads."""
    n_pairs = batch["item_index"].shape[0]
    chosen = hidden[:n_pairs]
    answer_pos = first_completion_positions(batch["completion_mask"][:n_pairs]) - 1
    rows = torch.arange(n_pairs, device=hidden.device)
    scores = head(chosen[rows, answer_pos], letter_ids)  # [B, K]
    k = torch.arange(letter_ids.shape[0], device=hidden.device)
    mask = k[None, :] < batch["n_options"][:, None]
    return PairOptionScores(scores, mask, batch["gold_option"])


def without_last_completion_token(completion_mask: torch.Tensor) -> torch.Tensor:
    """The mask less each row's last completion token: the EOS `--append-eos` appends, which
    the cloze scorer does not read."""
    t = torch.arange(completion_mask.shape[1], device=completion_mask.device)
    last = torch.where(completion_mask.bool(), t, -1).max(dim=1).values
    out = completion_mask.clone()
    out[torch.arange(out.shape[0], device=out.device), last] = 0
    return out


def cloze_option_scores(head: Head, hidden: torch.Tensor, batch: dict[str, torch.Tensor],
                        cloze_norm: str, appended_eos: bool = False) -> PairOptionScores:
    """[chosen, rejected] completion scores per pair, as the cloze scorer scores options
    (`appended_eos`: each completion ends in an EOS token, left out)."""
    n_pairs = batch["item_index"].shape[0]
    completion = batch["completion_mask"]
    if appended_eos:
        completion = without_last_completion_token(completion)
    select = completion[:, 1:].bool()
    loglik = selected_logliks(head, hidden[:, :-1], batch["input_ids"][:, 1:], select)  # [2B]
    if cloze_norm == "token":
        loglik = loglik / select.sum(1).clamp(min=1)
    elif cloze_norm == "char":
        chars = torch.cat([batch["n_chars_chosen"], batch["n_chars_rejected"]])
        loglik = loglik / chars.clamp(min=1)
    scores = torch.stack([loglik[:n_pairs], loglik[n_pairs:]], dim=1)  # [B, 2]
    mask = torch.ones_like(scores, dtype=torch.bool)
    return PairOptionScores(scores, mask, torch.zeros(n_pairs, dtype=torch.long,
                                                      device=scores.device))


def pair_option_scores(head: Head, hidden: torch.Tensor, batch: dict[str, torch.Tensor],
                       scoring: str, *, letter_ids: torch.Tensor | None = None,
                       cloze_norm: str = "none", appended_eos: bool = False) -> PairOptionScores:
    """The option scores of scoring mode `scoring` (see the module docstring)."""
    if scoring == "letter":
        if letter_ids is None:
            raise ConfigError("letter mode needs the option letters' token ids")
        return letter_option_scores(head, hidden, batch, letter_ids)
    return cloze_option_scores(head, hidden, batch, cloze_norm, appended_eos)


def calibration_term(option: PairOptionScores, targets: torch.Tensor,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_ECE of the pairs' option distributions against the E-step's targets."""
    return ece_regulariser(option.scores, option.mask, targets, weights)


def calibrated_preference_loss(preference_loss: torch.Tensor, term: torch.Tensor,
                               weight: float) -> torch.Tensor:
    """L_DPO/IPO + λ · L_ECE. λ = 0 returns the preference loss itself (not + 0 · term), so a
    zero weight trains exactly as plain DPO / IPO."""
    return preference_loss if weight == 0 else preference_loss + weight * term


class HiddenCapture:
    """Captures the decoder's final hidden states of the first forward call in its block: the
    policy's (TRL runs it before the reference's, which runs without gradient)."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.decoder = decoder
        self.hidden: torch.Tensor | None = None
        self._hook: Any = None

    def __enter__(self) -> "HiddenCapture":
        def keep_first(module, args, out):
            if self.hidden is None:
                self.hidden = out.last_hidden_state
        self.hidden = None
        self._hook = self.decoder.register_forward_hook(keep_first)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hook.remove()
