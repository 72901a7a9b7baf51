"""The `calibtune` command: parses options, builds a config, calls the library, prints."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from .errors import CalibtuneError, ConfigError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Measure and restore the calibration of aligned LLMs on multiple-choice questions.")
console = Console(stderr=True)


# Options that several commands share, declared once.
ModelOpt = Annotated[Optional[str], typer.Option(help="Built-in name, model folder or .gguf file.")]
PromptOpt = Annotated[Optional[str], typer.Option(help="plain (the paper's template) or chat.")]
ScoringOpt = Annotated[Optional[str], typer.Option(help="letter (option letters) or cloze (option texts).")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Seed of sampling, splits, shuffling and the bootstrap (default 0).")]
ConfigOpt = Annotated[Optional[Path], typer.Option(help="YAML file of these options; the command line wins.")]
OutOpt = Annotated[Optional[str], typer.Option(help="Output folder.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "urllib3", "accelerate", "peft", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:  # transformers' weight-loading bars say nothing a user needs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


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


def _fields(question, options, answer, id_field, subject, answer_format) -> dict:
    fields: dict = {}
    if question:
        fields["question"] = question
    if options:
        parts = [p.strip() for p in options.split(",") if p.strip()]
        fields["options"] = parts[0] if len(parts) == 1 else tuple(parts)
    if answer:
        fields["answer"] = answer
    if id_field:
        fields["id"] = id_field
    if subject:
        fields["subject"] = subject
    if answer_format:
        fields["answer_format"] = answer_format
    return fields


@app.command("eval")
def eval_cmd(
    model: ModelOpt = None,
    data: Optional[str] = typer.Option(None, help="Built-in dataset name or a .jsonl/.csv/.parquet file."),
    split: Optional[str] = typer.Option(None, help="Split of a built-in dataset (mmlu: all|train|test)."),
    limit: Optional[int] = typer.Option(None, help="Score a seeded random sample of N items."),
    seed: SeedOpt = None,
    prompt: PromptOpt = None,
    scoring: ScoringOpt = None,
    cloze_norm: Optional[str] = typer.Option(None, help="Cloze length normalisation: none | token | char."),
    adapter: Optional[str] = typer.Option(None, help="A PEFT adapter folder to apply."),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 … (default: cuda if present)."),
    batch_size: Optional[int] = typer.Option(None, help="Most items per forward pass."),
    max_batch_tokens: Optional[int] = typer.Option(None, help="Most padded tokens per forward pass."),
    bins: Optional[int] = typer.Option(None, help="Number of confidence bins (default 10)."),
    n_boot: Optional[int] = typer.Option(None, help="Bootstrap resamples for intervals (0: none)."),
    chunk_size: Optional[int] = typer.Option(None, help="Items per saved chunk (what --resume reuses)."),
    skip_invalid: bool = typer.Option(False, help="Keep going past bad rows; list them in rejected.jsonl."),
    question_field: Optional[str] = typer.Option(None, help="Field holding the question."),
    options_field: Optional[str] = typer.Option(None, help="Field with a list of options, or comma-separated fields."),
    answer_field: Optional[str] = typer.Option(None, help="Field holding the answer."),
    id_field: Optional[str] = typer.Option(None, help="Field holding the item id."),
    subject_field: Optional[str] = typer.Option(None, help="Field holding the subject."),
    answer_format: Optional[str] = typer.Option(None, help="auto | index | letter | text."),
    trust_remote_code: bool = typer.Option(False, help="Allow a model folder's own code to run."),
    resume: bool = typer.Option(False, help="Reuse the saved chunks of an interrupted run in --out."),
    config: ConfigOpt = None,
    out: OutOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Score a dataset with a model and report its calibration."""
    _setup_logging(verbose)
    try:
        from .config import build_config
        from .workflows.eval import EvalConfig, run_eval

        fields = _fields(question_field, options_field, answer_field, id_field, subject_field,
                         answer_format)
        cfg = build_config(EvalConfig, config, dict(
            model=model, data=data, split=split, limit=limit, seed=seed, prompt=prompt,
            scoring=scoring, cloze_norm=cloze_norm, adapter=adapter, dtype=dtype, device=device,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens, bins=bins, n_boot=n_boot, chunk_size=chunk_size,
            skip_invalid=skip_invalid or None, trust_remote_code=trust_remote_code or None,
            fields=fields or None, out=out))
        result = run_eval(cfg, resume=resume)
    except CalibtuneError as err:
        _fail(err)
    print_summary(result.metrics, f"{cfg.model} on {cfg.data}", result.folder)


@app.command("posthoc")
def posthoc_cmd(
    scores: Optional[str] = typer.Option(None, help="scores.npz of an eval run."),
    method: Optional[str] = typer.Option(None, help="identity | temperature | vector | matrix | histogram | isotonic | daca."),
    fit_fraction: Optional[float] = typer.Option(None, help="Share of items to fit on (default 0.1); the rest is reported."),
    seed: SeedOpt = None,
    reference: Optional[str] = typer.Option(None, help="Base model's scores.npz on the same items (daca)."),
    scoring: Optional[str] = typer.Option(None, help="letter | cloze: refuse scores made the other way."),
    bins: Optional[int] = typer.Option(None, help="Number of confidence bins."),
    n_boot: Optional[int] = typer.Option(None, help="Bootstrap resamples for intervals."),
    config: ConfigOpt = None,
    out: OutOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fit a post-hoc calibrator on part of saved scores and report on the disjoint rest."""
    _setup_logging(verbose)
    try:
        from .config import build_config
        from .workflows.posthoc import PosthocConfig, run_posthoc

        cfg = build_config(PosthocConfig, config, dict(
            scores=scores, method=method, fit_fraction=fit_fraction, seed=seed,
            reference=reference, scoring=scoring, bins=bins, n_boot=n_boot, out=out))
        if not cfg.scores:
            raise ConfigError("--scores is required")
        result = run_posthoc(cfg)
    except CalibtuneError as err:
        _fail(err)
    m = result.metrics
    b = m["before"]
    Console().print(f"{cfg.method}: fitted on {m['n_fit']} items, reported on {m['n_report']}")
    if "temperature" in m:
        Console().print(f"temperature T = {m['temperature']:.4f}")
    for key in ("accuracy", "mean_confidence", "ece", "cw_ece", "nll", "brier"):
        Console().print(f"  {key:16s} {b[key]:.4f} -> {m[key]:.4f}")
    Console().print(f"wrote {result.folder}/")


@app.command("train")
def train_cmd(
    model: ModelOpt = None,
    data: Optional[str] = typer.Option(None, help="Training data: built-in name or file."),
    split: Optional[str] = typer.Option(None, help="Split of a built-in training dataset (default train)."),
    train_limit: Optional[int] = typer.Option(None, help="Train on a seeded sample of N items."),
    eval_data: Optional[str] = typer.Option(None, help="Held-out data (default: same dataset)."),
    eval_split: Optional[str] = typer.Option(None, help="Held-out split (default test)."),
    eval_limit: Optional[int] = typer.Option(None, help="Evaluate on a seeded sample of N items."),
    epoch_eval_limit: Optional[int] = typer.Option(None, help="Held-out items scored at each epoch end (default 100; 0: off)."),
    method: Optional[str] = typer.Option(None, help="sft | cft | rcft | label_smoothing."),
    sft_loss: Optional[str] = typer.Option(None, help="full | completion (rcft default: full)."),
    sft_weight: Optional[float] = typer.Option(None, help="Weight of the SFT term (0: L_ECE alone)."),
    ece_lambda: Optional[float] = typer.Option(None, "--lambda", help="Weight λ of the ECE regulariser."),
    n_bins: Optional[int] = typer.Option(None, help="E-step bins."),
    ece_targets: Optional[str] = typer.Option(None, help="M-step targets: live (re-binned from current probabilities, default) | frozen (fixed at the E-step)."),
    ece_reduction: Optional[str] = typer.Option(None, help="L_ECE over a batch: item (mean, default) | bin (every bin the same weight, as the reference)."),
    sft_normalise: Optional[str] = typer.Option(None, help="L_SFT: token (mean over tokens, default) | sequence (per-sequence sum)."),
    estep_every_steps: Optional[int] = typer.Option(None, help="Run the E-step every N steps (default: every epoch)."),
    label_smoothing: Optional[float] = typer.Option(None, help="ε of the label_smoothing baseline."),
    epochs: Optional[float] = typer.Option(None, help="Epochs (default 5, as the paper)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after N optimiser steps."),
    batch_size: Optional[int] = typer.Option(None, help="Per-device batch size."),
    grad_accum: Optional[int] = typer.Option(None, help="Gradient accumulation steps."),
    learning_rate: Optional[float] = typer.Option(None, help="Peak learning rate."),
    lora_r: Optional[int] = typer.Option(None, help="LoRA rank (default 128)."),
    lora_alpha: Optional[int] = typer.Option(None, help="LoRA alpha (default 64)."),
    lora_dropout: Optional[float] = typer.Option(None, help="LoRA dropout (default 0.05)."),
    lora_targets: Optional[str] = typer.Option(None, help="all-linear or comma-separated module names."),
    full_finetune: bool = typer.Option(False, help="Train all weights instead of a LoRA adapter."),
    load_in_4bit: bool = typer.Option(False, help="QLoRA: NF4 4-bit frozen weights (needs bitsandbytes)."),
    prompt: PromptOpt = None,
    scoring: ScoringOpt = None,
    cloze_norm: Optional[str] = typer.Option(None, help="Cloze score RCFT regularises: none | token | char."),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16."),
    save_steps: Optional[int] = typer.Option(None, help="Checkpoint every N steps."),
    seed: SeedOpt = None,
    report_to: Optional[str] = typer.Option(None, help="none | tensorboard."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --out."),
    config: ConfigOpt = None,
    out: OutOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fine-tune for calibration (CFT / RCFT) or a baseline, then evaluate on held-out items."""
    _setup_logging(verbose)
    try:
        from .config import build_config
        from .training.config import TrainConfig
        from .workflows.train import run_training

        cfg = build_config(TrainConfig, config, dict(
            model=model, data=data, split=split, train_limit=train_limit, eval_data=eval_data,
            eval_split=eval_split, eval_limit=eval_limit, epoch_eval_limit=epoch_eval_limit,
            method=method, sft_loss=sft_loss,
            sft_weight=sft_weight, ece_lambda=ece_lambda, n_bins=n_bins,
            ece_targets=ece_targets, ece_reduction=ece_reduction, sft_normalise=sft_normalise,
            estep_every_steps=estep_every_steps, label_smoothing=label_smoothing, epochs=epochs,
            max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
            learning_rate=learning_rate, lora_r=lora_r, lora_alpha=lora_alpha,
            lora_dropout=lora_dropout, lora_targets=lora_targets,
            lora=False if full_finetune else None, load_in_4bit=load_in_4bit or None,
            prompt=prompt, scoring=scoring,
            cloze_norm=cloze_norm, dtype=dtype,
            save_steps=save_steps, seed=seed, report_to=report_to, out=out))
        result = run_training(cfg, resume=resume)
    except CalibtuneError as err:
        _fail(err)
    if result.metrics_after:
        if result.metrics_before:
            Console().print("before training:")
            print_summary(result.metrics_before, f"{cfg.model} (untouched)", result.out / "eval_before")
        print_summary(result.metrics_after, f"{cfg.model} after {cfg.method}", result.out / "eval")


@app.command("report")
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="Run folders (or scores.npz files) to compare."),
    out: Path = typer.Option(Path("runs/compare"), help="Output folder."),
    bins: int = typer.Option(10, help="Number of confidence bins."),
) -> None:
    """Overlay the reliability curves of several runs and tabulate their metrics."""
    _setup_logging(False)
    try:
        from .workflows.compare import compare_runs

        text = compare_runs(runs, out, bins)
    except CalibtuneError as err:
        _fail(err)
    Console().print(text)


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
