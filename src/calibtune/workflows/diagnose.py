"""`calibtune diagnose`: where a model stands and which method to use, from measured numbers.

Reads an eval run folder or a scores.npz (and optionally a training run folder, whose last
epoch-end check measured the model on its own training items), runs `theory.diagnose` and
writes diagnosis.json and diagnosis.md. The rule is docs/theory.md §5.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..integrity import atomic_write_json, atomic_write_text, read_json_records, saved_number
from ..scores import OptionScores
from ..theory import Diagnosis, diagnose


@dataclass
class DiagnoseConfig:
    scores: str  # a run folder or a scores.npz
    train_run: str | None = None  # a `calibtune train` folder: its training-item measurements
    keep_accuracy: bool = False
    out: str | None = None  # default: the run folder (or the scores file's folder)
    n_bins: int = 10
    n_boot: int = 1000
    seed: int = 0


def scores_path(spec: str | Path) -> Path:
    path = Path(spec)
    if path.is_dir():
        for candidate in (path / "scores.npz", path / "eval" / "scores.npz"):
            if candidate.exists():
                return candidate
        raise ConfigError(f"{path} holds no scores.npz (nor eval/scores.npz): give an eval or "
                          "train run folder, or a scores.npz")
    return path


def training_measurements(run: str | Path) -> dict:
    """The fine-tuned model on its own training items, from the run's last epoch-end check."""
    log_path = Path(run) / "train_log.json"
    points = [(where, e) for where, e in read_json_records(log_path)
              if "train_accuracy" in e and "train_confidence" in e]
    if not points:
        raise ConfigError(f"{log_path} has no training-item measurements (runs of calibtune "
                          "before 2026-11-29, or --epoch-train-limit 0)")
    where, last = points[-1]
    return {"accuracy": saved_number(last, "train_accuracy", log_path, where=where),
            "confidence": saved_number(last, "train_confidence", log_path, where=where),
            "n": int(saved_number(last, "train_n", log_path, where=where))}


def run_diagnose(cfg: DiagnoseConfig) -> tuple[Diagnosis, Path]:
    path = scores_path(cfg.scores)
    scores = OptionScores.load(path)
    train = training_measurements(cfg.train_run) if cfg.train_run else None
    result = diagnose(scores.probs(), scores.labels, scores.mask, n_bins=cfg.n_bins,
                      keep_accuracy=cfg.keep_accuracy, train=train, n_boot=cfg.n_boot,
                      seed=cfg.seed)
    out = Path(cfg.out) if cfg.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "diagnosis.json", {"scores": str(path), "train_run": cfg.train_run,
                                               **result.to_dict()})
    atomic_write_text(out / "diagnosis.md", result.to_markdown())
    return result, out
