"""DPO / IPO of a LoRA adapter through TRL's `DPOTrainer`, on pairs tokenised the way calibtune
scores them.

TRL tokenises text pairs itself (with the tokenizer's default special tokens, and an EOS token
appended to every response). calibtune hands it token ids instead, made by `encode_pair`, the
same function the retention check reads log-probabilities through:

- the prompt gets the tokenizer's default special tokens unless it already holds a chat
  template's (`PreferencePair.chat`), exactly as `PromptEncoder` encodes scoring prompts;
- the response is what ``prompt + response`` encodes to past the prompt's tokens (their common
  prefix, as TRL does, so a token merged across the boundary is not lost); for letter pairs
  this is the letter token the letter scorer reads, for cloze pairs the continuation the cloze
  scorer reads;
- no EOS is appended unless `append_eos` (TRL's convention, useful for long free-text responses).

The reference policy is the model with the adapter disabled (TRL's PEFT path), so no second copy
of the model is held.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

from ..config import hf_arguments
from ..errors import DataError
from ..models.lora import lora_config
from .config import LOSSES, AlignConfig
from .pairs import PreferencePair

log = logging.getLogger(__name__)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of a pair: the shared prompt and each response (what the model is scored on)."""

    id: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    @property
    def length(self) -> int:
        """The longer of the two full sequences."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


def encode_pair(tokenizer: Any, pair: PreferencePair, *, append_eos: bool = False) -> EncodedPair:
    """Token ids of `pair` (see the module docstring); a response that encodes to no token of
    its own, or both responses to the same tokens, fails naming the pair's row."""
    special = not pair.chat

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=special)["input_ids"])

    prompt = ids(pair.prompt)
    whole_chosen, whole_rejected = ids(pair.prompt + pair.chosen), ids(pair.prompt + pair.rejected)
    n = min(common_prefix_length(prompt, whole_chosen), common_prefix_length(prompt, whole_rejected))
    if n < len(prompt):
        log.debug("pair %s: the prompt's last %d token(s) merge with the response; the "
                  "response starts where the encodings diverge", pair.id, len(prompt) - n)
    chosen, rejected = whole_chosen[n:], whole_rejected[n:]
    if append_eos and tokenizer.eos_token_id is not None:
        chosen, rejected = chosen + [tokenizer.eos_token_id], rejected + [tokenizer.eos_token_id]
    where = {"file": pair.meta.get("file"), "row": pair.meta.get("row")}
    for name, resp in (("chosen", chosen), ("rejected", rejected)):
        if not resp:
            raise DataError(f"pair {pair.id}: {name} encodes to no tokens after the prompt",
                            field=name, **where)
    if chosen == rejected:
        raise DataError(f"pair {pair.id}: chosen and rejected encode to the same tokens",
                        field="rejected", **where)
    return EncodedPair(pair.id, prompt[:n], chosen, rejected)


def encode_pairs(tokenizer: Any, pairs: Sequence[PreferencePair], *, append_eos: bool = False,
                 max_length: int | None = None
                 ) -> tuple[list[EncodedPair], list[PreferencePair]]:
    """(encoded pairs that fit `max_length`, pairs dropped as too long)."""
    kept, dropped = [], []
    for pair in pairs:
        enc = encode_pair(tokenizer, pair, append_eos=append_eos)
        if max_length is not None and enc.length > max_length:
            dropped.append(pair)
        else:
            kept.append(enc)
    if dropped:
        log.warning("%d of %d pairs are longer than %d tokens and were dropped (e.g. %s)",
                    len(dropped), len(pairs), max_length, dropped[0].id)
    return kept, dropped


def dpo_arguments(cfg: AlignConfig, output_dir: str, *, save_checkpoints: bool = True,
                  progress: bool = True) -> Any:
    """TRL's `DPOConfig` for `cfg`: every field declared with `hf=` (the optimiser, schedule,
    checkpointing and seed `calibtune train` copies to `TrainingArguments`, plus β and the
    length limit) copied by name, and the loss. TRL's own defaults that differ from
    transformers' (bf16 on, gradient checkpointing on, lr 1e-6) are all set from `cfg`, since
    each has an `hf=` field."""
    import torch
    from trl import DPOConfig

    return DPOConfig(
        output_dir=output_dir, **hf_arguments(cfg, DPOConfig),
        save_strategy="steps" if save_checkpoints else "no", save_total_limit=2,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to], data_seed=cfg.seed,
        fp16=False, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        disable_tqdm=not progress, loss_type=[LOSSES[cfg.loss]], remove_unused_columns=True)


def preference_dataset(encoded: Sequence[EncodedPair]) -> Any:
    """A `datasets.Dataset` of already-tokenised pairs (TRL's `prompt_ids`/`chosen_ids`/
    `rejected_ids` columns)."""
    from datasets import Dataset

    if not encoded:
        raise DataError("no preference pairs to train on")
    return Dataset.from_list([{"prompt_ids": e.prompt_ids, "chosen_ids": e.chosen_ids,
                               "rejected_ids": e.rejected_ids} for e in encoded])


def _trainer_class() -> type:
    from trl import DPOTrainer

    class PreferenceTrainer(DPOTrainer):
        """`DPOTrainer` that trains on calibtune's token ids as given (see the module
        docstring) instead of re-tokenising text."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return PreferenceTrainer


def make_dpo_trainer(model: Any, tokenizer: Any, encoded: Sequence[EncodedPair],
                     cfg: AlignConfig, output_dir: str, *, callbacks: list | None = None,
                     save_checkpoints: bool = True, progress: bool = True) -> Any:
    """A `DPOTrainer` on `encoded`. A plain model gets a fresh LoRA adapter (reference: adapter
    disabled); a PEFT model keeps training its adapter (TRL copies it as the reference)."""
    from peft import PeftModel

    model.config.use_cache = False
    peft = None if isinstance(model, PeftModel) else lora_config(cfg)
    return _trainer_class()(
        model=model, args=dpo_arguments(cfg, output_dir, save_checkpoints=save_checkpoints,
                                        progress=progress),
        train_dataset=preference_dataset(encoded), processing_class=tokenizer,
        peft_config=peft, callbacks=callbacks)


def dpo_train(model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], cfg: AlignConfig
              ) -> Any:
    """Train a LoRA adapter on `pairs` with `cfg`'s loss and β; return the trained PEFT model
    (eval mode). Nothing persistent is written: the Trainer's folder is a temporary one and no
    checkpoint is saved."""
    encoded, _ = encode_pairs(tokenizer, pairs, append_eos=cfg.append_eos,
                              max_length=cfg.max_length)
    with tempfile.TemporaryDirectory(prefix="calibtune-dpo-") as tmp:
        trainer = make_dpo_trainer(model, tokenizer, encoded, cfg, tmp, save_checkpoints=False,
                                   progress=False)
        trainer.train()
        trained = trainer.model
    return trained.eval()
