"""calibtune: measure and restore the calibration of aligned LLMs on multiple-choice questions.

The library returns objects and writes nothing; the `calibtune` command's workflows
(`calibtune.workflows`) build on it and write run folders::

    import calibtune as ct
    model = ct.load_model("smollm2-135m-instruct")
    items = ct.load_dataset("mmlu", split="test", limit=200)
    scores = ct.score(model, items, scoring="letter")   # OptionScores, nothing written
    report = ct.evaluate(scores)                        # metrics + intervals, plain data
    ts = ct.calibrators.TemperatureScaling().fit(scores.logits, scores.labels, scores.mask)
    outcome = ct.train(model, train_items, ct.TrainConfig(method="rcft"))
    ct.diagnose(scores.probs(), scores.labels, scores.mask)   # regime, bounds, recommendation
    ct.compare_scores(scores_a, scores_b)                     # paired Δ with intervals, McNemar
    ct.split_conformal(scores.probs(), scores.labels, scores.mask, alpha=0.1)
    ct.load_lm_eval_samples("lm_eval_out/")                   # another harness's outputs
    ct.load_inspect_logs("logs/")                             # Inspect logs run with logprobs

Names that need torch, transformers or scikit-learn (`load_model`, `score`, `train`,
`calibrators`, ...) are imported on first use, so `import calibtune` stays quick.
"""
from importlib import import_module
from typing import Any

from . import metrics
from .data import FieldMap, MCQItem, load_dataset, load_items
from .errors import (AssetError, CalibtuneError, ConfigError, DataError, InputError,
                     IntegrityError, ModelError, SavedFileError)
from .metrics import bin_table, bootstrap_ci, classwise_ece, ece, ece_noise_floor, summarize
from .option_scores import OptionScores, evaluate



def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one home); a source tree
    that was never installed says 0+unknown."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("calibtune")
    except PackageNotFoundError:  # pragma: no cover - run from an uninstalled checkout
        return "0+unknown"


__version__ = _version()

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "load_model": ("calibtune.models", "load_model"),
    "LoadedModel": ("calibtune.models", "LoadedModel"),
    "score": ("calibtune.scoring", "score"),
    "train": ("calibtune.training.finetune", "train"),
    "TrainConfig": ("calibtune.training.config", "TrainConfig"),
    "calibrators": ("calibtune.calibrators", None),
    "models": ("calibtune.models", None),
    "report": ("calibtune.report", None),
    "scoring": ("calibtune.scoring", None),
    "training": ("calibtune.training", None),
    "workflows": ("calibtune.workflows", None),
    "diagnose": ("calibtune.theory", "diagnose"),
    "theory": ("calibtune.theory", None),
    "load_lm_eval_samples": ("calibtune.interop", "load_lm_eval_samples"),
    "load_option_table": ("calibtune.interop", "load_option_table"),
    "load_inspect_logs": ("calibtune.interop", "load_inspect_logs"),
    "compare_scores": ("calibtune.metrics.paired", "compare_scores"),
    "split_conformal": ("calibtune.metrics.conformal", "split_conformal"),
    "align": ("calibtune.align", None),
}

__all__ = ["AssetError", "CalibtuneError", "ConfigError", "DataError", "FieldMap", "InputError",
           "IntegrityError", "MCQItem", "ModelError", "OptionScores", "SavedFileError",
           "bin_table", "bootstrap_ci", "classwise_ece", "ece", "ece_noise_floor", "evaluate",
           "load_dataset", "load_items", "metrics", "summarize", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        loaded = import_module(module)
        return loaded if attribute is None else getattr(loaded, attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
