"""Training faults: non-finite values stop a run, checkpoints are whole or refused.

A loss term, a gradient or the weights that stop being finite end training with one line (the
step, the term, the learning rate) before the optimiser applies the step, so the last checkpoint
stays good. Every checkpoint the `CalibTrainer` saves ends with a seal, `calibtune_checkpoint.json`:
the configuration it was made with (`fingerprint`) and the size and sha256 of every file in the
folder. `check_resumable` reads only the seal and the files' bytes (nothing is unpickled) and
refuses, before anything is loaded or written, a checkpoint without a seal (its save did not
finish), one whose files were truncated, altered or removed since, and one of another
configuration (the fields that differ are named).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import TrainingError
from ..integrity import atomic_write_json, sha256_file

SEAL = "calibtune_checkpoint.json"
SEAL_FORMAT = 1
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Fields that may change between a run and its resume: where and how often it logs and saves,
# what the held-out monitor scores, and how the training items are named (their digest is
# compared instead). Every other field changes what a checkpoint holds or how it continues.
EVAL_SAMPLE = frozenset({"eval_data", "eval_split", "eval_limit", "eval_seed"})
RESUME_FREE = frozenset({"out", "logging_steps", "save_steps", "report_to", "eval_before",
                         "epoch_eval_limit", "epoch_train_limit", "data", "split", "train_limit",
                         "max_step_tokens", "gradient_checkpointing",
                         "frozen_cache_mb", "frozen_cache_dir"}) | EVAL_SAMPLE


def resume_free(fields: dict) -> frozenset:
    """The fields a resumed run may change: those that only monitor, place or split the work
    (the training items are compared by digest). With few-shot exemplars the held-out sample
    also decides the exemplar pool of the training items, so it must stay."""
    return RESUME_FREE - EVAL_SAMPLE if fields.get("num_fewshot") else RESUME_FREE
TERM_NAMES = {"loss_sft": "the SFT term (loss_sft)", "loss_ece": "the ECE regulariser (loss_ece)"}


def fingerprint(config: Any, items: Sequence[Any]) -> dict:
    """What a checkpoint must share with the run that resumes it: the configuration's fields
    (less `RESUME_FREE`) and a digest of the training items (ids, answers, option counts)."""
    fields = asdict(config) if is_dataclass(config) else dict(config)
    digest = hashlib.sha256(json.dumps([_item_key(it) for it in items]).encode()).hexdigest()
    free = resume_free(fields)
    kept = {k: v for k, v in fields.items() if k not in free}
    return json.loads(json.dumps(kept | {"train_items": f"{len(items)} items, sha256 {digest[:16]}"},
                                 default=str))


def field_defaults(config: Any) -> dict:
    """The default of each field of a configuration dataclass, as `fingerprint` writes values:
    a field an older calibtune did not seal matches when the run leaves it at its default."""
    if not is_dataclass(config):
        return {}
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()
                for f in fields(config)
                if f.default is not MISSING or f.default_factory is not MISSING}
    return json.loads(json.dumps(defaults, default=str))


def _item_key(item: Any) -> list:
    """What identifies a training example: an MCQ item's id, answer and option count; a
    preference pair's id and its two responses."""
    if hasattr(item, "answer"):
        return [str(item.id), int(item.answer), len(item.options)]
    return [str(item.id), item.prompt, item.chosen, item.rejected]


@dataclass
class TrainingClock:
    """Training wall-clock across resumes. Each seal records the seconds so far (training, and
    the E-steps within it); a resumed run starts from its checkpoint's, so a run's cost is that
    of the steps that made its adapter (work lost to an interrupt after the last checkpoint is
    not counted). `earlier` is None when the checkpoint was sealed before seconds were kept:
    the total is then unknown."""

    earlier: dict | None
    started: float | None = None
    estep_seconds: Callable[[], float] = lambda: 0.0

    @classmethod
    def resuming(cls, checkpoint: str | Path | None) -> TrainingClock:
        """A clock that goes on from `checkpoint`'s recorded seconds (from 0 without one; an
        unknown total when its seal has no readable record)."""
        if not checkpoint:
            return cls({"train": 0.0, "estep": 0.0})
        try:
            seal = json.loads((Path(checkpoint) / SEAL).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(None)
        seconds = seal.get("seconds") if isinstance(seal, dict) else None
        known = isinstance(seconds, dict) and all(
            isinstance(seconds.get(k), (int, float)) for k in ("train", "estep"))
        return cls({k: float(seconds[k]) for k in ("train", "estep")} if known else None)

    def start(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> dict | None:
        """{"train": s, "estep": s} so far, or None when the earlier part is unknown."""
        if self.earlier is None or self.started is None:
            return None
        return {"train": self.earlier["train"] + time.perf_counter() - self.started,
                "estep": self.earlier["estep"] + self.estep_seconds()}


def sealing_callback(config: dict, clock: TrainingClock | None = None) -> Any:
    """A `TrainerCallback` that seals every checkpoint a Trainer saves (`seal_checkpoint`, with
    `clock`'s seconds so far), for Trainers other than `CalibTrainer` (which seals inside its
    save): TRL's `DPOTrainer`."""
    from transformers import TrainerCallback

    class SealCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if args.should_save:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    seal_checkpoint(folder, config, state.global_step,
                                    clock.seconds() if clock else None)

    return SealCheckpoints()


def checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoint-N folders in `folder`, by step."""
    folder = Path(folder)
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)] \
        if folder.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def seal_checkpoint(folder: Path, config: dict, step: int, seconds: dict | None = None) -> None:
    """Write the seal, last: the configuration, each file's size and sha256, and the training
    seconds so far (`TrainingClock`) when known."""
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != SEAL
             and not p.name.endswith(".tmp")}
    seal = {"format": SEAL_FORMAT, "step": step, "config": config, "files": files}
    if seconds is not None:
        seal["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    atomic_write_json(folder / SEAL, seal)


def checkpoint_problem(folder: Path, config: dict, defaults: dict | None = None) -> str | None:
    """What keeps `folder` from being resumed by a run of `config`, or None. A field the seal
    lacks (sealed by a calibtune without it) is no difference while `config` has it at its
    value in `defaults` (`field_defaults`): new options default to the old behaviour."""
    try:
        seal = json.loads((folder / SEAL).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return (f"it is incomplete: no {SEAL} (its save did not finish, or calibtune before "
                "2026-11-29 wrote it)")
    except (OSError, ValueError) as err:
        return f"its {SEAL} is unreadable ({err})"
    if not isinstance(seal, dict) or seal.get("format") != SEAL_FORMAT \
            or not isinstance(seal.get("files"), dict) or not isinstance(seal.get("config"), dict):
        got = seal.get("format") if isinstance(seal, dict) else None
        return f"its {SEAL} is not one this version reads (format {got!r}, expected {SEAL_FORMAT})"
    for name, record in seal["files"].items():
        path = folder / name
        if not isinstance(record, dict):
            return f"its {SEAL} is not one this version reads (entry of {name})"
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != record.get("bytes"):
            return f"{name} is truncated or altered ({size} bytes, {record.get('bytes')} when saved)"
        if sha256_file(path) != record.get("sha256"):
            return f"{name} is corrupted (its sha256 differs from the one recorded when saved)"
    saved, defaults = seal["config"], defaults or {}
    unsealed = {k for k in set(config) - set(saved) if k in defaults and config[k] == defaults[k]}
    differ = [_difference(k, saved, config) for k in sorted((set(saved) | set(config)) - unsealed)
              if saved.get(k) != config.get(k)]
    if differ:
        return "it was made with another configuration: " + "; ".join(differ)
    return None


def _difference(key: str, saved: dict, config: dict) -> str:
    """How field `key` of the sealed configuration differs from the run's, in words."""
    if key not in saved:
        return f"{key} not recorded there (an older calibtune), {config[key]!r} now"
    if key not in config:
        return f"{key} {saved[key]!r} there, not an option now"
    return f"{key} {saved[key]!r} there, {config[key]!r} now"


def check_resumable(folder: str | Path, config: dict, defaults: dict | None = None) -> None:
    """Raise `TrainingError` (one line) unless `folder` is a whole checkpoint of `config`
    (`checkpoint_problem`). Reads only; names an earlier whole checkpoint when there is one."""
    folder = Path(folder)
    problem = checkpoint_problem(folder, config, defaults)
    if problem is None:
        return
    step = int(CHECKPOINT_RE.match(folder.name).group(1)) if CHECKPOINT_RE.match(folder.name) \
        else None
    earlier = [c for c in checkpoints(folder.parent)
               if step is not None and int(CHECKPOINT_RE.match(c.name).group(1)) < step]
    whole = next((c for c in reversed(earlier) if checkpoint_problem(c, config, defaults) is None),
                 None)
    hint = (f"{whole.name} before it is whole: remove {folder.name} to resume from it" if whole
            else "start afresh in another --out")
    raise TrainingError(f"cannot resume from {folder}: {problem}; nothing was changed — {hint}")


def nonfinite_term(loss: Any, logged: dict[str, float]) -> str | None:
    """Which loss term is NaN or infinite ('the SFT term (loss_sft) is nan'), or None."""
    for name, value in logged.items():
        if not math.isfinite(value):
            return f"{TERM_NAMES.get(name, name)} is {value}"
    if not bool(loss.detach().isfinite()):
        return f"the total loss is {float(loss.detach())}"
    return None


def all_finite(tensors: Iterable[Any]) -> bool:
    """True when every tensor is free of NaN and ±inf (one device sync for all of them)."""
    import torch

    checks = [t.detach().isfinite().all() for t in tensors]
    return bool(torch.stack(checks).all()) if checks else True


def current_lr(args: Any, lr_scheduler: Any = None) -> float:
    """The learning rate of the step in progress (the peak when there is no scheduler yet)."""
    try:
        return float(lr_scheduler.get_last_lr()[0])
    except (AttributeError, IndexError, TypeError):
        return float(args.learning_rate)


def kept_checkpoint(args: Any) -> str:
    """'the last good checkpoint, DIR/checkpoint-N, is kept', or why there is none."""
    if str(getattr(args.save_strategy, "value", args.save_strategy)) == "no":
        return "this run saves no checkpoints"
    found = checkpoints(args.output_dir)
    return f"the last good checkpoint, {found[-1]}, is kept" if found else \
        "no checkpoint had been saved yet"


def fault_message(step: int, problem: str, lr: float, args: Any) -> str:
    return (f"training stopped at step {step}: {problem} (learning rate {lr:.3g}); "
            f"{kept_checkpoint(args)} — lower --learning-rate (or check the data) and start again")
