"""`calibtune reproduce`: the paper's comparison as one command, every step cached in DIR.

The aligned model as released, temperature scaling, label smoothing, CFT and RCFT (and plain
SFT when asked), on the same items, in-domain and out-of-domain, over several seeds. Each step
(score the aligned model on a split, fit a temperature, train a method for a seed, score its
adapter on a split) writes its own folder under DIR/steps/ and a `step.json` marker last; the
marker holds a digest of exactly the settings the step depends on. A rerun skips every step whose
marker matches, resumes a training step from its last checkpoint, and reruns only the steps a
changed setting touches. Then DIR/table.md, table.csv, results.json and report.html are written
from the steps' scores (`reproduce_tables.py`); `reproduce.py` runs it all.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

from ..data import load_dataset, sample_items
from ..data.items import MCQItem
from ..defaults import N_BINS, N_BOOT, TRAIN_METHODS
from ..errors import ConfigError
from ..integrity import atomic_write_json
from ..option_scores import OptionScores
from .config import check_fewshot

log = logging.getLogger(__name__)

#: The arms of a comparison: the untouched model, post-hoc temperature, and each training method.
ARMS = ("aligned", "temperature") + TRAIN_METHODS
EVAL_SEED = 0  # evaluation items are the same for every seed and method: paired comparisons


@dataclass
class DataSpec:
    """Items of one split: a built-in dataset or a file, a split, a seeded sample size."""

    data: str
    split: str | None = None
    limit: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.data.split("/")[-1].split(".")[0]

    def items(self, seed: int) -> list[MCQItem]:
        return sample_items(load_dataset(self.data, self.split).items, self.limit, seed)


@dataclass
class ReproduceConfig:
    """A comparison: one model, one training set, an in-domain and out-of-domain splits."""

    name: str
    model: str
    train: DataSpec
    in_domain: DataSpec
    out_of_domain: list[DataSpec] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["aligned", "temperature",
                                                        "label_smoothing", "cft", "rcft"])
    scoring: str = "letter"
    prompt: str = "plain"
    cloze_norm: str = "none"
    num_fewshot: int = 0  # exemplars before every scored question (drawn with EVAL_SEED)
    dtype: str = "float32"
    training: dict = field(default_factory=dict)  # TrainConfig fields shared by every method
    method_training: dict = field(default_factory=dict)  # per method: {rcft: {ece_lambda: 2}}
    calibration_weights: list[float] = field(default_factory=list)  # align rows: DPO, DPO + λ·ECE
    alignment: dict = field(default_factory=dict)  # AlignConfig fields of the align rows
    seeds: list[int] = field(default_factory=lambda: [0])
    n_bins: int = N_BINS
    n_boot: int = N_BOOT
    description: str = ""

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in ARMS]
        if bad:
            raise ConfigError(f"unknown method(s) {bad}; choose from {', '.join(ARMS)}")
        if "aligned" not in self.methods:
            self.methods = ["aligned", *self.methods]  # every comparison is against it
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        check_fewshot(self.num_fewshot)
        from ..training.config import TrainConfig

        names = {f.name for f in fields(TrainConfig)}
        own = {"method", "seed", "model", "data", "split", "train_limit", "eval_data",
               "eval_split", "eval_limit", "out", "scoring", "prompt", "cloze_norm",
               "num_fewshot", "fewshot_seed", "fewshot_data"}
        for where, values in [("training", self.training),
                              *[(f"method_training.{m}", v) for m, v in
                                self.method_training.items()]]:
            unknown = sorted(set(values) - names)
            clash = sorted(set(values) & own)
            if unknown:
                raise ConfigError(f"{where}: unknown training option(s) {unknown}")
            if clash:
                raise ConfigError(f"{where}: {clash} are set by reproduce itself")
        for m in self.method_training:
            if m not in TRAIN_METHODS:
                raise ConfigError(f"method_training.{m}: only {', '.join(TRAIN_METHODS)} train")
        self._check_alignment()
        names = [s.name for s in self.splits]
        if len(set(names)) != len(names):
            raise ConfigError(f"evaluation splits need distinct names (give each a 'name'); got "
                              f"{names}")
        if any(n.startswith("train-s") or "/" in n for n in names):
            raise ConfigError(f"split names may not start with 'train-s' or hold '/': {names}")

    def _check_alignment(self) -> None:
        from ..align.config import AlignConfig

        weights = self.calibration_weights
        if not isinstance(weights, list) or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < math.inf
                for w in weights):
            raise ConfigError(f"calibration_weights: give a list of finite numbers >= 0, got "
                              f"{weights!r}")
        if self.alignment and not weights:
            raise ConfigError("alignment: set calibration_weights too (the align rows run only "
                              "with it)")
        if weights and self.num_fewshot:
            raise ConfigError("calibration_weights: align trains zero-shot; set num_fewshot: 0")
        own = {"model", "data", "split", "train_limit", "eval_data", "eval_split", "eval_limit",
               "eval_before", "out", "scoring", "prompt", "cloze_norm", "seed", "dtype",
               "calibration_weight", "preferences"}
        unknown = sorted(set(self.alignment) - {f.name for f in fields(AlignConfig)})
        if unknown:
            raise ConfigError(f"alignment: unknown align option(s) {unknown}")
        if set(self.alignment) & own:
            raise ConfigError(f"alignment: {sorted(set(self.alignment) & own)} are set by "
                              "reproduce itself")

    @property
    def align_rows(self) -> dict[str, float]:
        """Row name → λ of the align rows: plain DPO / IPO (λ = 0) first, then one per λ > 0."""
        if not self.calibration_weights:
            return {}
        loss = self.alignment.get("loss", "dpo")
        rows = {loss: 0.0}
        rows.update({f"{loss}_ece{w:g}": float(w) for w in self.calibration_weights if w > 0})
        return rows

    @property
    def rows(self) -> list[str]:
        """Every row of the tables: the methods, then the align rows."""
        return [*self.methods, *self.align_rows]

    @property
    def splits(self) -> list[DataSpec]:
        return [self.in_domain, *self.out_of_domain]


def _spec(value: Any, where: str) -> DataSpec:
    if isinstance(value, str):
        return DataSpec(value)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: give a dataset name or {{data, split, limit, name}}")
    unknown = set(value) - {"data", "split", "limit", "name"}
    if unknown or "data" not in value:
        raise ConfigError(f"{where}: needs 'data' (and optionally split, limit, name); got "
                          f"{sorted(value)}")
    return DataSpec(**value)


def load_reproduce_config(path: str | Path, seeds: list[int] | None = None) -> ReproduceConfig:
    """Read and validate a reproduce YAML file (`configs/*.yaml`); `seeds` overrides its own."""
    from ..config import load_yaml

    raw = load_yaml(path)
    allowed = {f.name for f in fields(ReproduceConfig)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
    for key in ("name", "model", "train", "in_domain"):
        if key not in raw:
            raise ConfigError(f"{path}: missing '{key}'")
    raw["train"] = _spec(raw["train"], "train")
    raw["in_domain"] = _spec(raw["in_domain"], "in_domain")
    raw["out_of_domain"] = [_spec(v, f"out_of_domain[{i}]")
                            for i, v in enumerate(raw.get("out_of_domain") or [])]
    if seeds:
        raw["seeds"] = list(seeds)
    try:
        return ReproduceConfig(**raw)
    except TypeError as err:
        raise ConfigError(f"{path}: {err}") from None


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Step:
    """One cached unit of work: `run(folder)` fills the folder; `key` is what it depends on."""

    id: str
    key: dict
    run: Callable[[Path], None]
    items: int | None = 0  # items through the model (for the plan; None: file missing)
    forward_passes: int | None = 0  # estimated item forward passes, training included
    own_model: bool = False  # loads its own model (training, an adapter's scoring)

    @property
    def folder_name(self) -> str:
        return self.id.replace("/", "__")


def _model_key(cfg: ReproduceConfig) -> dict:
    few = {"num_fewshot": cfg.num_fewshot} if cfg.num_fewshot else {}  # zero-shot keys as before
    return {"model": cfg.model, "scoring": cfg.scoring, "prompt": cfg.prompt,
            "cloze_norm": cfg.cloze_norm, "dtype": cfg.dtype, **few}


def _train_config(cfg: ReproduceConfig, method: str, seed: int, out: Path,
                  states: Path | None = None):
    from .config import TrainRunConfig

    overrides = {**({"frozen_cache_dir": str(states)} if states else {}), **cfg.training,
                 **cfg.method_training.get(method, {})}
    return TrainRunConfig(model=cfg.model, data=cfg.train.data, split=cfg.train.split,
                          train_limit=cfg.train.limit, eval_data=cfg.in_domain.data,
                          eval_split=cfg.in_domain.split, eval_limit=cfg.in_domain.limit,
                          eval_seed=EVAL_SEED, eval_before=False, method=method, seed=seed,
                          scoring=cfg.scoring, prompt=cfg.prompt, cloze_norm=cfg.cloze_norm,
                          num_fewshot=cfg.num_fewshot,
                          fewshot_seed=EVAL_SEED if cfg.num_fewshot else None,
                          dtype=cfg.dtype, out=str(out), **overrides)


def _align_config(cfg: ReproduceConfig, row: str, seed: int, out: Path):
    """The `calibtune align` run of an align row: the config's model and training items (so
    every align row of a seed trains on the same pairs), λ of the row."""
    from ..align.config import AlignConfig

    return AlignConfig(model=cfg.model, data=cfg.train.data, split=cfg.train.split,
                       train_limit=cfg.train.limit, eval_data=cfg.in_domain.data,
                       eval_split=cfg.in_domain.split, eval_limit=cfg.in_domain.limit,
                       eval_before=False, seed=seed, scoring=cfg.scoring, prompt=cfg.prompt,
                       cloze_norm=cfg.cloze_norm, dtype=cfg.dtype,
                       **(dict(retention=False) | cfg.alignment),
                       calibration_weight=cfg.align_rows[row], out=str(out))


def _train_key(tcfg: Any) -> dict:
    """What a training step depends on. Options added later are left out at their defaults
    (few-shot at k = 0, no base adapter, no E-step bin prior), so the steps of earlier runs stay
    cached;
    `max_step_tokens` and `frozen_cache_dir` never enter (micro-batches give the batch's own
    gradient; kept states give the numbers computed without them)."""
    key = {k: v for k, v in asdict(tcfg).items()
           if k not in ("out", "max_step_tokens", "frozen_cache_dir")}
    if not tcfg.num_fewshot:
        for name in ("num_fewshot", "fewshot_seed", "fewshot_data"):
            key.pop(name)
    if tcfg.base_adapter is None:
        key.pop("base_adapter")
    if not tcfg.ece_bin_prior:
        key.pop("ece_bin_prior")
    return key


class ModelCache:
    """The aligned model, loaded once per process and only when a step needs it.

    With `states` (a folder) and `lora_layers` in the training settings, every scoring runs
    through the frozen-layer cache backed by that folder (`models.frozen_states`): the aligned
    model's scoring leaves the frozen layers' output for each sequence there, and the training
    and adapter-scoring steps over the same items read it instead of computing it again."""

    def __init__(self, cfg: ReproduceConfig, states: Path | None = None) -> None:
        self.cfg, self.states, self._model = cfg, states, None

    def release(self) -> None:
        """Drop the aligned model: a training or adapter step loads its own, and two fp32
        copies of a 1.5B model beside a training step come close to a 24 GiB machine's memory
        (measured: 22.1 GiB peak resident). Loaded again if a later step scores the aligned
        model."""
        if self._model is not None:
            self._model = None
            gc.collect()

    def aligned(self):
        if self._model is None:
            from ..models import load_model

            self._model = load_model(self.cfg.model, dtype=self.cfg.dtype)
        return self._model

    def score(self, model: Any, spec: DataSpec, seed: int, frozen: Any = None
              ) -> OptionScores:
        """Scores of `spec`'s sample for `seed`, after exemplars drawn (with EVAL_SEED, as the
        training runs' evaluations) from the split's other items when num_fewshot > 0.
        `frozen`: the training settings that place the frozen-layer boundary (from
        `frozen_settings`), or None to score the plain way."""
        from ..scoring import score
        from ..scoring.base import unpack_model
        from ..training.finetune import frozen_layers_kept
        from .fewshot import run_fewshot

        items = spec.items(seed)
        fewshot = run_fewshot(self.cfg.num_fewshot, EVAL_SEED, items,
                              load_dataset(spec.data, spec.split).items,
                              f"{spec.data} ({spec.split or 'all'})")
        kept = nullcontext()
        if frozen is not None:
            inner = unpack_model(model)[0].requires_grad_(False)  # only scored here
            kept = frozen_layers_kept(inner, frozen)
        with kept:
            return score(model, items, scoring=self.cfg.scoring, prompt=self.cfg.prompt,
                         cloze_norm=self.cfg.cloze_norm, progress=True, fewshot=fewshot)

    def frozen_settings(self, method: str | None) -> Any:
        """The training settings whose `lora_layers` place the frozen boundary when scoring
        the adapter of training method `method`, or (None) the aligned model: the shared
        `training` settings'. None when no states are kept or no boundary is set."""
        if self.states is None or self.cfg.scoring == "cloze":
            return None  # cloze scoring reads each context's KV cache: no frozen-layer reuse
        aligned = method is None
        if aligned:
            method = next((m for m in self.cfg.methods if m in TRAIN_METHODS), None)
        if method not in TRAIN_METHODS:  # no training method, or an align row's adapter
            return None
        tcfg = _train_config(self.cfg, method, 0, Path("."), self.states)
        if aligned:
            tcfg.lora_layers = self.cfg.training.get("lora_layers")
        return tcfg if tcfg.lora_layers else None


def plan(cfg: ReproduceConfig, models: ModelCache | None = None) -> list[Step]:
    """Every step of the comparison, in the order they run. Builds nothing heavy."""
    models = models or ModelCache(cfg)
    mkey = _model_key(cfg)
    steps: list[Step] = []
    n_split = {s.name: _count(s, EVAL_SEED) for s in cfg.splits}
    n_train = {seed: _count(cfg.train, seed) for seed in cfg.seeds}

    def score_aligned(spec: DataSpec, seed: int) -> Callable[[Path], None]:
        def run(folder: Path) -> None:
            models.score(models.aligned(), spec, seed, models.frozen_settings(None)
                         ).save(folder / "scores.npz")
        return run

    for spec in cfg.splits:
        steps.append(Step(f"score/aligned/{spec.name}", {**mkey, "items": asdict(spec),
                                                         "seed": EVAL_SEED},
                          score_aligned(spec, EVAL_SEED), n_split[spec.name],
                          n_split[spec.name]))
    for seed in cfg.seeds:
        if "temperature" in cfg.methods:
            fit_id = f"score/aligned/train-s{seed}"
            steps.append(Step(fit_id, {**mkey, "items": asdict(cfg.train), "seed": seed},
                              score_aligned(cfg.train, seed), n_train[seed], n_train[seed]))
            steps.append(Step(f"posthoc/temperature/s{seed}",
                              {"fit": fit_id, **mkey, "train": asdict(cfg.train), "seed": seed,
                               "splits": [asdict(s) for s in cfg.splits]},
                              _fit_temperature(cfg, seed)))
        for method in [m for m in cfg.methods if m in TRAIN_METHODS]:
            tcfg = _train_config(cfg, method, seed, Path("."))
            steps += _adapter_steps(cfg, models, f"train/{method}/s{seed}", _train_key(tcfg),
                                    _train(cfg, method, seed, models.states),
                                    _train_passes(tcfg, n_train[seed], n_split[cfg.in_domain.name]),
                                    cfg.out_of_domain, n_train[seed], n_split)
        for row in cfg.align_rows:
            acfg = _align_config(cfg, row, seed, Path("."))
            # every split, the in-domain one too: align samples its held-out items with its
            # seed, the table reads every row on the same (EVAL_SEED) items
            steps += _adapter_steps(cfg, models, f"align/{row}/s{seed}",
                                    {k: v for k, v in asdict(acfg).items() if k != "out"},
                                    _align(cfg, row, seed),
                                    _align_passes(acfg, n_train[seed], n_split[cfg.in_domain.name]),
                                    cfg.splits, n_train[seed], n_split)
    return steps


def _adapter_steps(cfg: ReproduceConfig, models: ModelCache, train_id: str, key: dict,
                   run: Callable[[Path], None], passes: int, specs: list[DataSpec],
                   n_train: int | None, n_split: dict) -> list[Step]:
    """A step that trains an adapter (`train/<method>/s<seed>`, `align/<row>/s<seed>`), then one
    scoring its adapter on each of `specs` (`score/<method>/s<seed>/<split>`)."""
    _, method, seed = train_id.split("/")
    return [Step(train_id, key, run, n_train, passes, own_model=True)] + [
        Step(f"score/{method}/{seed}/{spec.name}",
             {"train": key, "items": asdict(spec), "seed": EVAL_SEED},
             _score_adapter(cfg, models, train_id, spec), n_split[spec.name], n_split[spec.name],
             own_model=True)
        for spec in specs]


def _count(spec: DataSpec, seed: int) -> int | None:
    """How many items a spec gives (None when its file is missing: reported in the plan)."""
    try:
        return len(spec.items(seed))
    except Exception as err:  # a user's file not present yet: the plan says so
        log.debug("cannot count %s: %s", spec.data, err)
        return None


def _train_passes(tcfg, n_train: int | None, n_eval: int | None) -> int:
    """Item forward passes of one training run: steps × batch, E-steps, epoch checks, eval."""
    if n_train is None:
        return 0
    epochs = tcfg.epochs if tcfg.max_steps <= 0 else tcfg.max_steps * tcfg.batch_size / n_train
    passes = math.ceil(n_train * epochs)
    if tcfg.method == "rcft":
        passes += n_train * (math.ceil(epochs) + 1)  # E-step at the start and every epoch
    passes += math.ceil(epochs) * (min(tcfg.epoch_eval_limit, n_eval or 0)
                                   + min(getattr(tcfg, "epoch_train_limit", 0), n_train))
    return passes + (n_eval or 0)


def _align_passes(acfg, n_train: int | None, n_eval: int | None) -> int:
    """Sequence forward passes of one align run: two per pair and step (chosen, rejected; the
    reference forward counted in), E-steps when λ > 0, the held-out evaluation."""
    if n_train is None:
        return 0
    epochs = acfg.epochs if acfg.max_steps <= 0 else acfg.max_steps * acfg.batch_size / n_train
    passes = 2 * math.ceil(n_train * epochs)
    if acfg.calibration_weight > 0:
        passes += n_train * (math.ceil(epochs) + 1)
    return passes + (n_eval or 0)


def _fit_temperature(cfg: ReproduceConfig, seed: int) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        from ..calibrators import TemperatureScaling
        from .posthoc import calibrated_scores

        fit = OptionScores.load(folder.parent / f"score__aligned__train-s{seed}" / "scores.npz")
        ts = TemperatureScaling().fit(fit.logits, fit.labels, fit.mask)
        ts.save(folder / "calibrator.json")
        for spec in cfg.splits:
            raw = OptionScores.load(folder.parent / f"score__aligned__{spec.name}" / "scores.npz")
            calibrated_scores(raw, ts.transform(raw.logits, raw.mask),
                              {"calibrator": "temperature"}).save(folder / f"{spec.name}.npz")
    return run


def _train(cfg: ReproduceConfig, method: str, seed: int, states: Path | None
           ) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        from .train import run_training

        resume = (folder / "checkpoints").exists()  # the step's key matched: same settings
        run_training(_train_config(cfg, method, seed, folder, states), resume=resume,
                     claim=False)
    return run


def _align(cfg: ReproduceConfig, row: str, seed: int) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        from .align import run_alignment

        resume = (folder / "checkpoints").exists()  # the step's key matched: same settings
        run_alignment(_align_config(cfg, row, seed, folder), resume=resume, claim=False)
    return run


def _score_adapter(cfg: ReproduceConfig, models: ModelCache, train_id: str, spec: DataSpec
                   ) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        from ..models import load_model

        adapter = folder.parent / train_id.replace("/", "__") / "adapter"
        model = load_model(cfg.model, adapter=str(adapter), dtype=cfg.dtype)
        method = train_id.split("/")[1]  # an align row's adapter: no TRAIN_METHODS boundary
        models.score(model, spec, EVAL_SEED, models.frozen_settings(method)
                     ).save(folder / "scores.npz")
    return run


def scores_of(cfg: ReproduceConfig, steps_dir: Path, method: str, seed: int, split: DataSpec
              ) -> OptionScores:
    """Where each (method, seed, split) result lives among the step folders."""
    if method == "aligned":
        return OptionScores.load(steps_dir / f"score__aligned__{split.name}" / "scores.npz")
    if method == "temperature":
        return OptionScores.load(steps_dir / f"posthoc__temperature__s{seed}" / f"{split.name}.npz")
    if split is cfg.in_domain and method not in cfg.align_rows:
        return OptionScores.load(steps_dir / f"train__{method}__s{seed}" / "eval" / "scores.npz")
    return OptionScores.load(steps_dir / f"score__{method}__s{seed}__{split.name}" / "scores.npz")


@dataclass
class StepOutcome:
    id: str
    status: str  # "done" (cached), "ran", "resumed"
    seconds: float


def execute(cfg: ReproduceConfig, out: Path, *, say: Callable[[str], None] = log.info
            ) -> list[StepOutcome]:
    """Run every step not already done with the same key; return what happened to each."""
    steps_dir = out / "steps"
    steps_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    models = ModelCache(cfg, out / "frozen-states")
    all_steps = plan(cfg, models)
    for i, step in enumerate(all_steps, 1):
        folder = steps_dir / step.folder_name
        marker, pending = folder / "step.json", folder / "step.pending.json"
        key = digest(step.key)
        if marker.exists() and json.loads(marker.read_text()).get("key") == key:
            outcomes.append(StepOutcome(step.id, "done", 0.0))
            say(f"[{i}/{len(all_steps)}] {step.id}: done before, kept")
            continue
        resumed = pending.exists() and json.loads(pending.read_text()).get("key") == key
        if folder.exists() and not resumed:
            shutil.rmtree(folder)  # a changed setting or a stale folder: start the step over
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(pending, {"key": key, "settings": step.key})
        marker.unlink(missing_ok=True)
        say(f"[{i}/{len(all_steps)}] {step.id}: {'resuming' if resumed else 'running'}")
        if step.own_model:
            models.release()
        start = time.perf_counter()
        step.run(folder)
        seconds = time.perf_counter() - start
        atomic_write_json(marker, {"key": key, "settings": step.key, "seconds": round(seconds, 1)})
        pending.unlink(missing_ok=True)
        outcomes.append(StepOutcome(step.id, "resumed" if resumed else "ran", seconds))
    return outcomes


def model_missing(model: str) -> str | None:
    """What the plan must say when `model` is not at hand: an optional built-in not fetched, or
    a local path (what any other name must be: models never come from a hub) that does not
    exist. None otherwise; installed built-ins are not opened."""
    from ..models.builtin import BUILTIN_MODELS

    builtin = BUILTIN_MODELS.get(model)
    if builtin is None:
        return None if Path(model).exists() else "NOT FOUND (provide it before running)"
    if builtin.optional and not builtin.fetched():
        return f"NOT FETCHED (optional built-in): run `calibtune models --fetch {model}` first"
    return None


def describe_plan(cfg: ReproduceConfig) -> str:
    """The plan as text: steps, items and estimated forward passes (nothing is loaded)."""
    steps = plan(cfg)
    lines = [f"reproduce {cfg.name}: model {cfg.model}, {cfg.scoring} scoring, prompt "
             f"{cfg.prompt}{f', {cfg.num_fewshot}-shot' if cfg.num_fewshot else ''}, methods "
             f"{', '.join(cfg.rows)}, seeds {cfg.seeds}"]
    missing = model_missing(cfg.model)
    if missing:
        lines.append(f"  model          {missing}")
    for spec, role in [(cfg.train, "train"), (cfg.in_domain, "in-domain"),
                       *[(s, "out-of-domain") for s in cfg.out_of_domain]]:
        n = _count(spec, EVAL_SEED)
        size = f"{n} items" if n is not None else "FILE NOT FOUND (provide it before running)"
        lines.append(f"  {role:14s} {spec.name}: {spec.data} split={spec.split} "
                     f"limit={spec.limit} -> {size}")
    lines.append(f"  {len(steps)} steps:")
    for step in steps:
        items = "     ?" if step.items is None else f"{step.items:6d}"
        passes = "?" if step.forward_passes is None else f"{step.forward_passes:,}"
        lines.append(f"    {step.id:40s} {items} items  ~{passes} item forward passes")
    total = sum(s.forward_passes or 0 for s in steps)
    lines.append(f"  total ~{total:,} item forward passes (training counts forward+backward "
                 "as one; ? = a file not found, not counted)")
    return "\n".join(lines)


def save_config(cfg: ReproduceConfig, out: Path) -> None:
    from ..integrity import atomic_write_text

    atomic_write_text(out / "config.yaml", yaml.safe_dump(json.loads(json.dumps(asdict(cfg))),
                                                          sort_keys=False))

