"""`calibtune align` as a library call: pairs, LoRA model, TRL's DPOTrainer, checkpoints, the
held-out MCQ evaluation of `calibtune train`, and the retention check.

Run folder (OUT): config.yaml, train_pairs.jsonl, heldout_pairs.jsonl, [rejected.jsonl],
checkpoints/, adapter/, train_log.json, eval_before/, eval/, retention.json, summary.json.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..data import load_dataset, sample_items
from ..data.items import MCQItem
from ..errors import ConfigError, DataError
from ..align.config import AlignConfig
from ..align.dpo import calibration_setup, encode_pairs, make_dpo_trainer
from ..align.pairs import (PreferenceLoadResult, PreferencePair, load_preferences, pairs_from_items,
                    pairs_to_jsonl, split_pairs)
from ..align.retention import retention_report
from ..integrity import atomic_write_json, atomic_write_text
from ..run_guard import RunFolder
from ..training.finetune import finish_saves_first, save_adapter
from ..training.estep import EStepCallback
from ..training.faults import TrainingClock, field_defaults, fingerprint, sealing_callback
from .config import PreferenceEvalConfig  # noqa: F401 - its home is .config
from .train import evaluate_items, load_train_eval_items, resume_guarded, resume_point, rounded

log = logging.getLogger(__name__)

HHH = "hhh"


@dataclass
class AlignResult:
    out: Path
    metrics_before: dict | None
    metrics_after: dict
    retention: dict | None
    train_seconds: float | None  # across resumes (`faults.TrainingClock`); None: unknown
    train_pairs: int
    dropped_pairs: int = 0


def _sample(pairs: list[PreferencePair], n: int | None, seed: int) -> list[PreferencePair]:
    """A seeded sample of `n` pairs in their original order (all if n is None)."""
    import numpy as np

    if n is None or n >= len(pairs):
        return list(pairs)
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=n, replace=False))
    return [pairs[i] for i in keep]


def load_preference_source(spec: str, *, style: str = "plain", tokenizer: Any = None,
                           skip_invalid: bool = False) -> PreferenceLoadResult:
    """Pairs from ``hhh`` (BIG-bench hhh_alignment, fetched once) or a JSONL file."""
    if spec == HHH:
        from ..align.hhh import load_hhh

        return PreferenceLoadResult(pairs=load_hhh(style, tokenizer), source="hhh_alignment")
    if not Path(spec).exists():
        raise ConfigError(f"--preferences {spec!r} is neither 'hhh' nor an existing .jsonl file")
    return load_preferences(spec, skip_invalid=skip_invalid)


def _eval_items(cfg: AlignConfig) -> list[MCQItem]:
    return sample_items(load_dataset(cfg.eval_data or cfg.data, cfg.eval_split).items,
                        cfg.eval_limit, cfg.seed)


def _rejected_text(rejected: list[DataError]) -> str:
    return "".join(json.dumps({"file": e.file, "row": e.row, "field": e.field,
                               "reason": e.reason}) + "\n" for e in rejected)


@dataclass
class AlignData:
    """A run's validated data, read before any model is loaded or anything written."""

    train_items: list[MCQItem] | None
    eval_items: list[MCQItem]
    preferences: PreferenceLoadResult | None = None  # a JSONL source (hhh: built later)


def load_align_data(cfg: AlignConfig) -> AlignData:
    if not cfg.preferences:
        train_items, eval_items, _ = load_train_eval_items(cfg)  # no --num-fewshot here
        return AlignData(train_items, eval_items)
    loaded = None
    if cfg.preferences == HHH:
        from ..align.hhh import hhh_task_files

        hhh_task_files()  # fetched and verified once; pairs need the tokenizer (chat style)
    else:
        loaded = load_preference_source(cfg.preferences, skip_invalid=cfg.skip_invalid)
    return AlignData(None, _eval_items(cfg), loaded)


def build_pairs(cfg: AlignConfig, tokenizer: Any, data: AlignData | None = None
                ) -> tuple[list[PreferencePair], list[PreferencePair], list[DataError]]:
    """(training pairs, held-out pairs, rejected rows) of a run.

    MCQ data: the pairs of the training items; the held-out pairs are those of the evaluation
    items. A preference source: a seeded `heldout_fraction` of its pairs is held out (the MCQ
    evaluation reads `eval_data`, default `data`)."""
    data = data or load_align_data(cfg)
    if data.train_items is not None:
        kw = dict(scoring=cfg.scoring, style=cfg.prompt, tokenizer=tokenizer, seed=cfg.seed)
        return (pairs_from_items(data.train_items, **kw), pairs_from_items(data.eval_items, **kw),
                [])
    loaded = data.preferences or load_preference_source(
        cfg.preferences, style=cfg.prompt, tokenizer=tokenizer, skip_invalid=cfg.skip_invalid)
    train, held = split_pairs(loaded.pairs, cfg.heldout_fraction, cfg.seed)
    return _sample(train, cfg.train_limit, cfg.seed), held, loaded.rejected


def run_alignment(cfg: AlignConfig, *, resume: bool = False, overwrite: bool = False,
                  callbacks: list | None = None, claim: bool = True) -> AlignResult:
    """Align with DPO/IPO, save the adapter to OUT/adapter, evaluate the held-out MCQ items
    before/after and measure retention on held-out pairs. A folder holding another run is
    refused unless `overwrite`; `resume` continues a run of the same settings. `claim=False`:
    the caller (reproduce) owns the folder, so no lock and no check."""
    with resume_guarded(cfg, command="align", resume=resume, overwrite=overwrite,
                        claim=claim) as folder:
        return _align_into(folder, cfg, resume, callbacks)


def _align_into(folder: RunFolder, cfg: AlignConfig, resume: bool, callbacks: list | None
                ) -> AlignResult:
    import torch

    from ..models import load_model

    data = load_align_data(cfg)  # a bad row fails here, with nothing written
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(cfg.model, base_adapter=cfg.base_adapter, dtype=cfg.dtype,
                                  device="cpu")
    train_pairs, held_pairs, rejected = build_pairs(cfg, tokenizer, data)
    eval_items = data.eval_items
    encoded, dropped = encode_pairs(tokenizer, train_pairs, append_eos=cfg.append_eos,
                                    max_length=cfg.max_length)
    if not encoded:
        raise DataError(f"no training pair fits --max-length {cfg.max_length}")
    held_pairs = _sample(held_pairs, cfg.retention_limit, cfg.seed)
    identity = fingerprint(cfg, train_pairs)
    # refused here, before anything is written
    last = resume_point(ckpt_dir, resume, identity, field_defaults(cfg))

    folder.open()  # cleared first with --overwrite; config.yaml written
    if not resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # a fresh run never mixes with an old one's checkpoints
    atomic_write_text(out / "train_pairs.jsonl", pairs_to_jsonl(train_pairs))
    atomic_write_text(out / "heldout_pairs.jsonl", pairs_to_jsonl(held_pairs))
    if rejected:
        atomic_write_text(out / "rejected.jsonl", _rejected_text(rejected))
        log.warning("%d preference rows rejected; reasons in %s", len(rejected),
                    out / "rejected.jsonl")

    calibration = None
    if cfg.calibration_weight > 0:
        calibration = calibration_setup(tokenizer, encoded, train_pairs, data.train_items, cfg)
    clock = TrainingClock.resuming(last)
    trainer = make_dpo_trainer(model, tokenizer, encoded, cfg, str(ckpt_dir),
                               callbacks=[sealing_callback(identity, clock), *(callbacks or [])],
                               calibration=calibration,
                               resume_from=str(last) if last else None)
    estep = next((c for c in trainer.callback_handler.callbacks if isinstance(c, EStepCallback)),
                 None)
    if estep is not None:  # --calibration-weight: its E-steps are part of the cost
        clock.estep_seconds = lambda: estep.seconds
    finish_saves_first(trainer)
    clock.start()
    trainer.train(resume_from_checkpoint=last)
    train_seconds = (clock.seconds() or {}).get("train")
    save_adapter(trainer, out / "adapter")
    atomic_write_json(out / "train_log.json", trainer.state.log_history)
    reg_state = getattr(trainer, "reg_state", None)
    if reg_state is not None:  # the E-steps of --calibration-weight: bins, train accuracy/ECE
        atomic_write_json(out / "estep_history.json", reg_state.history)

    model = trainer.model.eval()
    before = None
    if cfg.eval_before:
        with model.disable_adapter():
            before = evaluate_items(model, tokenizer, eval_items, cfg, out / "eval_before",
                                    f"{cfg.model} before {cfg.loss}")
    after = evaluate_items(model, tokenizer, eval_items, cfg, out / "eval",
                           f"{cfg.model} after {cfg.loss}")
    retention = None
    if cfg.retention and held_pairs:
        report = retention_report(model, tokenizer, held_pairs, append_eos=cfg.append_eos)
        retention = report.to_dict()
        atomic_write_json(out / "retention.json", retention)

    keys = ("accuracy", "mean_confidence", "ece", "cw_ece")
    summary = {"method": cfg.loss, "beta": cfg.beta,
               "calibration_weight": cfg.calibration_weight, "train_pairs": len(encoded),
               "dropped_pairs": len(dropped), "rejected_rows": len(rejected),
               "heldout_pairs": len(held_pairs), "eval_items": len(eval_items),
               "train_seconds": rounded(train_seconds), "steps": trainer.state.global_step,
               "after": {k: after[k] for k in keys}}
    if before:
        summary["before"] = {k: before[k] for k in keys}
    if retention:
        summary["retention"] = {
            "preference_accuracy_tuned": retention["preference_tuned"]["accuracy"],
            "preference_accuracy_reference": retention["preference_reference"]["accuracy"],
            "mean_margin_tuned": retention["preference_tuned"]["mean_margin"],
            "mean_margin_reference": retention["preference_reference"]["mean_margin"],
            "mean_kl_reference_tuned": retention["kl_reference_tuned"]["mean_kl"],
            **{f"preference_accuracy_change{suffix}":
               retention["change_tuned_minus_reference"]["accuracy"][key]
               for suffix, key in (("", "estimate"), ("_low", "low"), ("_high", "high"))}}
    atomic_write_json(out / "summary.json", summary)
    write_align_page(out, cfg, summary, retention)
    log.info("alignment summary: %s", json.dumps(summary))
    return AlignResult(out, before, after, retention, train_seconds, len(encoded), len(dropped))


def _preference_line(name: str, p: dict) -> str:
    ci = p.get("ci", {})
    acc, mar = ci.get("accuracy"), ci.get("mean_margin")
    acc_s = f"{p['accuracy']:.3f}" + (f" [{acc['low']:.3f}, {acc['high']:.3f}]" if acc else "")
    mar_s = f"{p['mean_margin']:.2f}" + (f" [{mar['low']:.2f}, {mar['high']:.2f}]" if mar else "")
    return f"{name}: preference accuracy {acc_s}, mean margin {mar_s} nats ({p['n']} pairs)"


def describe_preferences(metrics: dict) -> list[str]:
    """Readable lines for a preferences.json / retention.json: accuracy and margin with 95%
    intervals, of the tuned and the reference model, their paired change, and the KL."""
    if "preference" in metrics:
        return [_preference_line("model", metrics["preference"])]
    lines = [_preference_line("tuned", metrics["preference_tuned"]),
             _preference_line("reference", metrics["preference_reference"])]
    change = metrics.get("change_tuned_minus_reference")
    if change:
        a, m = change["accuracy"], change["mean_margin"]
        lines.append(f"tuned - reference: accuracy {a['estimate']:+.3f} [{a['low']:+.3f}, "
                     f"{a['high']:+.3f}], margin {m['estimate']:+.2f} [{m['low']:+.2f}, "
                     f"{m['high']:+.2f}] (paired bootstrap)")
    kl = metrics["kl_reference_tuned"]
    lines.append(f"KL(reference || tuned), next token after each prompt: mean {kl['mean_kl']:.4f}, "
                 f"max {kl['max_kl']:.4f} nats ({kl['n']} prompts)")
    return lines


def _ci_text(value: float, ci: dict | None, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text + (f" [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]" if ci else "")


def preference_blocks(metrics: dict) -> list:
    """report.html blocks of a preferences.json / retention.json: preference accuracy and mean
    margin with their 95% intervals, the paired change and the KL, as `describe_preferences`
    prints them."""
    from ..report.html import Heading, Paragraph, Table

    rows = []
    for name, key in (("model", "preference"), ("tuned", "preference_tuned"),
                      ("reference", "preference_reference")):
        if key in metrics:
            p, ci = metrics[key], metrics[key].get("ci", {})
            rows.append([name, p["n"], _ci_text(p["accuracy"], ci.get("accuracy"), 3),
                         _ci_text(p["mean_margin"], ci.get("mean_margin"), 2)])
    blocks: list = [Heading("Preference accuracy"),
                    Paragraph("Share of pairs whose chosen response has the higher summed "
                              "log-probability, and the mean margin (nats), with 95% bootstrap "
                              "intervals over pairs."),
                    Table(["model", "pairs", "accuracy [95%]", "mean margin [95%]"], rows)]
    change = metrics.get("change_tuned_minus_reference")
    if change:
        a, m = change["accuracy"], change["mean_margin"]
        blocks += [Heading("Tuned − reference (paired bootstrap)"),
                   Table(["Δ accuracy [95%]", "Δ margin [95%]"],
                         [[_ci_text(a["estimate"], a, 3), _ci_text(m["estimate"], m, 2)]])]
    kl = metrics.get("kl_reference_tuned")
    if kl:
        blocks += [Heading("KL(reference ‖ tuned), next token after each prompt"),
                   Table(["prompts", "mean KL (nats)", "max KL (nats)"],
                         [[kl["n"], f"{kl['mean_kl']:.4f}", f"{kl['max_kl']:.4f}"]])]
    return blocks


def write_preference_page(out: Path, title: str, metrics: dict, context: dict) -> None:
    """OUT/report.html of an `eval --preferences` run."""
    from ..report.html import render_html

    atomic_write_text(out / "report.html", render_html(title, preference_blocks(metrics),
                                                       context=context))


def write_align_page(out: Path, cfg: AlignConfig, summary: dict, retention: dict | None) -> None:
    """OUT/report.html of an align run: calibration before/after on the held-out MCQ items (each
    with its own page in eval_before/ and eval/) and the retention check."""
    from ..report.html import Heading, Paragraph, Table, render_html

    keys = ("accuracy", "mean_confidence", "ece", "cw_ece")
    rows = [[when, *[f"{summary[when][k]:.4f}" for k in keys]]
            for when in ("before", "after") if when in summary]
    blocks: list = [Heading("Held-out MCQ items"),
                    Paragraph("The model with the adapter disabled (before) and enabled (after); "
                              "each evaluation's own page, with intervals and diagrams, is "
                              "eval_before/report.html and eval/report.html."),
                    Table(["", *keys], rows)]
    if retention:
        blocks += preference_blocks(retention)
    loss = f"{cfg.loss} (β {cfg.beta})"
    if cfg.calibration_weight:
        loss += f" + {cfg.calibration_weight:g} × L_ECE (calibration term)"
    context = {"model": cfg.model, "loss": loss,
               "training pairs": summary["train_pairs"], "steps": summary["steps"]}
    atomic_write_text(out / "report.html", render_html(f"calibtune align: {cfg.model}", blocks,
                                                       context=context))


@dataclass
class PreferenceEvalResult:
    folder: Path
    metrics: dict


def run_preference_eval(cfg: PreferenceEvalConfig, *, resume: bool = False,
                        overwrite: bool = False) -> PreferenceEvalResult:
    """Score preference pairs; write OUT/config.yaml, OUT/preferences.json, [rejected.jsonl]."""
    with RunFolder(cfg.out, asdict(cfg), command="eval --preferences", resume=resume,
                   overwrite=overwrite) as folder:
        return _preference_eval_into(folder, cfg)


def _preference_eval_into(folder: RunFolder, cfg: PreferenceEvalConfig) -> PreferenceEvalResult:
    from ..models import load_model
    from ..align.retention import preference_accuracy

    if cfg.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.preferences != HHH:  # bad rows fail before the model loads
        load_preference_source(cfg.preferences, skip_invalid=cfg.skip_invalid)
    model, tokenizer = load_model(cfg.model, adapter=cfg.adapter, base_adapter=cfg.base_adapter,
                                  dtype=cfg.dtype, device=cfg.device,
                                  trust_remote_code=cfg.trust_remote_code)
    loaded = load_preference_source(cfg.preferences, style=cfg.prompt, tokenizer=tokenizer,
                                    skip_invalid=cfg.skip_invalid)
    pairs = _sample(loaded.pairs, cfg.limit, cfg.seed)
    if cfg.adapter:
        report = retention_report(model, tokenizer, pairs, batch_size=cfg.batch_size,
                                  append_eos=cfg.append_eos)
        metrics = report.to_dict()
    else:
        metrics = {"preference": preference_accuracy(model, tokenizer, pairs,
                                                     batch_size=cfg.batch_size,
                                                     append_eos=cfg.append_eos).to_dict()}
    metrics["source"] = loaded.source
    metrics["rejected_rows"] = len(loaded.rejected)
    out = folder.open()
    if loaded.rejected:
        atomic_write_text(out / "rejected.jsonl", _rejected_text(loaded.rejected))
    atomic_write_json(out / "preferences.json", metrics)
    write_preference_page(out, f"calibtune eval --preferences: {cfg.model}", metrics,
                          {"preferences": f"{cfg.preferences} ({loaded.source})",
                           "adapter": cfg.adapter or "none"})
    return PreferenceEvalResult(out, metrics)
