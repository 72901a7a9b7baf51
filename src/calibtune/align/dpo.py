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
from pathlib import Path
from typing import Any, Sequence

from ..config import hf_arguments
from ..data.items import MCQItem
from ..errors import ConfigError, DataError
from ..models.lora import lora_config, top_layers_callbacks
from .calibration import EXTRA_COLUMNS, calibration_items, pair_columns
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


def preference_dataset(encoded: Sequence[EncodedPair],
                       extra: Sequence[dict[str, int]] | None = None) -> Any:
    """A `datasets.Dataset` of already-tokenised pairs (TRL's `prompt_ids`/`chosen_ids`/
    `rejected_ids` columns), with `extra` columns per pair when given (the calibration term's)."""
    from datasets import Dataset

    if not encoded:
        raise DataError("no preference pairs to train on")
    rows = [{"prompt_ids": e.prompt_ids, "chosen_ids": e.chosen_ids,
             "rejected_ids": e.rejected_ids} for e in encoded]
    if extra is not None:
        rows = [row | more for row, more in zip(rows, extra, strict=True)]
    return Dataset.from_list(rows)


@dataclass
class CalibrationSetup:
    """What `--calibration-weight` needs besides the pairs: the item the E-step scores for
    each encoded pair (in their order) and, in letter mode, the option letters' token ids."""

    items: list[MCQItem]
    letter_ids: list[int] | None


def calibration_setup(tokenizer: Any, encoded: Sequence[EncodedPair],
                      pairs: Sequence[PreferencePair], items: Sequence[MCQItem],
                      cfg: AlignConfig) -> CalibrationSetup:
    """The E-step's items for the pairs kept after encoding (MCQ pairs carry their item's id and
    rejected option in `meta`)."""
    from ..scoring.prompts import letter_token_ids

    by_id = {p.id: p for p in pairs}
    kept = [by_id[e.id] for e in encoded]
    if any("item" not in p.meta for p in kept):
        raise ConfigError("--calibration-weight needs pairs built from MCQ items (--data)")
    calib = calibration_items(items, [p.meta["item"] for p in kept],
                              [p.meta["rejected_option"] for p in kept], cfg.scoring)
    letter_ids = None
    if cfg.scoring == "letter":
        letter_ids = letter_token_ids(tokenizer, max(it.n_options for it in calib), cfg.prompt)
    return CalibrationSetup(calib, letter_ids)


class WithColumns:
    """TRL's collator, plus integer columns it does not know, as [B] tensors."""

    def __init__(self, collator: Any, names: Sequence[str]) -> None:
        self.collator, self.names = collator, tuple(names)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.collator(examples)
        for name in self.names:
            batch[name] = torch.tensor([ex[name] for ex in examples], dtype=torch.long)
        return batch


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


def _calibrated_trainer_class() -> type:
    import torch

    from ..scoring.forward import Head, unwrap
    from .calibration import (HiddenCapture, calibrated_preference_loss, calibration_term,
                              pair_option_scores)

    class CalibratedPreferenceTrainer(_trainer_class()):
        """DPO / IPO plus λ × L_ECE on each pair's option distribution (`align.calibration`):
        the term reads the hidden states of the policy's own forward call, its targets the
        E-step's (`reg_state`, kept in every checkpoint so a resumed run continues alike)."""

        def __init__(self, *args, align_config: AlignConfig, reg_state: Any,
                     letter_ids: list[int] | None, **kwargs):
            super().__init__(*args, **kwargs)
            self.align_config, self.reg_state = align_config, reg_state
            self.letter_ids = None if letter_ids is None else torch.tensor(letter_ids)
            self.data_collator = WithColumns(self.data_collator, EXTRA_COLUMNS)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, *EXTRA_COLUMNS]

        def _compute_loss(self, model, inputs, return_outputs):
            cfg = self.align_config
            extra = {name: inputs.pop(name) for name in EXTRA_COLUMNS}
            inner = unwrap(model)
            with HiddenCapture(inner.get_decoder()) as captured:
                result = super()._compute_loss(model, inputs, return_outputs)
            loss = result[0] if return_outputs else result
            head = Head(inner.get_output_embeddings(),
                        getattr(inner.config, "final_logit_softcapping", None))
            batch = {**extra, "input_ids": inputs["input_ids"],
                     "completion_mask": inputs["completion_mask"]}
            eos = cfg.append_eos and self.processing_class.eos_token_id is not None
            option = pair_option_scores(head, captured.hidden, batch, cfg.scoring,
                                        letter_ids=self.letter_ids, cloze_norm=cfg.cloze_norm,
                                        appended_eos=eos)
            targets, weights = self.reg_state.batch_targets(
                option.scores, option.mask, extra["item_index"], cfg.ece_targets,
                cfg.ece_reduction)
            term = calibration_term(option, targets, weights)
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["calibration/ece_term"].append(float(term.detach()))
            loss = calibrated_preference_loss(loss, term, cfg.calibration_weight)
            return (loss, result[1]) if return_outputs else loss

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)  # the seal comes after, in on_save
            if self.args.should_save and self.reg_state.targets is not None:
                self.reg_state.save(Path(self.args.output_dir)
                                    / f"checkpoint-{self.state.global_step}")

    return CalibratedPreferenceTrainer


def make_dpo_trainer(model: Any, tokenizer: Any, encoded: Sequence[EncodedPair],
                     cfg: AlignConfig, output_dir: str, *, callbacks: list | None = None,
                     save_checkpoints: bool = True, progress: bool = True,
                     calibration: CalibrationSetup | None = None,
                     resume_from: str | None = None) -> Any:
    """A `DPOTrainer` on `encoded`. A plain model gets a fresh LoRA adapter (reference: adapter
    disabled); a PEFT model keeps training its adapter (TRL copies it as the reference).

    With `cfg.calibration_weight` > 0 the trainer adds the calibration term and an E-step over
    `calibration.items` (restored from `resume_from`'s checkpoint when resuming)."""
    from peft import PeftModel

    model.config.use_cache = False
    peft = None if isinstance(model, PeftModel) else lora_config(cfg, model)
    args = dpo_arguments(cfg, output_dir, save_checkpoints=save_checkpoints, progress=progress)
    callbacks = [*(callbacks or []), *top_layers_callbacks(cfg)]
    common = dict(model=model, args=args, processing_class=tokenizer, peft_config=peft)
    if cfg.calibration_weight == 0:
        return _trainer_class()(train_dataset=preference_dataset(encoded), callbacks=callbacks,
                                **common)
    if calibration is None:
        raise ConfigError("--calibration-weight needs the pairs' MCQ items (calibration_setup)")
    estep, reg_state = _estep_callback(model, tokenizer, encoded, cfg, calibration, progress,
                                       resume_from)
    return _calibrated_trainer_class()(
        train_dataset=preference_dataset(encoded, pair_columns(calibration.items)),
        callbacks=[estep, *callbacks], align_config=cfg, reg_state=reg_state,
        letter_ids=calibration.letter_ids, **common)


def _estep_callback(model: Any, tokenizer: Any, encoded: Sequence[EncodedPair],
                    cfg: AlignConfig, calibration: CalibrationSetup, progress: bool,
                    resume_from: str | None) -> tuple[Any, Any]:
    """RCFT's E-step (`training.estep`) on the calibration items, scored as `cfg` scores."""
    import os

    from ..training.distributed import sharding_engine
    from ..training.estep import EStepCallback, RegulariserState, steps_per_epoch
    from ..training.finetune import config_scorer

    if sharding_engine() is not None:
        raise ConfigError("--calibration-weight is not supported under FSDP / ZeRO-3 (the term "
                          "reads the output head outside the forward call): use DDP or one "
                          "process")
    reg_state = RegulariserState()
    world = int(os.environ.get("WORLD_SIZE", "1"))

    def scorer_for(current: Any) -> Any:
        return config_scorer(cfg, current, tokenizer,
                             progress="E-step: training items" if progress else False)

    estep = EStepCallback(reg_state, calibration.items, scorer_for, cfg.n_bins,
                          steps_per_epoch(len(encoded), cfg.batch_size, world, cfg.grad_accum),
                          cfg.estep_every_steps, resume_from=resume_from,
                          bin_prior=cfg.ece_bin_prior)
    return estep, reg_state


def dpo_train(model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], cfg: AlignConfig,
              items: Sequence[MCQItem] | None = None) -> Any:
    """Train a LoRA adapter on `pairs` with `cfg`'s loss and β; return the trained PEFT model
    (eval mode). `items` (the MCQ items the pairs came from) are needed when
    `cfg.calibration_weight` > 0. Nothing persistent is written: the Trainer's folder is a
    temporary one and no checkpoint is saved."""
    encoded, _ = encode_pairs(tokenizer, pairs, append_eos=cfg.append_eos,
                              max_length=cfg.max_length)
    calibration = None
    if cfg.calibration_weight > 0:
        if items is None:
            raise ConfigError("--calibration-weight needs the pairs' MCQ items (items=)")
        calibration = calibration_setup(tokenizer, encoded, pairs, items, cfg)
    with tempfile.TemporaryDirectory(prefix="calibtune-dpo-") as tmp:
        trainer = make_dpo_trainer(model, tokenizer, encoded, cfg, tmp, save_checkpoints=False,
                                   progress=False, calibration=calibration)
        trainer.train()
        trained = trainer.model
    return trained.eval()
