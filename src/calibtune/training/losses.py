"""Training losses: completion-only (CFT), full-sequence (SFT), label smoothing, ECE regulariser."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def completion_loss(answer_logits: torch.Tensor, answer_token: torch.Tensor) -> torch.Tensor:
    """L_SFT1: −mean log π(letter | prompt), over the full vocabulary at the answer position."""
    return F.cross_entropy(answer_logits.float(), answer_token)


def smoothed_completion_loss(answer_logits: torch.Tensor, answer_token: torch.Tensor,
                             letter_tokens: torch.Tensor, option_mask: torch.Tensor,
                             smoothing: float) -> torch.Tensor:
    """Label smoothing of the answer target: (1 − ε) on the gold letter, ε spread over the
    item's K option letters (the vocabulary stays the softmax's support)."""
    logp = F.log_softmax(answer_logits.float(), dim=-1)
    gold = logp.gather(1, answer_token[:, None]).squeeze(1)
    letters = logp.gather(1, letter_tokens)  # [B, K]
    k = option_mask.sum(1).clamp(min=1)
    spread = (letters * option_mask).sum(1) / k
    return -((1 - smoothing) * gold + smoothing * spread).mean()


def full_sequence_loss(head, hidden: torch.Tensor, lm_labels: torch.Tensor,
                       normalise: str = "token") -> torch.Tensor:
    """L_SFT2: next-token cross-entropy over question and answer (−100 marks padding).

    `token`: the mean over every predicted token of the batch (what causal-LM trainers compute);
    `sequence`: each sequence's summed NLL, averaged over sequences — the written
    −(1/n) Σ_i log π(x_i, y_i), larger by the mean number of tokens per sequence.
    The output head is applied only to positions that have a next token to predict, so padding
    costs no vocabulary-sized logits. `head` is the output head of `heads.through_forward`.
    """
    targets = lm_labels[:, 1:]
    keep = targets != -100
    logits = head(hidden[:, :-1][keep])  # [n_tokens, V]
    nll = F.cross_entropy(logits.float(), targets[keep], reduction="none")
    if normalise == "token":
        return nll.mean()
    return nll.sum() / lm_labels.shape[0]


def ece_regulariser(option_logits: torch.Tensor, option_mask: torch.Tensor,
                    targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_ECE: mean over items of w_i Σ_options (p − q)², p the softmax over the item's options.

    With q's top entry at the item's top option this is (c − â_k)² + Σ_j (p_(j) − q_(j))²;
    averaged over items (w_i = 1, `--ece-reduction item`) or weighted so that every bin counts
    the same (`bin`, weights from `RegulariserState.batch_targets`); either way its scale does
    not depend on the batch size.
    """
    z = option_logits.float().masked_fill(~option_mask, float("-inf"))
    p = torch.softmax(z, dim=-1).masked_fill(~option_mask, 0.0)
    err = ((p - targets) ** 2).sum(-1)
    return (err if weights is None else err * weights).mean()
