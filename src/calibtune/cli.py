"""The `calibtune` command: options built from the workflow configs, a workflow call, a print.

Each option is declared once, on its config field (`config.option`); this module turns the
fields into typer options, so the flags, their help and the YAML keys cannot drift apart.
"""
from __future__ import annotations

import inspect
import logging
import os
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

from .config import build_config, option_specs  # noqa: E402
from .errors import CalibtuneError, ConfigError  # noqa: E402
from .interrupts import Interrupted, stop_on_signals  # noqa: E402
from .workflows.config import CompareConfig, EvalConfig, PosthocConfig, TrainRunConfig  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Measure and restore the calibration of aligned LLMs on multiple-choice questions.")
console = Console(stderr=True)
KW = inspect.Parameter.KEYWORD_ONLY
ALIAS = "__alias"  # parameter-name suffix of a hidden old flag


def config_parameters(cls: type) -> list[inspect.Parameter]:
    """One typer option per config field (None when not given: the YAML or default wins), and
    a hidden one per old flag kept as an alias."""
    params = []
    for spec in option_specs(cls):
        decl = spec.flag
        if spec.type is bool:
            decl = f"{spec.flag}/--no-{spec.flag[2:]}"
        params.append(inspect.Parameter(spec.name, KW, annotation=Optional[spec.type],
                                        default=typer.Option(None, decl, help=spec.help)))
        for i, alias in enumerate(spec.aliases):
            params.append(inspect.Parameter(f"{spec.name}{ALIAS}{i}", KW,
                                            annotation=Optional[spec.type],
                                            default=typer.Option(None, alias, hidden=True)))
    return params


def config_values(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """The command line's values by field name: aliases folded in, inverted flags turned."""
    values = {}
    for spec in option_specs(cls):
        value = given.get(spec.name)
        for i in range(len(spec.aliases)):
            if value is None:
                value = given.get(f"{spec.name}{ALIAS}{i}")
        if value is not None and spec.invert:
            value = not value
        values[spec.name] = value
    return values


def config_command(name: str, cls: type, run: Callable[..., None], *,
                   extra: list[inspect.Parameter] = (), config_file: bool = True) -> None:
    """Register `calibtune NAME` with `cls`'s options plus `extra`; `run(cfg, **extra)`."""
    common = [inspect.Parameter("verbose", KW, annotation=bool, default=typer.Option(
        False, "--verbose", "-v", help="Log what happens."))]
    if config_file:
        common.insert(0, inspect.Parameter("config", KW, annotation=Optional[Path],
                                           default=typer.Option(None, help="YAML file of these options; the command line wins.")))
    extra_names = [p.name for p in extra]

    def command(**given: Any) -> None:
        _setup_logging(given.pop("verbose"))
        try:
            cfg = build_config(cls, given.pop("config", None), config_values(cls, given))
            with stop_on_signals():
                run(cfg, **{k: given[k] for k in extra_names})
        except CalibtuneError as err:
            _fail(err)
        except Interrupted as sig:
            _interrupted(sig, getattr(cfg, "out", None))

    command.__signature__ = inspect.Signature([*config_parameters(cls), *extra, *common])
    command.__doc__ = run.__doc__
    app.command(name)(command)


# Libraries whose notices and deprecation warnings say nothing a user of calibtune can act on.
QUIET = ("transformers", "httpx", "urllib3", "accelerate", "peft", "bitsandbytes", "trl",
         "torch", "datasets", "DeepSpeed", "deepspeed")


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
        modules = r"(transformers|peft|trl|accelerate|torch|deepspeed|datasets|bitsandbytes)(\.|$)"
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


def eval_cmd(cfg: EvalConfig, resume: bool, overwrite: bool = False,
             from_source: tuple[str, str] | None = None,
             kind: str = "logprob", renormalise: bool = False, norm: str = "none",
             preferences: str | None = None, **given: str | None) -> None:
    """Score a dataset with a model and report its calibration (or read another harness's saved
    outputs with --from lm-eval|inspect|table PATH: no model; or measure preference
    accuracy with --preferences FILE|hhh)."""
    from dataclasses import replace

    if preferences:
        from .workflows.align import PreferenceEvalConfig, run_preference_eval

        result = run_preference_eval(PreferenceEvalConfig(
            model=cfg.model, preferences=preferences, adapter=cfg.adapter,
            base_adapter=cfg.base_adapter, prompt=cfg.prompt,
            limit=cfg.limit, seed=cfg.seed, batch_size=cfg.batch_size,
            skip_invalid=cfg.skip_invalid, dtype=cfg.dtype, device=cfg.device,
            trust_remote_code=cfg.trust_remote_code, out=cfg.out), resume=resume,
            overwrite=overwrite)
        from .workflows.align import describe_preferences

        for text in describe_preferences(result.metrics):
            typer.echo(text)
        typer.echo(f"wrote {result.folder}/preferences.json")
        return

    if from_source:
        from .workflows.imports import ImportConfig, run_import

        source, path = from_source
        result = run_import(ImportConfig(source, path, out=cfg.out, kind=kind,
                                         renormalise=renormalise, norm=norm, n_bins=cfg.bins,
                                         n_boot=cfg.n_boot, seed=cfg.seed,
                                         fields=field_map(given)),
                            resume=resume, overwrite=overwrite)
        print_summary(result.metrics, f"{source}: {path}", result.folder)
        return
    from .workflows.eval import run_eval

    fields = field_map(given)
    result = run_eval(replace(cfg, fields=fields) if fields else cfg, resume=resume,
                      overwrite=overwrite)
    if not result.metrics:  # another rank of `accelerate launch`: rank 0 reports
        return
    print_summary(result.metrics, f"{cfg.model} on {cfg.data}", result.folder)


OVERWRITE = inspect.Parameter("overwrite", KW, annotation=bool, default=typer.Option(
    False, help="Replace the run already in --out (without it, a folder holding a run is "
    "refused)."))


def resume_option(text: str) -> inspect.Parameter:
    return inspect.Parameter("resume", KW, annotation=bool, default=typer.Option(
        False, help=text + " Refused if its settings differ."))


config_command("eval", EvalConfig, eval_cmd, extra=[
    resume_option("Reuse the saved chunks of an interrupted run in --out."), OVERWRITE,
    inspect.Parameter("from_source", KW, annotation=Optional[tuple[str, str]], default=typer.Option(
        None, "--from", help="Read saved outputs instead of running a model: lm-eval PATH "
        "(--log_samples files or a results folder), inspect PATH (an Inspect .eval/.json log or a folder "
        "of them, run with logprobs) or table PATH (CSV/JSONL/Parquet of per-option scores).")),
    inspect.Parameter("kind", KW, annotation=str, default=typer.Option(
        "logprob", help="--from table: the values are logprob (log-probabilities or logits) or prob.")),
    inspect.Parameter("renormalise", KW, annotation=bool, default=typer.Option(
        False, help="--from table: divide probabilities by their row sum instead of refusing rows that do not sum to 1.")),
    inspect.Parameter("preferences", KW, annotation=Optional[str], default=typer.Option(
        None, help="Measure preference accuracy and margin on pairs instead: a prompt/chosen/rejected .jsonl or hhh (BIG-bench hhh_alignment).")),
    inspect.Parameter("norm", KW, annotation=str, default=typer.Option(
        "none", help="--from lm-eval: none (raw sums) | char | byte (lm-eval's acc_norm / acc_bytes).")),
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


def report_cmd(cfg: CompareConfig, runs: list[Path], plane: bool, intersect: bool,
               n_boot: int, resume: bool, overwrite: bool) -> None:
    """Compare runs: overlay, table, paired differences against the first run, and (--plane)
    the accuracy-ECE plane of training runs."""
    from .workflows.compare import compare_runs

    typer.echo(compare_runs(runs, Path(cfg.out), cfg.n_bins, plane=plane, intersect=intersect,
                            n_boot=n_boot, resume=resume, overwrite=overwrite))
    typer.echo(f"wrote {cfg.out}/ (compare.md, report.html)")


config_command("report", CompareConfig, report_cmd, config_file=False, extra=[
    inspect.Parameter("runs", KW, annotation=list[Path], default=typer.Argument(
        ..., help="Run folders (or scores.npz files) to compare; the first is the reference.")),
    inspect.Parameter("plane", KW, annotation=bool, default=typer.Option(
        False, help="Draw training runs in the accuracy-ECE plane with the bounds of docs/theory.md.")),
    inspect.Parameter("intersect", KW, annotation=bool, default=typer.Option(
        False, help="Compare runs scored on different items on the items they share.")),
    inspect.Parameter("n_boot", KW, annotation=int, default=typer.Option(
        1000, help="Bootstrap resamples of the paired differences.")),
    resume_option("Redo an interrupted report in --out."), OVERWRITE])


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


@app.command("diagnose")
def diagnose_cmd(
    scores: Path = typer.Argument(..., help="An eval run folder, a train run folder or a scores.npz."),
    train_run: Optional[Path] = typer.Option(None, help="The training run of this model: its training-item measurements enter the bounds."),
    keep_accuracy: bool = typer.Option(False, help="Accuracy must not move (recommends post-hoc temperature)."),
    out: Optional[Path] = typer.Option(None, help="Where to write diagnosis.json/.md (default: beside the scores)."),
    n_bins: int = typer.Option(10, "--n-bins", help="Number of confidence bins."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for intervals."),
    same_distribution: Optional[bool] = typer.Option(
        None, "--same-distribution/--different-distribution",
        help="Whether the training run's training and held-out items come from one distribution "
             "(default: read from its config.yaml; without it, or a measured gap before "
             "fine-tuning, no regime verdict is given)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens."),
) -> None:
    """What the scores show (miscalibration beyond noise, a letter prior, a fine-tuning floor …), what a cross-fitted temperature achieves, and which method to try."""
    _setup_logging(verbose)
    try:
        from .workflows.diagnose import DiagnoseConfig, run_diagnose

        result, folder = run_diagnose(DiagnoseConfig(str(scores), str(train_run) if train_run else None,
                                                     keep_accuracy, str(out) if out else None,
                                                     n_bins, n_boot,
                                                     same_distribution=same_distribution))
    except CalibtuneError as err:
        _fail(err)
    typer.echo(result.to_markdown())
    typer.echo(f"wrote {folder}/diagnosis.json and diagnosis.md")


@app.command("reproduce")
def reproduce_cmd(
    config: Path = typer.Option(..., help="A reproduce config (configs/smollm2-mmlu.yaml, ...)."),
    seeds: Optional[list[int]] = typer.Option(None, "--seeds", help="Seeds, e.g. --seeds 0 1 2 (default: the config's)."),
    more_seeds: Optional[list[str]] = typer.Argument(None, hidden=True),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<config name>); every step is cached there."),
    dry_run: bool = typer.Option(False, help="Check the config and print the plan; load no model."),
    overwrite: bool = typer.Option(False, help="Replace what --out holds (without it, only the "
                                   "same comparison, by name, goes on there)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens."),
) -> None:
    """The paper's comparison in one command: aligned vs temperature vs label smoothing vs CFT vs
    RCFT, in and out of domain, over seeds; resumable; table.md/csv, results.json, report.html."""
    _setup_logging(verbose)
    try:
        from .workflows.reproduce_report import run_reproduce

        all_seeds = list(seeds or [])
        for value in more_seeds or []:
            if not value.lstrip("-").isdigit():
                raise ConfigError(f"unexpected argument {value!r} (seeds are integers)")
            all_seeds.append(int(value))
        with stop_on_signals():
            text = run_reproduce(config, seeds=all_seeds or None, out=out, dry_run=dry_run,
                                 overwrite=overwrite,
                                 say=lambda line: Console().print(line, highlight=False))
    except CalibtuneError as err:
        _fail(err)
    except Interrupted as sig:  # a rerun goes on where this one stopped: no --resume needed
        args = [a for a in sys.argv[1:] if a != "--overwrite"]
        _interrupted(sig, out or "the run folder", command=shlex.join(["calibtune", *args]))
    typer.echo(text)


@app.command("models")
def models_cmd() -> None:
    """List the built-in models and datasets."""
    from .data.builtin import BUILTIN_DATASETS
    from .models import BUILTIN_MODELS

    for name, m in BUILTIN_MODELS.items():
        typer.echo(f"model    {name:24s} {m.description}")
    for name, d in BUILTIN_DATASETS.items():
        typer.echo(f"dataset  {name:24s} {d.description} (splits: {', '.join(d.splits)})")


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # `accelerate launch -m calibtune.cli train ...`
    main()
