"""RCFT's E-step bin prior against the default rule, paired on the same items.

Reads a prevent-or-restore run tree (`experiments/prevent_or_restore.py --rcft-bin-priors M`)
and, for every seed that holds both `dpo-b0.1-rcft` and `dpo-b0.1-rcft-prior<M>`, compares the
two RCFT runs from the same DPO'd model: paired-bootstrap Δ (prior minus default) of ECE and
accuracy in domain and out, paired Δ of held-out preference accuracy, both runs' training
seconds, and the highest non-empty bin of each epoch-1 E-step (the bin whose few lucky items
made the default rule drift on MMLU seed 2). Writes the JSON of record, which holds every
figure of docs/alignment.md's table ("RCFT's E-step bin prior"), and prints it as a table.

    python experiments/rcft_bin_prior.py --out runs/por --prior 10 \
        --json experiments/results/rcft_bin_prior.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from prevent_or_restore import arm_folders  # noqa: E402

from calibtune.align.retention import RetentionReport  # noqa: E402
from calibtune.integrity import atomic_write_json  # noqa: E402
from calibtune.metrics.paired import compare_scores  # noqa: E402
from calibtune.option_scores import OptionScores  # noqa: E402


def paired(a: Path, b: Path) -> dict:
    """Δ (b − a) of ECE and accuracy with their 95% paired-bootstrap intervals."""
    c = compare_scores(OptionScores.load(a / "scores.npz"), OptionScores.load(b / "scores.npz"),
                       seed=0)
    before, after = (json.loads((f / "metrics.json").read_text()) for f in (a, b))
    return {k: {"default": before[k], "prior": after[k],
                "delta": [c.deltas[k].estimate, c.deltas[k].low, c.deltas[k].high]}
            for k in ("ece", "accuracy")}


def preference_delta(a: Path, b: Path) -> dict:
    """Held-out preference accuracy of both runs and the paired-bootstrap Δ (b − a): each
    preference file is a retention report against the DPO'd model, so b's report with a's
    tuned model as its reference gives calibtune's own paired change (same pairs, or an error)."""
    default, prior = (RetentionReport.from_dict(json.loads(f.read_text())) for f in (a, b))
    change = dataclasses.replace(prior, reference=default.tuned).change()["accuracy"]
    return {"default": default.tuned.accuracy, "prior": prior.tuned.accuracy,
            "delta": [change["estimate"], change["low"], change["high"]]}


def top_bin(run: Path, epoch: int = 1) -> dict | None:
    """The highest non-empty bin of the E-step at the start of `epoch`."""
    history = run / "estep_history.json"
    for e in json.loads(history.read_text()) if history.exists() else []:
        if e["epoch"] == epoch:
            bins = e["bins"]
            k = max(i for i, n in enumerate(bins["count"]) if n)
            return {"low": bins["edges"][k], "high": bins["edges"][k + 1],
                    "last": k == len(bins["count"]) - 1,
                    "count": bins["count"][k], "accuracy": bins["accuracy"][k]}
    return None


def compare_seed(base: Path, prior: float) -> dict | None:
    arms = arm_folders(base, [], [prior])
    plain, shrunk_arm = arms["DPO → RCFT"], arms[f"DPO → RCFT m={prior:g}"]
    default, shrunk = plain["run"], shrunk_arm["run"]
    needed = [f / name for f in (default, shrunk) for name in ("eval/scores.npz", "summary.json")]
    if not all(f.exists() for f in needed):
        return None
    setting, _, seed = base.name.partition("-seed")
    row = {"model": base.parent.name, "setting": setting, "seed": int(seed or 0), "prior": prior,
           "in_domain": paired(default / "eval", shrunk / "eval")}
    ood = base / f"ood-{default.name}", base / f"ood-{shrunk.name}"
    if all((f / "scores.npz").exists() for f in ood):
        row["out_of_domain"] = paired(*ood)
    pairs = plain["pref"], shrunk_arm["pref"]
    if all(f.exists() for f in pairs):
        row["preference"] = preference_delta(*pairs)
    row["train_seconds"] = {name: json.loads((f / "summary.json").read_text()).get("train_seconds")
                            for name, f in (("default", default), ("prior", shrunk))}
    row["epoch1_top_bin"] = {name: top_bin(f) for name, f in (("default", default), ("prior", shrunk))}
    return row


def interval(d: list[float]) -> str:
    return f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"


def bin_text(b: dict | None) -> str:
    """A bin as its interval (the last one is closed: confidence 1.0 falls in it), size, accuracy."""
    if b is None:
        return "no epoch-1 E-step"
    return (f"[{b['low']:.1f}, {b['high']:.1f}{']' if b['last'] else ')'}: {b['count']} items, "
            f"{b['accuracy']:.2f}")


def table(rows: list[dict]) -> str:
    lines = ["| model, setting, seed | E-step top bin (default) | ECE default → prior | Δ ECE | "
             "Δ accuracy | Δ ECE out of domain | pref. acc. default → prior (Δ) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        i = r["in_domain"]
        ood = interval(r["out_of_domain"]["ece"]["delta"]) if "out_of_domain" in r else ""
        p = r.get("preference")
        pref = f"{p['default']:.3f} → {p['prior']:.3f} ({interval(p['delta'])})" if p else ""
        lines.append(f"| {r['model']}, {r['setting']}, {r['seed']} | "
                     f"{bin_text(r['epoch1_top_bin']['default'])} | {i['ece']['default']:.3f} → "
                     f"{i['ece']['prior']:.3f} | {interval(i['ece']['delta'])} | "
                     f"{interval(i['accuracy']['delta'])} | {ood} | {pref} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, nargs="+", default=[Path("runs/por")],
                   help="one or more run trees (model/setting-seed/ folders)")
    p.add_argument("--prior", type=float, default=10.0)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    bases = sorted({b.resolve(): b for out in a.out for b in out.glob("*/*") if b.is_dir()}.values(),
                   key=lambda b: (b.parent.name, b.name))
    rows = [r for base in bases if (r := compare_seed(base, a.prior)) is not None]
    if a.json:
        atomic_write_json(a.json, rows)
    print(table(rows))


if __name__ == "__main__":
    main()
