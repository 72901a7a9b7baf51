"""Prevent or restore: calibrating while aligning against aligning, then restoring calibration.

    python experiments/prevent_or_restore.py --out runs/por                       # everything
    python experiments/prevent_or_restore.py --out runs/por --models smollm2-135m-instruct \\
        --settings mmlu-letter --seeds 0 1 2                                     # one slice
    python experiments/prevent_or_restore.py --out runs/por --table-only          # re-read

From the same start model and the same preference pairs (the collapse study's settings of
experiments/collapse_study.py: 120 training pairs built from MCQ training items, 200 held-out
items, LoRA r 16 / α 32, DPO β 0.1 at lr 5e-4 for 2 epochs), for each seed:

- **DPO** (`calibtune align`);
- **DPO + calibration term** at each `--weights` λ (`align --calibration-weight λ`);
- **DPO → CFT** and **DPO → RCFT** (`train --base-adapter` the DPO adapter, 2 epochs on the same
  training items), with their preference accuracy on the DPO run's held-out pairs;
- **DPO → RCFT m=M** for each `--rcft-bin-priors` M (none by default): RCFT with
  `--ece-bin-prior M` (M pseudo-items at the training accuracy in every bin of its E-step);
- **DPO → temperature**: temperature scaling of the DPO'd model's held-out scores, cross-fitted
  (fit on one seeded half, apply to the other, and the reverse: every item's probabilities come
  from a fit that never saw it); out of domain, the temperature fitted on all in-domain items.

Every arm is also scored out of domain (`--ood`: MedMCQA for MMLU, QuaRTz for SocialIQA, in the
setting's scoring mode). The table reports, per arm, the mean over seeds and the seed spread
(SD) of accuracy, ECE, cw-ECE, option entropy, top-option share, preference accuracy and margin
on the held-out pairs and training time, and the paired-bootstrap ΔECE / Δaccuracy against DPO
on the same items, per seed. Stages are run folders under OUT/<model>/<setting>[-seedN] shared
with collapse_study.py's layout (a finished stage is kept, a partial one resumed). The JSON
(`--json`) is the study's record: a record (model, setting, seed, domain, arm) that the run
folders hold replaces its stored one, and the others are kept (`--fresh`: run folders alone).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from collapse_study import LORA, SETTINGS, calibtune, read_preferences  # noqa: E402

from calibtune.calibrators import TemperatureScaling  # noqa: E402
from calibtune.integrity import atomic_write_json  # noqa: E402
from calibtune.metrics.paired import compare_scores  # noqa: E402
from calibtune.option_scores import OptionScores, evaluate  # noqa: E402
from calibtune.theory.posthoc import halves  # noqa: E402
from calibtune.workflows.posthoc import calibrated_scores  # noqa: E402

OOD = {"mmlu-letter": ["--data", "medmcqa", "--split", "all", "--scoring", "letter",
                       "--prompt", "plain"],
       "socialiqa-cloze": ["--data", "quartz", "--split", "all", "--scoring", "cloze",
                           "--cloze-norm", "token"]}
BETA = 0.1


def base_folder(out: Path, model: str, setting: str, seed: int) -> Path:
    return out / Path(model).name / (setting + (f"-seed{seed}" if seed else ""))


def arm_folders(base: Path, weights: Sequence[float], priors: Sequence[float] = ()
                ) -> dict[str, dict]:
    """Each arm's run folder, its held-out scores, its preference file and how to load it
    (`priors`: the RCFT --ece-bin-prior arms)."""
    dpo = base / f"dpo-b{BETA:g}"
    arms = {"DPO": {"run": dpo, "eval": dpo / "eval", "pref": dpo / "retention.json",
                    "adapter": ["--adapter", str(dpo / "adapter")]}}
    for w in weights:
        run = base / f"dpo-b{BETA:g}-cal{w:g}"
        arms[f"DPO + L_ECE λ={w:g}"] = {"run": run, "eval": run / "eval",
                                        "pref": run / "retention.json",
                                        "adapter": ["--adapter", str(run / "adapter")]}
    for method, label, _ in restores(priors):
        run = base / f"dpo-b{BETA:g}-{method}"
        arms[f"DPO → {label}"] = {
            "run": run, "eval": run / "eval", "pref": base / f"pairs-{method}" / "preferences.json",
            "adapter": ["--base-adapter", str(dpo / "adapter"), "--adapter",
                        str(run / "adapter")]}
    arms["DPO → temperature"] = {"run": base / "temperature", "eval": base / "temperature",
                                 "pref": dpo / "retention.json", "adapter": None}
    return arms


def restores(priors: Sequence[float]) -> list[tuple[str, str, list[str]]]:
    """(folder suffix, arm label, `calibtune train` flags) of each restore arm: CFT, RCFT, then
    RCFT at each bin prior."""
    return [("cft", "CFT", ["--method", "cft"]), ("rcft", "RCFT", ["--method", "rcft"]),
            *((f"rcft-prior{m:g}", f"RCFT m={m:g}", ["--method", "rcft", "--ece-bin-prior", f"{m:g}"])
              for m in priors)]


def found_priors(base: Path) -> list[float]:
    """The RCFT bin priors that `base` holds run folders of (so a table finds them unasked)."""
    found = []
    for p in base.glob(f"dpo-b{BETA:g}-rcft-prior*"):
        try:
            found.append(float(p.name.rsplit("-prior", 1)[1]))
        except ValueError:  # not a study folder (a renamed copy): left out
            continue
    return sorted(m for m in found if m > 0)


def stages(out: Path, model: str, setting: str, seed: int, a: argparse.Namespace) -> None:
    base = base_folder(out, model, setting, seed)
    data = SETTINGS[setting]
    sizes = ["--train-limit", str(a.train_limit), "--eval-limit", str(a.eval_limit),
             "--seed", str(seed)]
    dpo = base / f"dpo-b{BETA:g}"
    common = ["--model", model, *data, *sizes, *LORA, "--beta", str(BETA),
              "--epochs", str(a.dpo_epochs), "--learning-rate", str(a.dpo_learning_rate)]
    calibtune(["align", *common], dpo / "summary.json", dpo)
    dpo_model = ["--model", model, "--base-adapter", str(dpo / "adapter")]
    for method, _, flags in restores(a.rcft_bin_priors):
        run = base / f"dpo-b{BETA:g}-{method}"
        calibtune(["train", *dpo_model, *data, *sizes, *LORA, *flags,
                   "--epochs", str(a.restore_epochs)], run / "summary.json", run)
        kept = base / f"pairs-{method}"
        calibtune(["eval", *dpo_model, "--adapter", str(run / "adapter"), "--preferences",
                   str(dpo / "heldout_pairs.jsonl")], kept / "preferences.json", kept)
    for w in a.weights:
        run = base / f"dpo-b{BETA:g}-cal{w:g}"
        calibtune(["align", *common, "--calibration-weight", str(w), "--no-eval-before"],
                  run / "summary.json", run)
    temperature_stage(base, seed)
    if a.skip_ood:
        return
    ood = [*OOD[setting], "--limit", str(a.eval_limit), "--seed", str(seed), "--n-boot", "1000"]
    start = base / "ood-start"
    calibtune(["eval", "--model", model, *ood], start / "metrics.json", start)
    for name, arm in arm_folders(base, a.weights, a.rcft_bin_priors).items():
        if arm["adapter"] is None:
            continue
        folder = base / f"ood-{arm['run'].name}"
        calibtune(["eval", "--model", model, *arm["adapter"], *ood], folder / "metrics.json",
                  folder)
    temperature_ood(base, seed)


def temperature_stage(base: Path, seed: int) -> None:
    """DPO → temperature, cross-fitted on the DPO'd model's held-out scores (two seeded halves,
    each scaled by the temperature fitted on the other)."""
    folder = base / "temperature"
    dpo_scores = base / f"dpo-b{BETA:g}" / "eval" / "scores.npz"
    if (folder / "metrics.json").exists() or not dpo_scores.exists():
        return
    s = OptionScores.load(dpo_scores)
    probs = np.zeros(s.logits.shape)
    fitted = []
    for fit_on, apply_to in zip(halves(len(s.labels), seed), reversed(halves(len(s.labels), seed))):
        ts = TemperatureScaling().fit(s.logits[fit_on], s.labels[fit_on], s.mask[fit_on])
        # the calibrator's own transform: T = inf keeps the ranking (scaling the logits by
        # β = 0 would tie every option and hand each prediction to the first)
        probs[apply_to] = ts.transform(s.logits[apply_to], s.mask[apply_to])
        fitted.append(ts.temperature_)
    out = calibrated_scores(s, probs, {"temperature": fitted})
    folder.mkdir(parents=True, exist_ok=True)
    out.save(folder / "scores.npz")
    metrics = evaluate(out, n_boot=1000, seed=seed)
    metrics["temperatures_cross_fitted"] = fitted
    atomic_write_json(folder / "metrics.json", metrics)


def temperature_ood(base: Path, seed: int) -> None:
    """Out of domain: the DPO'd model's OOD scores at the temperature fitted on all its
    in-domain held-out items."""
    folder = base / "ood-temperature"
    ood_dpo = base / f"ood-dpo-b{BETA:g}" / "scores.npz"
    dpo_scores = base / f"dpo-b{BETA:g}" / "eval" / "scores.npz"
    if (folder / "metrics.json").exists() or not ood_dpo.exists():
        return
    s = OptionScores.load(dpo_scores)
    ts = TemperatureScaling().fit(s.logits, s.labels, s.mask)
    ood = OptionScores.load(ood_dpo)
    out = calibrated_scores(ood, ts.transform(ood.logits, ood.mask), {"temperature": ts.temperature_})
    folder.mkdir(parents=True, exist_ok=True)
    out.save(folder / "scores.npz")
    metrics = evaluate(out, n_boot=1000, seed=seed)
    metrics["temperature"] = ts.temperature_
    atomic_write_json(folder / "metrics.json", metrics)


def seconds(arm_run: Path, dpo: Path) -> float | None:
    """Training wall-clock of an arm (its Trainer's, E-steps included): its own run; a restore
    (CFT, RCFT) adds the DPO run it starts from; temperature costs the DPO run (its fit takes
    milliseconds)."""
    def own(folder: Path) -> float | None:
        p = folder / "summary.json"
        return json.loads(p.read_text()).get("train_seconds") if p.exists() else None

    if arm_run.name == "temperature":
        return own(dpo)
    t = own(arm_run)
    if t is None or arm_run == dpo or "-cal" in arm_run.name:
        return t
    d = own(dpo)
    return None if d is None else t + d  # an unknown DPO cost leaves the total unknown


def metrics_fields(folder: Path) -> dict:
    """The table's calibration and collapse fields of a run folder's metrics.json."""
    m = json.loads((folder / "metrics.json").read_text())
    return {"n": m["n"], "accuracy": m["accuracy"], "ece": m["ece"], "cw_ece": m["cw_ece"],
            "mean_confidence": m["mean_confidence"],
            "option_entropy": m["collapse"].get("option_entropy"),
            "top_pred_share": m["collapse"]["top_pred_share"]}


def arm_row(base: Path, name: str, arm: dict, ood: bool) -> dict | None:
    dpo = base / f"dpo-b{BETA:g}"
    folder = arm["eval"]
    if ood:
        folder = base / (f"ood-{arm['run'].name}" if arm["adapter"] is not None
                         else "ood-temperature")
    if not (folder / "metrics.json").exists():
        return None
    row = {"arm": name, **metrics_fields(folder)}
    ref = base / (f"ood-dpo-b{BETA:g}" if ood else f"dpo-b{BETA:g}/eval")
    if name != "DPO" and (ref / "scores.npz").exists():
        c = compare_scores(OptionScores.load(ref / "scores.npz"),
                           OptionScores.load(folder / "scores.npz"), seed=0)
        for key in ("ece", "accuracy", "cw_ece"):
            d = c.deltas[key]
            row[f"d_{key}"] = [d.estimate, d.low, d.high]
    if not ood and arm["pref"].exists():
        t = read_preferences(arm["pref"])
        tuned = t["preference_tuned"]
        row |= {"pref_acc": tuned["accuracy"], "margin": tuned["mean_margin"]}
        if "kl_reference_tuned" in t and arm["pref"].name == "retention.json":
            row["kl_to_start"] = t["kl_reference_tuned"]["mean_kl"]
    if not ood:
        row["train_seconds"] = seconds(arm["run"], dpo)
    return row


def start_row(base: Path, ood: bool) -> dict | None:
    folder = base / ("ood-start" if ood else f"dpo-b{BETA:g}/eval_before")
    if not (folder / "metrics.json").exists():
        return None
    row = {"arm": "start", **metrics_fields(folder)}
    ret = base / f"dpo-b{BETA:g}" / "retention.json"
    if not ood and ret.exists():
        t = read_preferences(ret)["preference_reference"]
        row |= {"pref_acc": t["accuracy"], "margin": t["mean_margin"], "kl_to_start": 0.0}
    return row


def collect(out: Path, weights: list[float]) -> list[dict]:
    """One record per (model, setting, seed, domain, arm)."""
    records = []
    for model_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        for base in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            setting, _, seed = base.name.partition("-seed")
            for ood in (False, True):
                rows = [start_row(base, ood)]
                rows += [arm_row(base, name, arm, ood)
                         for name, arm in arm_folders(base, weights, found_priors(base)).items()]
                for r in rows:
                    if r is not None:
                        records.append({"model": model_dir.name, "setting": setting,
                                        "seed": int(seed or 0),
                                        "domain": "out-of-domain" if ood else "in-domain", **r})
    return records


def merge(stored: list[dict], fresh: list[dict]) -> list[dict]:
    """The stored records, with every (model, setting, seed, domain, arm) that the run folders hold
    replaced by its fresh record: run folders are scratch (not kept in the repository), the JSON is
    the study's record, so a seed, an arm or a domain measured in an earlier checkout stays in the
    table when a later run does not hold it (--skip-ood, other --weights, an unfinished seed)."""
    def key(r: dict) -> tuple:
        return r["model"], r["setting"], r["seed"], r["domain"], r["arm"]

    measured = {key(r) for r in fresh}
    merged = [r for r in stored if key(r) not in measured] + fresh
    order: dict[str, int] = {}  # arms in the order first seen (start, DPO, …, temperature)
    for r in stored + fresh:
        order.setdefault(r["arm"], len(order))
    return sorted(merged, key=lambda r: (r["model"], r["setting"], r["seed"],
                                         r["domain"] != "in-domain", order[r["arm"]]))


def mean_sd(values: list[float], digits: int = 3) -> str:
    v = np.array([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return ""
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def delta_text(ds: list[list[float]]) -> str:
    """Mean paired Δ over seeds, then each seed's 95% paired-bootstrap interval."""
    if not ds:
        return ""
    mean = np.mean([d[0] for d in ds])
    per = "; ".join(f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" for d in ds)
    return f"{mean:+.3f} ({per})"


def markdown(records: list[dict]) -> str:
    lines = []
    keys = sorted({(r["model"], r["setting"], r["domain"]) for r in records},
                  key=lambda k: (k[0], k[1], k[2] != "in-domain"))
    for model, setting, domain in keys:
        rows = [r for r in records if (r["model"], r["setting"], r["domain"]) ==
                (model, setting, domain)]
        seeds = sorted({r["seed"] for r in rows})
        lines += ["", f"#### {model}, {setting}, {domain} (seeds {', '.join(map(str, seeds))}; "
                      "mean ± SD over seeds; Δ vs DPO: mean over seeds, then each seed's paired "
                      "95% interval)", ""]
        cols = ["arm", "seeds", "accuracy", "ECE", "ΔECE vs DPO", "cw-ECE", "Δaccuracy vs DPO",
                "option entropy", "top-option share"]
        if domain == "in-domain":
            cols += ["pref. acc.", "margin (nats)", "train s"]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        arms = list(dict.fromkeys(r["arm"] for r in rows))
        for arm in arms:
            rs = [r for r in rows if r["arm"] == arm]
            cells = [arm, str(len(rs)), mean_sd([r["accuracy"] for r in rs]),
                     mean_sd([r["ece"] for r in rs]),
                     delta_text([r["d_ece"] for r in rs if "d_ece" in r]),
                     mean_sd([r["cw_ece"] for r in rs]),
                     delta_text([r["d_accuracy"] for r in rs if "d_accuracy" in r]),
                     mean_sd([r["option_entropy"] for r in rs]),
                     mean_sd([r["top_pred_share"] for r in rs])]
            if domain == "in-domain":
                timed = [r["train_seconds"] for r in rs if r.get("train_seconds") is not None]
                cells += [mean_sd([r.get("pref_acc") for r in rs]),
                          mean_sd([r.get("margin") for r in rs], 2),
                          mean_sd(timed, 0) + (f" ({len(timed)} of {len(rs)} seeds)"
                                               if timed and len(timed) < len(rs) else "")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_sd(v: np.ndarray) -> float:
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def plane(records: list[dict], path: Path) -> None:
    """The trade-off a user faces: (preference accuracy, ECE) and (accuracy, ECE) per arm, in
    domain, mean over seeds with the seed SD as error bars; one row of panels per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ins = [r for r in records if r["domain"] == "in-domain"]
    groups = sorted({(r["model"], r["setting"]) for r in ins})
    if not groups:
        return
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 4.2 * len(groups)), squeeze=False)
    for (model, setting), ax_row in zip(groups, axes):
        rows = [r for r in ins if (r["model"], r["setting"]) == (model, setting)]
        arms = list(dict.fromkeys(r["arm"] for r in rows))
        for ax, xkey, xlabel in ((ax_row[0], "pref_acc", "preference accuracy (held-out pairs)"),
                                 (ax_row[1], "accuracy", "held-out accuracy")):
            for i, arm in enumerate(arms):
                rs = [r for r in rows if r["arm"] == arm and r.get(xkey) is not None]
                if not rs:
                    continue
                x = np.array([r[xkey] for r in rs])
                y = np.array([r["ece"] for r in rs])
                ax.errorbar(x.mean(), y.mean(), xerr=seed_sd(x), yerr=seed_sd(y), fmt="o", capsize=3,
                            color=f"C{i}", label=arm)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("held-out ECE")
            ax.set_title(f"{model}, {setting}", fontsize=10)
            ax.grid(alpha=0.3)
        ax_row[0].legend(fontsize=8)
        if len(ax_row[1].get_lines()) != len(ax_row[0].get_lines()):  # an arm without pref. acc.
            ax_row[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/por"))
    p.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma-3-270m"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--weights", nargs="+", type=float, default=[1.0, 4.0],
                   help="λ of the calibration term (one DPO + L_ECE arm each)")
    p.add_argument("--rcft-bin-priors", nargs="+", type=float, default=[],
                   help="an extra DPO → RCFT arm per --ece-bin-prior M (default: none)")
    p.add_argument("--train-limit", type=int, default=120)
    p.add_argument("--eval-limit", type=int, default=200)
    p.add_argument("--dpo-epochs", type=float, default=2.0)
    p.add_argument("--dpo-learning-rate", type=float, default=5e-4)
    p.add_argument("--restore-epochs", type=float, default=2.0)
    p.add_argument("--skip-ood", action="store_true")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--fresh", action="store_true",
                   help="build the JSON from the run folders alone (default: keep the stored "
                        "records that no run folder holds)")
    p.add_argument("--json", type=Path, default=Path("experiments/results/prevent_or_restore.json"))
    p.add_argument("--plot", type=Path, default=Path("docs/img/prevent_or_restore.png"))
    a = p.parse_args()
    if any(not m > 0 for m in a.rcft_bin_priors):
        p.error("--rcft-bin-priors: each M must be > 0 (M = 0 is the plain RCFT arm)")
    if not a.table_only:
        for model in a.models:
            for setting in a.settings:
                if model.startswith("gemma") and setting == "mmlu-letter":
                    continue  # the collapse study's settings: Gemma base on SocialIQA only
                for seed in a.seeds:
                    stages(a.out, model, setting, seed, a)
    stored = json.loads(a.json.read_text()) if a.json.exists() and not a.fresh else []
    records = merge(stored, collect(a.out, a.weights) if a.out.exists() else [])
    a.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.json, records)
    plane(records, a.plot)
    print(markdown(records))


if __name__ == "__main__":
    main()
