"""Does a tuned model keep its alignment? Preference accuracy and margin on held-out pairs, and
the KL divergence of its next-token distribution from a reference model's.

- **Preference accuracy**: for each pair, log π(chosen | prompt) and log π(rejected | prompt),
  each summed over the response's tokens (tokenised by `dpo.encode_pair`, as training does);
  accuracy is the share of pairs where chosen's exceeds rejected's (a tie counts as a miss and
  is reported), the margin their difference in nats.
- **KL**: for each prompt, KL(π_ref(· | prompt) ‖ π_tuned(· | prompt)) over the full vocabulary
  at the prompt's last position (the distribution of the first response token), averaged over
  prompts. The reference is a second model, or the tuned PEFT model with its adapter disabled.

Both are batched over padded rows; position ids follow the attention mask, so results do not
depend on the batch size or the padding side (tested against one-row-at-a-time computation).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..defaults import N_BOOT
from ..errors import ConfigError, DataError, ModelError
from ..metrics.uncertainty import Interval, bootstrap_ci
from .dpo import EncodedPair, encode_pair
from .pairs import PreferencePair

PADDING_SIDES = ("right", "left")


@dataclass
class PreferenceAccuracy:
    """Preference accuracy and margins of one model on a list of pairs."""

    n: int
    accuracy: float
    ties: int
    mean_margin: float
    ids: list[str] = field(default_factory=list)
    chosen_logps: list[float] = field(default_factory=list)
    rejected_logps: list[float] = field(default_factory=list)

    @property
    def margins(self) -> np.ndarray:
        return np.asarray(self.chosen_logps) - np.asarray(self.rejected_logps)

    @classmethod
    def from_dict(cls, d: dict) -> PreferenceAccuracy:
        """Read back `to_dict()` (with its per-pair values) from a saved report."""
        pairs = d.get("pairs")
        if pairs is None or len(pairs) != d["n"]:
            raise DataError("the saved preference report holds no per-pair log-probabilities "
                            "(written with per_pair=False); intervals cannot be recomputed")
        return cls(d["n"], d["accuracy"], d["ties"], d["mean_margin"], [p["id"] for p in pairs],
                   [p["chosen_logp"] for p in pairs], [p["rejected_logp"] for p in pairs])

    def intervals(self, n_boot: int = N_BOOT, seed: int = 0) -> dict:
        """95% percentile-bootstrap intervals of accuracy and mean margin, resampling pairs
        (NaN bounds for fewer than 2 pairs: one pair says nothing about its spread)."""
        m = _finite(self.margins)
        return {"accuracy": _interval(_wins, m, n_boot, seed),
                "mean_margin": _interval(np.mean, m, n_boot, seed)}

    def to_dict(self, per_pair: bool = True) -> dict:
        out = {"n": self.n, "accuracy": self.accuracy, "ties": self.ties,
               "mean_margin": self.mean_margin}
        if self.chosen_logps:
            out["ci"] = self.intervals()
        if per_pair:
            out["pairs"] = [{"id": i, "chosen_logp": c, "rejected_logp": r}
                            for i, c, r in zip(self.ids, self.chosen_logps, self.rejected_logps)]
        return out


@dataclass
class KLResult:
    """Mean KL(reference ‖ tuned) of the next-token distribution at the end of each prompt."""

    n: int
    mean_kl: float
    max_kl: float
    ids: list[str] = field(default_factory=list)
    per_prompt: list[float] = field(default_factory=list)

    def to_dict(self, per_prompt: bool = True) -> dict:
        out = {"n": self.n, "mean_kl": self.mean_kl, "max_kl": self.max_kl}
        if per_prompt:
            out["prompts"] = [{"id": i, "kl": k} for i, k in zip(self.ids, self.per_prompt)]
        return out


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def _check_padding(side: str) -> None:
    if side not in PADDING_SIDES:
        raise ConfigError(f"padding side must be right or left, got {side!r}")


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped longest first (little padding); results are put back in input order."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def _check_fits(model: Any, length: int, what: str, meta: dict) -> None:
    from ..scoring.batching import context_limit

    limit = context_limit(model)
    if limit is not None and length > limit:
        raise DataError(f"{what} is {length} tokens, longer than the model's context of {limit}",
                        file=meta.get("file"), row=meta.get("row"))


def response_logprobs(model: Any, rows: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                      pad_id: int, batch_size: int = 8, padding_side: str = "right"
                      ) -> np.ndarray:
    """Σ_t log π(response_t | prompt, response_<t) for each (prompt ids, response ids) row."""
    import torch

    from ..scoring.cloze import selected_logliks
    from ..scoring.forward import through_forward
    from ..scoring.batching import pad_batch

    _check_padding(padding_side)
    out = np.zeros(len(rows))
    device = _device(model)
    batches = _batches([len(p) + len(r) for p, r in rows], batch_size)
    for batch in tqdm(batches, desc="preference log-probs", unit="batch", leave=False):
        seqs = [list(rows[i][0]) + list(rows[i][1]) for i in batch]
        ids, mask = pad_batch(seqs, pad_id, padding_side)
        resp = torch.zeros_like(mask, dtype=torch.bool)
        width = ids.shape[1]
        for b, i in enumerate(batch):
            end = len(seqs[b]) if padding_side == "right" else width
            resp[b, end - len(rows[i][1]): end] = True
        ids, mask, resp = ids.to(device), mask.to(device), resp.to(device)
        with torch.no_grad():
            sums = through_forward(
                model, lambda hidden, head: selected_logliks(head, hidden[:, :-1], ids[:, 1:],
                                                             resp[:, 1:]),
                input_ids=ids, attention_mask=mask).value
        out[batch] = sums.double().cpu().numpy()
    if not np.isfinite(out).all():
        raise ModelError("NaN/inf response log-probabilities; check the weights and dtype")
    return out


def preference_accuracy(model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], *,
                        batch_size: int = 8, padding_side: str = "right",
                        append_eos: bool = False) -> PreferenceAccuracy:
    """How often the model puts more log-probability on chosen than on rejected, and by how
    much on average (nats), over `pairs`."""
    from ..scoring.batching import pad_token_id

    if not pairs:
        raise DataError("no preference pairs to score")
    encoded: list[EncodedPair] = []
    for pair in pairs:
        enc = encode_pair(tokenizer, pair, append_eos=append_eos)
        _check_fits(model, enc.length, f"pair {pair.id}", pair.meta)
        encoded.append(enc)
    rows = [(e.prompt_ids, e.chosen_ids) for e in encoded] + \
        [(e.prompt_ids, e.rejected_ids) for e in encoded]
    logps = response_logprobs(model, rows, pad_id=pad_token_id(tokenizer),
                              batch_size=batch_size, padding_side=padding_side)
    chosen, rejected = logps[: len(encoded)], logps[len(encoded):]
    margins = chosen - rejected
    return PreferenceAccuracy(
        n=len(encoded), accuracy=float(np.mean(margins > 0)), ties=int(np.sum(margins == 0)),
        mean_margin=float(np.mean(margins)), ids=[e.id for e in encoded],
        chosen_logps=chosen.tolist(), rejected_logps=rejected.tolist())


def _prompt_ids(tokenizer: Any, prompt: PreferencePair | str) -> list[int]:
    if isinstance(prompt, PreferencePair):
        return list(tokenizer(prompt.prompt, add_special_tokens=not prompt.chat)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def _last_logprobs(model: Any, ids: Any, mask: Any) -> Any:
    import torch

    from ..scoring.forward import answer_logits

    with torch.no_grad():
        return torch.log_softmax(answer_logits(model, ids, mask).double(), dim=-1)


def reference_context(model: Any, reference: Any = None) -> tuple[Any, Any]:
    """(reference model, context to run it in): `reference` as is, or `model` with every PEFT
    adapter disabled, i.e. the base model (for an adapter trained from scratch, DPO's
    reference; when an existing adapter was trained further, pass the reference explicitly)."""
    if reference is not None:
        return reference, contextlib.nullcontext()
    if not hasattr(model, "disable_adapter"):
        raise ConfigError("KL needs a reference model, or a PEFT model whose adapter can be "
                          "disabled")
    return model, model.disable_adapter()


def kl_divergence(model: Any, tokenizer: Any, prompts: Sequence[PreferencePair | str], *,
                  reference: Any = None, batch_size: int = 8, padding_side: str = "right"
                  ) -> KLResult:
    """Mean over prompts of KL(π_ref ‖ π_model) of the next token after each prompt, over the
    full vocabulary (in float64). `reference=None` uses `model` with its adapter disabled."""
    from ..scoring.batching import pad_batch, pad_token_id

    _check_padding(padding_side)
    if not prompts:
        raise DataError("no prompts for the KL check")
    ids_list, names = [], []
    for k, p in enumerate(prompts):
        ids = _prompt_ids(tokenizer, p)
        if not ids:
            raise DataError(f"prompt {k + 1} encodes to no tokens")
        meta = p.meta if isinstance(p, PreferencePair) else {}
        _check_fits(model, len(ids), f"prompt {getattr(p, 'id', k + 1)}", meta)
        ids_list.append(ids)
        names.append(p.id if isinstance(p, PreferencePair) else str(k))
    pad = pad_token_id(tokenizer)
    kl = np.zeros(len(ids_list))
    batches = _batches([len(s) for s in ids_list], batch_size)
    for batch in tqdm(batches, desc="KL check", unit="batch", leave=False):
        ids, mask = pad_batch([ids_list[i] for i in batch], pad, padding_side)
        tuned = _last_logprobs(model, ids.to(_device(model)), mask.to(_device(model)))
        ref_model, context = reference_context(model, reference)
        with context:
            ref = _last_logprobs(ref_model, ids.to(_device(ref_model)),
                                 mask.to(_device(ref_model))).to(tuned.device)
        if ref.shape[-1] != tuned.shape[-1]:
            raise ModelError(f"the reference model's vocabulary ({ref.shape[-1]}) differs from "
                             f"the tuned model's ({tuned.shape[-1]})")
        values = (ref.exp() * (ref - tuned)).sum(-1)
        kl[batch] = values.cpu().numpy()
    if not np.isfinite(kl).all():
        raise ModelError("NaN/inf KL divergence; check the weights and dtype")
    return KLResult(n=len(kl), mean_kl=float(kl.mean()), max_kl=float(kl.max()), ids=names,
                    per_prompt=kl.tolist())


@dataclass
class RetentionReport:
    """A tuned model against its reference on held-out pairs: accuracy of each, and the KL."""

    tuned: PreferenceAccuracy
    reference: PreferenceAccuracy
    kl: KLResult

    @classmethod
    def from_dict(cls, d: dict) -> RetentionReport:
        """Read back a saved retention.json / preferences.json (written with per-item values)."""
        kl = d["kl_reference_tuned"]
        prompts = kl.get("prompts", [])
        return cls(PreferenceAccuracy.from_dict(d["preference_tuned"]),
                   PreferenceAccuracy.from_dict(d["preference_reference"]),
                   KLResult(kl["n"], kl["mean_kl"], kl["max_kl"], [p["id"] for p in prompts],
                            [p["kl"] for p in prompts]))

    def change(self, n_boot: int = N_BOOT, seed: int = 0) -> dict:
        """Tuned minus reference, accuracy and mean margin, with 95% paired-bootstrap intervals
        (both models resampled on the same pairs): whether a fine-tune lost preferences beyond
        the noise of this many pairs."""
        if self.tuned.ids != self.reference.ids:
            raise DataError("tuned and reference were scored on different pairs")
        both = np.stack([_finite(self.tuned.margins), _finite(self.reference.margins)], axis=1)
        return {"accuracy": _interval(_wins_change, both, n_boot, seed),
                "mean_margin": _interval(_mean_change, both, n_boot, seed)}

    def to_dict(self, per_item: bool = True) -> dict:
        return {"preference_tuned": self.tuned.to_dict(per_item),
                "preference_reference": self.reference.to_dict(per_item),
                "change_tuned_minus_reference": self.change(),
                "kl_reference_tuned": self.kl.to_dict(per_item)}


def _finite(margins: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(margins)):
        raise DataError(f"{int(np.sum(~np.isfinite(margins)))} preference margins are not finite "
                        "(a log-probability of -inf or NaN); no interval is computed")
    return margins


def _interval(stat: Any, rows: np.ndarray, n_boot: int, seed: int) -> dict:
    if len(rows) < 2:
        nan = float("nan")
        return Interval(float(stat(rows)) if len(rows) else nan, nan, nan, nan, 0.05, 0).to_dict()
    return bootstrap_ci(stat, rows, n_boot=n_boot, seed=seed).to_dict()


def _wins(margins: np.ndarray) -> float:
    return float(np.mean(margins > 0))


def _wins_change(both: np.ndarray) -> float:
    return _wins(both[:, 0]) - _wins(both[:, 1])


def _mean_change(both: np.ndarray) -> float:
    return float(np.mean(both[:, 0] - both[:, 1]))


def retention_report(model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], *,
                     reference: Any = None, batch_size: int = 8, append_eos: bool = False
                     ) -> RetentionReport:
    """Preference accuracy of the tuned and the reference model on `pairs`, and KL(ref ‖ tuned)
    on their distinct prompts. `reference=None`: the tuned PEFT model with its adapter off."""
    tuned = preference_accuracy(model, tokenizer, pairs, batch_size=batch_size,
                                append_eos=append_eos)
    ref_model, context = reference_context(model, reference)
    with context:
        ref = preference_accuracy(ref_model, tokenizer, pairs, batch_size=batch_size,
                                  append_eos=append_eos)
    seen, prompts = set(), []
    for p in pairs:
        if (p.prompt, p.chat) not in seen:
            seen.add((p.prompt, p.chat))
            prompts.append(p)
    kl = kl_divergence(model, tokenizer, prompts, reference=reference, batch_size=batch_size)
    return RetentionReport(tuned, ref, kl)
