"""`calibtune diagnose`: where a model stands and which method to use, from measured numbers.

Reads an eval run folder or a scores.npz (and optionally a training run folder, whose last
epoch-end check measured the model on its own training items), runs `theory.diagnose` and
writes diagnosis.json and diagnosis.md. The rule is docs/theory.md §5.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import yaml

from .config import DiagnoseConfig  # noqa: F401 - declared with the other workflow configs
from ..calibrators import TemperatureScaling
from ..data.builtin import EVALS_SETS
from ..errors import ConfigError, SavedFileError
from ..integrity import (atomic_write_json, atomic_write_text, read_json_file, read_json_records,
                         saved_number)
from ..option_scores import OptionScores
from ..theory import Diagnosis, diagnose

log = logging.getLogger(__name__)


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
    points = [(where, e) for where, e in read_json_records(log_path)  # epoch 0 is G₀'s
              if "train_accuracy" in e and "train_confidence" in e and e.get("epoch", 1) != 0]
    if not points:
        raise ConfigError(f"{log_path} has no training-item measurements (runs of calibtune "
                          "before 2026-11-29, or --epoch-train-limit 0)")
    where, last = points[-1]
    return {"accuracy": saved_number(last, "train_accuracy", log_path, where=where),
            "confidence": saved_number(last, "train_confidence", log_path, where=where),
            "n": int(saved_number(last, "train_n", log_path, where=where))}


def item_sets(run: str | Path) -> tuple[bool | None, str | None]:
    """Whether a training run's training and held-out items come from one distribution, read
    from its config.yaml: (True, why) for the seeded random halves of one built-in set, (False,
    why) for different data or MMLU's subject-disjoint split, (None, None) when unknown."""
    path = Path(run) / "config.yaml"
    if not path.exists():
        return None, None
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SavedFileError(f"{path}: not readable YAML ({type(err).__name__})") from None
    if not isinstance(cfg, dict):
        raise SavedFileError(f"{path}: expected a mapping of options, got {type(cfg).__name__}")
    data, held = cfg.get("data"), cfg.get("eval_data") or cfg.get("data")
    split, eval_split = cfg.get("split"), cfg.get("eval_split")
    if data != held:
        return False, f"training data {data}, held-out data {held}"
    if data == "mmlu" and split != eval_split:
        return False, (f"MMLU {split} vs {eval_split}: a subject-disjoint split, the training "
                       "subjects differ from the held-out ones")
    if data in EVALS_SETS and {split, eval_split} == {"train", "test"}:
        return True, f"{data} train/test: seeded random halves of one set"
    return None, None


def baseline_measurements(run: str | Path) -> dict:
    """The model before fine-tuning on both item sets, when the run measured it: held-out
    accuracy from eval_before/metrics.json, training-item accuracy from an epoch-0 check in
    train_log.json or the first E-step (RCFT, step 0) in estep_history.json."""
    run = Path(run)
    before = run / "eval_before" / "metrics.json"
    train0 = None
    log_path = run / "train_log.json"
    if log_path.exists():
        train0 = next(((e, log_path, w) for w, e in read_json_records(log_path)
                       if "train_accuracy" in e and float(e.get("epoch", -1)) == 0), None)
    history = run / "estep_history.json"
    if train0 is None and history.exists():
        train0 = next(((e, history, w) for w, e in read_json_records(history)
                       if "train_accuracy" in e and int(e.get("step", -1)) == 0), None)
    if not before.exists() or train0 is None:
        return {}
    entry, path, where = train0
    metrics = read_json_file(before, dict)
    n_key = "train_n" if "train_n" in entry else "n"
    return {"accuracy_before": saved_number(entry, "train_accuracy", path, where=where),
            "n_before": int(saved_number(entry, n_key, path, where=where)),
            "heldout_accuracy_before": saved_number(metrics, "accuracy", before)}


def same_heldout_items(run: str | Path, scores: OptionScores) -> bool:
    """Whether the run's eval_before scored the items being diagnosed (same ids, or the same
    number of items where its scores are not saved): G₀ is a difference on those items."""
    saved = Path(run) / "eval_before" / "scores.npz"
    if saved.exists():
        return sorted(map(str, OptionScores.load(saved).ids)) == sorted(map(str, scores.ids))
    metrics = read_json_file(Path(run) / "eval_before" / "metrics.json", dict)
    return metrics.get("n") in (None, len(scores.labels))


def temperature_fit(p: np.ndarray, y: np.ndarray, m: np.ndarray):
    """`theory.diagnose`'s `recalibrate`: the package's temperature scaling, on probabilities."""
    t = TemperatureScaling().fit(p, y, m, from_probs=True)
    return (lambda q, mq: t.transform(q, mq, from_probs=True)), {"temperature": t.temperature_}


def run_diagnose(cfg: DiagnoseConfig) -> tuple[Diagnosis, Path]:
    path = scores_path(cfg.scores)
    scores = OptionScores.load(path)
    train = None
    if cfg.train_run:
        same, why = item_sets(cfg.train_run)
        if cfg.same_distribution is not None:
            same, why = cfg.same_distribution, "as stated on the command line"
        baseline = baseline_measurements(cfg.train_run)
        if baseline and not same_heldout_items(cfg.train_run, scores):
            log.warning("%s/eval_before scored other held-out items than %s: the gap before "
                        "fine-tuning (G₀) does not apply to them and is not used", cfg.train_run,
                        path)
            baseline = {}
        train = {**training_measurements(cfg.train_run), **baseline,
                 "same_distribution": same, "item_sets": why}
    result = diagnose(scores.probs(), scores.labels, scores.mask, n_bins=cfg.n_bins,
                      keep_accuracy=cfg.keep_accuracy, train=train, n_boot=cfg.n_boot,
                      seed=cfg.seed, recalibrate=temperature_fit)
    out = Path(cfg.out) if cfg.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "diagnosis.json", {"scores": str(path), "train_run": cfg.train_run,
                                               **result.to_dict()})
    atomic_write_text(out / "diagnosis.md", result.to_markdown())
    return result, out
