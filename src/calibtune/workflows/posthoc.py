"""`calibtune posthoc`: fit a calibrator on one split of saved scores, report on the rest."""
from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np

from ..calibrators import DACATemperature, make_calibrator
from ..data.splits import split_indices
from ..errors import ConfigError
from ..integrity import atomic_write_json, atomic_write_text
from ..report.html import Figure, Heading, Paragraph, Table
from ..report.plots import prepare_reliability, save_overlay
from ..run_guard import RunFolder
from ..option_scores import OptionScores, evaluate
from .config import PosthocConfig
from .run_folder import RunOutputs, write_page, write_run

log = logging.getLogger(__name__)


def calibrated_scores(scores: OptionScores, probs: np.ndarray, meta: dict) -> OptionScores:
    """Scores whose 'logits' are log-probabilities, so softmax gives back `probs`."""
    logp = np.log(np.clip(probs, 1e-300, 1.0))
    return OptionScores(np.where(scores.mask, logp, 0.0), scores.labels, scores.mask, scores.ids,
                        scores.meta | meta, scores.groups)


def scoring_mode(scores: OptionScores) -> str:
    """How the scores were made: 'letter', or 'cloze (norm)' (older files: letter)."""
    mode = scores.meta.get("scoring") or "letter"
    return f"cloze ({scores.meta.get('cloze_norm') or 'none'})" if mode == "cloze" else mode


def check_scoring(scores: OptionScores, cfg: PosthocConfig) -> None:
    """A calibrator fitted on letter scores means nothing on cloze scores, and vice versa."""
    from ..scoring.base import SCORINGS

    if cfg.scoring and cfg.scoring not in SCORINGS:
        raise ConfigError(f"--scoring must be {' or '.join(SCORINGS)}, got {cfg.scoring!r}")
    mode = scoring_mode(scores)
    if cfg.scoring and not mode.startswith(cfg.scoring):
        raise ConfigError(f"{cfg.scores} holds {mode} scores, not --scoring {cfg.scoring}")
    k = n_fewshot(scores)
    if cfg.num_fewshot is not None and k != cfg.num_fewshot:
        raise ConfigError(f"{cfg.scores} holds {k}-shot scores, not --num-fewshot "
                          f"{cfg.num_fewshot}")


def n_fewshot(scores: OptionScores) -> int:
    """The exemplars per prompt the scores were made with (0: zero-shot)."""
    return int(scores.meta.get("num_fewshot") or 0)


def fit_note(params: dict) -> str:
    """One sentence for the report when a temperature fit stopped at a limit, else ''."""
    if params.get("at_bound") == "upper":
        return ("**Temperature fit: T = ∞.** NLL keeps falling all the way to the uniform "
                "distribution: the logits carry no information about correctness on the fit "
                "items, so the calibrated probabilities are uniform (confidence 1/K).")
    if params.get("at_bound") == "lower":
        return (f"**Temperature fit stopped at its lower bound T = "
                f"{params.get('min_temperature')}**; the optimum may lie below it.")
    return ""


def run_posthoc(cfg: PosthocConfig, *, resume: bool = False, overwrite: bool = False
                ) -> RunOutputs:
    """Fit, report and write the run folder `cfg.out` (a folder holding another run is refused
    unless `overwrite`; `resume` rewrites a run of the same settings)."""
    with RunFolder(cfg.out, asdict(cfg), command="posthoc", resume=resume,
                   overwrite=overwrite) as folder:
        return _posthoc_into(folder, cfg)


def _posthoc_into(folder: RunFolder, cfg: PosthocConfig) -> RunOutputs:
    if not cfg.scores:
        raise ConfigError("--scores is required")
    scores = OptionScores.load(cfg.scores)
    check_scoring(scores, cfg)
    fit_idx, report_idx = split_indices(len(scores), cfg.fit_fraction, cfg.seed, "--fit-fraction")
    fit, report = scores.subset(fit_idx), scores.subset(report_idx)
    if cfg.method == "daca":
        if not cfg.reference:
            raise ConfigError("--method daca needs --reference BASE_SCORES.npz (the base model's "
                              "scores on the same items)")
        ref = OptionScores.load(cfg.reference)
        if ref.ids.tolist() != scores.ids.tolist():
            raise ConfigError(f"{cfg.reference} scores other items than {cfg.scores}; score the "
                              "same items with both models")
        if scoring_mode(ref) != scoring_mode(scores) or n_fewshot(ref) != n_fewshot(scores):
            raise ConfigError(f"{cfg.reference} holds {n_fewshot(ref)}-shot {scoring_mode(ref)} "
                              f"scores but {cfg.scores} {n_fewshot(scores)}-shot "
                              f"{scoring_mode(scores)}; score both models the same way")
        cal = DACATemperature().fit_unsupervised(fit.logits, ref.subset(fit_idx).logits, fit.mask)
    else:
        if cfg.reference:
            raise ConfigError("--reference is only used by --method daca")
        cal = make_calibrator(cfg.method).fit(fit.logits, fit.labels, fit.mask)
    after = calibrated_scores(report, cal.transform(report.logits, report.mask),
                              {"calibrator": cfg.method})
    before = evaluate(report, n_bins=cfg.n_bins, n_boot=cfg.n_boot, seed=cfg.seed)
    out = folder.open()
    cal.save(out / "calibrator.json")
    atomic_write_json(out / "before_metrics.json", before)
    params = cal.fitted_params()
    extra = {"calibrator": {"method": cfg.method, **params},
             "n_fit": int(len(fit_idx)), "n_report": int(len(report_idx)),
             "before": {k: before[k] for k in ("accuracy", "mean_confidence", "ece", "cw_ece",
                                               "nll", "brier")}}
    if "temperature" in params:
        extra["temperature"] = params["temperature"]  # inf is written as null, see at_bound
        extra["temperature_at_bound"] = params["at_bound"]
    context = {"scores": cfg.scores, "scoring": scoring_mode(scores), "method": cfg.method,
               "fit items": len(fit_idx), "report items": len(report_idx), "seed": cfg.seed}
    if n_fewshot(scores):  # provenance: the scores were made few-shot
        context["few-shot"] = n_fewshot(scores)
    result = write_run(out, after, title=f"calibtune posthoc — {cfg.method}",
                       context=context,
                       n_bins=cfg.n_bins, n_boot=cfg.n_boot, seed=cfg.seed, label=cfg.method,
                       extra_metrics=extra)
    save_overlay([prepare_reliability(report.probs(), report.labels, report.mask, cfg.n_bins,
                                      "before"),
                  prepare_reliability(after.probs(), after.labels, after.mask, cfg.n_bins,
                                      cfg.method)], out / "before_after.png")
    rows = "\n".join(f"| {k} | {before[k]:.4f} | {result.metrics[k]:.4f} |"
                     for k in ("accuracy", "mean_confidence", "ece", "cw_ece", "nll", "brier"))
    report_md = (out / "report.md").read_text(encoding="utf-8")
    note = fit_note(params)
    atomic_write_text(out / "report.md", report_md + (f"\n{note}\n" if note else "") + (
        f"\n## Before and after, on the {len(report_idx)} held-out items\n\n"
        f"| metric | before | after |\n|---|---|---|\n{rows}\n\n"
        "![before vs after](before_after.png)\n"))
    keys = ("accuracy", "mean_confidence", "ece", "cw_ece", "nll", "brier")
    table = [[k, float(before[k]), float(result.metrics[k])] for k in keys]
    for method in ("lac", "aps"):
        b, a = (before.get("conformal") or {}).get(method), \
            (result.metrics.get("conformal") or {}).get(method)
        if a and b:
            table += [[f"{method.upper()} coverage (α {a['alpha']})", b["coverage"], a["coverage"]],
                      [f"{method.upper()} mean set size", b["mean_set_size"], a["mean_set_size"]]]
    blocks = ([Paragraph(note, "warning")] if note else []) + [
        Heading(f"Before and after, on the {len(report_idx)} held-out items"),
        Table(["metric", "before", "after"], table, sortable=False),
        Figure(out / "before_after.png", "reliability before and after")]
    write_page(out, result.metrics, title=f"calibtune posthoc — {cfg.method}",
               context=context,
               figures=["reliability.png", "classwise.png"], extra_blocks=blocks)
    return result
