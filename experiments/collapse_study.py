"""The preference-collapse study of docs/alignment.md, as a chain of `calibtune` commands.

    python experiments/collapse_study.py --out runs/collapse                  # everything
    python experiments/collapse_study.py --out runs/collapse --models smollm2-135m-instruct \\
        --settings mmlu-letter --skip-hhh                                     # one slice
    python experiments/collapse_study.py --out runs/collapse --table-only      # re-read the table

The defaults are the sizes of docs/alignment.md's tables: 120 training items (pairs), 200
held-out items, DPO at lr 5e-4 for 2 epochs, β 0.01 / 0.1 / 1, seed 0. For each model and
setting: the starting model on the training items (`eval --split train`, same seeded sample);
DPO (`calibtune align`, LoRA) at every β, each run scoring the held-out items before (adapter
off: the starting model) and after and measuring retention on held-out pairs; the DPO'd model
on its training items; then CFT and RCFT on top of the DPO'd model at `--restore-beta`
(`train --base-adapter`), their preference retention on the DPO run's held-out pairs relative
to the DPO'd model, and on hhh_alignment (`eval --preferences`), with the DPO'd model's hhh
retention relative to the start. Base models can go through SFT first (`--sft-first`).

Every stage is a run folder under OUT/<model>/<setting>[-seedN]; a finished one (its
summary.json / metrics.json / preferences.json exists) is skipped, a partial one resumed, so
the script can be stopped and run again. The table (accuracy, mean confidence, ECE with the
paired-bootstrap ΔECE against the start and against each stage's own starting model, cw-ECE,
the collapse measures, preference accuracy, margin and KL, with 95% intervals) is printed as
Markdown and written as JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from calibtune.align.retention import RetentionReport
from calibtune.metrics.paired import compare_scores
from calibtune.scores import OptionScores

SETTINGS = {
    "mmlu-letter": ["--data", "mmlu", "--split", "train", "--eval-split", "test",
                    "--scoring", "letter", "--prompt", "plain"],
    "socialiqa-cloze": ["--data", "socialiqa", "--split", "train", "--eval-split", "test",
                        "--scoring", "cloze", "--cloze-norm", "token"],
}
LORA = ["--lora-r", "16", "--lora-alpha", "32"]


def calibtune(args: list[str], done: Path, folder: Path) -> None:
    """Run one stage unless `done` exists; resume it when its folder already holds a start."""
    if done.exists():
        print(f"kept  {folder}", flush=True)
        return
    resume = ["--resume"] if folder.exists() else []
    cmd = ["calibtune", *args, "--out", str(folder), *resume]
    print("run   " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def stages(out: Path, model: str, setting: str, a: argparse.Namespace) -> None:
    base = out / Path(model).name / (setting + (f"-seed{a.seed}" if a.seed else ""))
    data = SETTINGS[setting]
    sizes = ["--train-limit", str(a.train_limit), "--eval-limit", str(a.eval_limit),
             "--seed", str(a.seed)]
    start = []
    if a.sft_first:
        sft = base / "sft"
        calibtune(["train", "--model", model, *data, *sizes, *LORA, "--method", "sft",
                   "--epochs", str(a.sft_epochs)], sft / "summary.json", sft)
        start = ["--base-adapter", str(sft / "adapter")]
    split_train = ["--data", data[1], "--split", "train", "--limit", str(a.train_limit),
                   "--seed", str(a.seed), *data[6:]]
    start_on_train = base / "start-train-items"
    calibtune(["eval", "--model", model, *start, *split_train, "--n-boot", "1000"],
              start_on_train / "metrics.json", start_on_train)
    lr = ["--learning-rate", str(a.dpo_learning_rate)]
    for beta in a.betas:
        dpo = base / f"dpo-b{beta:g}"
        calibtune(["align", "--model", model, *start, *data, *sizes, *LORA, "--beta", str(beta),
                   "--epochs", str(a.dpo_epochs), *lr], dpo / "summary.json", dpo)
        on_train = base / f"dpo-b{beta:g}-train-items"
        calibtune(["eval", "--model", model, *start, "--adapter", str(dpo / "adapter"),
                   *split_train, "--n-boot", "1000"], on_train / "metrics.json", on_train)
    if a.restore_beta is None:
        return
    if start:  # SFT + DPO are two adapters; --base-adapter merges one
        print(f"{base}: CFT/RCFT after SFT + DPO is not run (one --base-adapter)", file=sys.stderr)
        return
    dpo = base / f"dpo-b{a.restore_beta:g}"
    dpo_model = ["--model", model, "--base-adapter", str(dpo / "adapter")]
    for method in ("cft", "rcft"):
        run = base / f"dpo-b{a.restore_beta:g}-{method}"
        calibtune(["train", *dpo_model, *data, *sizes, *LORA, "--method", method,
                   "--epochs", str(a.restore_epochs)], run / "summary.json", run)
        kept = base / f"pairs-{method}"  # the DPO'd model's held-out pairs, reference = DPO'd
        calibtune(["eval", *dpo_model, "--adapter", str(run / "adapter"), "--preferences",
                   str(dpo / "heldout_pairs.jsonl")], kept / "preferences.json", kept)
        if a.skip_hhh:
            continue
        hhh = base / f"hhh-{method}"
        calibtune(["eval", *dpo_model, "--adapter", str(run / "adapter"), "--preferences", "hhh"],
                  hhh / "preferences.json", hhh)
    if a.skip_hhh:
        return
    hhh = base / "hhh-dpo"
    calibtune(["eval", "--model", model, "--adapter", str(dpo / "adapter"),
               "--preferences", "hhh"], hhh / "preferences.json", hhh)


def ci(m: dict, key: str) -> str:
    c = m["ci"].get(key)
    return f"{m[key]:.3f}" if not c else fmt_interval(c)


def fmt_interval(c: dict, digits: int = 3) -> str:
    return f"{c['estimate']:.{digits}f} [{c['low']:.{digits}f}, {c['high']:.{digits}f}]"


def interval(d: dict, key: str, digits: int = 3) -> str:
    return fmt_interval(d["ci"][key], digits)


def paired_ece(start: Path | None, folder: Path) -> str:
    """ECE of `folder` minus ECE of the start model on the same held-out items, with a 95%
    paired-bootstrap interval (the same resampled items for both)."""
    if start is None or not (start / "scores.npz").exists():
        return ""
    d = compare_scores(OptionScores.load(start / "scores.npz"),
                       OptionScores.load(folder / "scores.npz")).deltas["ece"]
    return f"{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"


def read_preferences(path: Path) -> dict:
    """A saved retention.json / preferences.json with its intervals (recomputed from the
    per-pair values, so files written before intervals existed read the same way)."""
    return RetentionReport.from_dict(json.loads(path.read_text())).to_dict(False)


def metrics_row(folder: Path, label: str) -> dict | None:
    path = folder / "metrics.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    c = m["collapse"]
    return {"stage": label, "n": m["n"], "accuracy": ci(m, "accuracy"),
            "mean_confidence": round(m["mean_confidence"], 3), "ece": ci(m, "ece"),
            "cw_ece": ci(m, "cw_ece"), "option_entropy": round(c.get("option_entropy", float("nan")), 3),
            "top_pred_share": round(c["top_pred_share"], 3),
            "top_gold_share": round(c["top_gold_share"], 3),
            "letter_prior": "yes" if c.get("letter_prior") else "no",
            "gap_beyond_accuracy": round(c["gap_beyond_accuracy"], 3)}


def table(out: Path) -> list[dict]:
    rows = []
    for base in sorted(p for p in out.glob("*/*") if p.is_dir()):
        tag = f"{base.parent.name} / {base.name}"
        first = next(iter(sorted(base.glob("dpo-b*/eval_before"))), None)
        if first:
            row = {"setting": tag, **(metrics_row(first, "start (before DPO)") or {})}
            ret = first.parent / "retention.json"
            if ret.exists():
                t = read_preferences(ret)
                row |= {"pref_acc": interval(t["preference_reference"], "accuracy"),
                        "margin": interval(t["preference_reference"], "mean_margin", 2), "kl": 0}
            rows.append(row)
        start_rows = metrics_row(base / "start-train-items", "start-train-items")
        if start_rows:
            rows.append({"setting": tag, **start_rows})
        for run in sorted(base.glob("dpo-b*")):
            if (run / "eval").exists():
                r = metrics_row(run / "eval", run.name) or {}
                r["ece_vs_base"] = paired_ece(first, run / "eval")
                r["ece_vs_its_start"] = paired_ece(run / "eval_before", run / "eval")
                ret = run / "retention.json"
                if ret.exists():
                    t = read_preferences(ret)
                    r |= {"pref_acc": interval(t["preference_tuned"], "accuracy"),
                          "margin": interval(t["preference_tuned"], "mean_margin", 2),
                          "kl": round(t["kl_reference_tuned"]["mean_kl"], 4)}
                rows.append({"setting": tag, **r})
            elif run.name.endswith("-train-items"):
                rows.append({"setting": tag, **(metrics_row(run, run.name) or {})})
        for hhh in sorted([*base.glob("pairs-*"), *base.glob("hhh-*")]):
            p = hhh / "preferences.json"
            if p.exists():
                t = read_preferences(p)
                rows.append({"setting": tag, "stage": hhh.name, "preferences": t})
    return rows


def markdown(rows: list[dict]) -> str:
    cols = ["setting", "stage", "n", "accuracy", "mean_confidence", "ece", "ece_vs_base",
            "ece_vs_its_start", "cw_ece", "option_entropy", "top_pred_share", "top_gold_share",
            "letter_prior", "gap_beyond_accuracy", "pref_acc", "margin", "kl"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "preferences" in r:
            continue
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    hhh = [r for r in rows if "preferences" in r]
    if hhh:
        lines += ["", "| setting | stage | pairs | pref. acc. reference | pref. acc. tuned "
                  "| change (paired) | margin reference | margin tuned | change (paired) "
                  "| mean KL(reference ‖ tuned) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in hhh:
            t = r["preferences"]
            ref, tuned, ch = (t["preference_reference"], t["preference_tuned"],
                              t["change_tuned_minus_reference"])
            lines.append(f"| {r['setting']} | {r['stage']} | {tuned['n']} "
                         f"| {interval(ref, 'accuracy')} | {interval(tuned, 'accuracy')} "
                         f"| {fmt_interval(ch['accuracy'])} "
                         f"| {interval(ref, 'mean_margin', 2)} | {interval(tuned, 'mean_margin', 2)} "
                         f"| {fmt_interval(ch['mean_margin'], 2)} "
                         f"| {t['kl_reference_tuned']['mean_kl']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/collapse"))
    p.add_argument("--models", nargs="+", default=["gemma-3-270m", "smollm2-135m-instruct"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--betas", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    p.add_argument("--restore-beta", type=lambda v: None if v == "none" else float(v),
                   default=0.1,
                   help="the DPO run that CFT/RCFT start from (none: no CFT/RCFT stage)")
    p.add_argument("--train-limit", type=int, default=120)
    p.add_argument("--eval-limit", type=int, default=200)
    p.add_argument("--dpo-epochs", type=float, default=2.0)
    p.add_argument("--dpo-learning-rate", type=float, default=5e-4,
                   help="DPO learning rate (align's own default, 5e-5, barely moves these models)")
    p.add_argument("--restore-epochs", type=float, default=2.0)
    p.add_argument("--sft-first", action="store_true")
    p.add_argument("--sft-epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-hhh", action="store_true", help="no hhh_alignment retention stage")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--json", type=Path, default=Path("experiments/results/collapse_study.json"))
    a = p.parse_args()
    if not a.table_only:
        for model in a.models:
            for setting in a.settings:
                stages(a.out, model, setting, a)
    rows = table(a.out)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
