"""Benchmark: k-shot MMLU, calibtune (shared exemplar prefix cached) vs lm-evaluation-harness
0.4.13 given the same exemplars and template, in one run; then calibtune alone at several k.

Same model (the embedded SmolLM2-135M-Instruct, converted to a local folder), the same seeded
MMLU test items, CPU, fp32, batch 16, each tool in its own process. calibtune runs first
(`calibtune eval --num-fewshot K`) and records its exemplars in fewshot.json; lm-eval then gets
one task per subject whose few-shot split is exactly those exemplars, in that order (sampler
`first_n`, fewshot_delimiter "\\n\\n", target_delimiter " "): calibtune's plain letter prompt
with the letters as choices, or its cloze context with the option texts as choices. Reported:
wall time of the scoring phase and of the whole process, peak RSS, their ratios, whether lm-eval
built the very prompts calibtune scored, and the agreement of predictions and option
log-probabilities. `--ks` adds calibtune alone at those k (cost grows with the item, not k).
Usage: python bench/fewshot.py [--items 200] [--shots 5] [--scoring letter cloze] [--ks 0 1 5]
Writes bench/results/fewshot.json (or --name).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from common import run_child, save, table
from scoring_vs_lm_eval import CALIBTUNE, LM_EVAL_TIMED

LM_EVAL = LM_EVAL_TIMED + r"""
folder, task_dir, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
res = evaluator.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32",
    tasks=names, task_manager=TaskManager(include_path=task_dir), batch_size=16,
    device="cpu", bootstrap_iters=0, log_samples=True)
def first_text(x):
    if isinstance(x, str):
        return x
    for v in (x.values() if isinstance(x, dict) else x):
        t = first_text(v)
        if t is not None:
            return t
    return None
out = {}
for name in names:
    for s in res["samples"][name]:
        out[f"{name}:{s['doc_id']}"] = {"lls": [float(r[0]) for r in s["filtered_resps"]],
                                         "context": first_text(s["arguments"])}
print(json.dumps({"scoring_s": spent["s"], "docs": out}))
"""

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
    shots: {shots}
test_split: test
fewshot_split: shots
num_fewshot: {k}
fewshot_config:
  sampler: first_n
fewshot_delimiter: "\\n\\n"
target_delimiter: " "
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def doc(item, cloze: bool) -> dict:
    """What lm-eval reads of an item: calibtune's zero-shot prompt and the choices."""
    from calibtune.data.items import LETTERS
    from calibtune.scoring.cloze import cloze_context
    from calibtune.scoring.prompts import render_prompt

    return {"prompt": cloze_context(item) if cloze else render_prompt(item, "plain"),
            "choices": [o.strip() for o in item.options] if cloze
            else list(LETTERS[:item.n_options]), "answer": item.answer}


def write_tasks(items, by_id, record: dict, folder: Path, cloze: bool) -> tuple[list, list]:
    """One lm-eval task per group; returns (task names, [(task name, doc_id) per item])."""
    from calibtune.data.fewshot import group_of

    folder.mkdir(parents=True, exist_ok=True)
    names, where = [], []
    groups = sorted(record["groups"])
    for g_index, group in enumerate(groups):
        members = [it for it in items if group_of(it) == group]
        name = f"calibtune_fewshot_{g_index}"
        rows = lambda its: "".join(json.dumps(doc(it, cloze)) + "\n" for it in its)  # noqa: E731
        (folder / f"{name}.jsonl").write_text(rows(members))
        (folder / f"{name}_shots.jsonl").write_text(rows([by_id[i] for i in
                                                          record["groups"][group]]))
        (folder / f"{name}.yaml").write_text(TASK.format(
            name=name, docs=folder / f"{name}.jsonl", shots=folder / f"{name}_shots.jsonl",
            k=record["num_fewshot"]))
        names.append(name)
        where += [(it.id, name, d) for d, it in enumerate(members)]
    order = {item_id: (name, d) for item_id, name, d in where}
    return names, [order[it.id] for it in items]


def log_softmax(z) -> np.ndarray:
    z = np.asarray(z, float)
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def calibtune_run(folder: Path, args, scoring: str, k: int, out: Path) -> dict:
    return run_child(CALIBTUNE, "eval", "--model", str(folder), "--data", "mmlu", "--split",
                     "test", "--limit", str(args.items), "--seed", str(args.seed),
                     "--num-fewshot", str(k), "--scoring", scoring, "--batch-size", "16",
                     "--n-boot", "0", "--out", str(out))


def compare(folder: Path, args, scoring: str, work: Path) -> dict:
    from calibtune.data import load_dataset, sample_items
    from calibtune.scores import OptionScores
    from calibtune.scoring.cloze import cloze_context
    from calibtune.scoring.prompts import render_prompt

    cloze = scoring == "cloze"
    mmlu = load_dataset("mmlu", "test").items
    items = sample_items(mmlu, args.items, args.seed)
    by_id = {it.id: it for it in mmlu}
    ours = calibtune_run(folder, args, scoring, args.shots, work / f"calibtune-{scoring}")
    record = json.loads((work / f"calibtune-{scoring}" / "fewshot.json").read_text())
    names, where = write_tasks(items, by_id, record, work / f"task-{scoring}", cloze)
    theirs = run_child(LM_EVAL, str(folder), str(work / f"task-{scoring}"), ",".join(names))
    docs = theirs.pop("docs")
    scores = OptionScores.load(work / f"calibtune-{scoring}" / "scores.npz")
    assert scores.ids.tolist() == [it.id for it in items]
    theirs_raw = np.asarray([docs[f"{n}:{d}"]["lls"] for n, d in where])
    shots = {g: [by_id[i] for i in ids] for g, ids in record["groups"].items()}
    from calibtune.data.fewshot import group_of

    mine = [cloze_context(it, shots[group_of(it)]) if cloze else
            render_prompt(it, "plain", exemplars=shots[group_of(it)]) for it in items]
    same_prompt = np.mean([docs[f"{n}:{d}"]["context"] == text
                           for (n, d), text in zip(where, mine)])
    ours_lp, theirs_lp = log_softmax(scores.logits), log_softmax(theirs_raw)
    n = len(items)
    result = {"scoring": scoring, "items": n, "shots": args.shots, "groups": len(names),
              "calibtune": {k: ours[k] for k in ("scoring_s", "wall_s", "peak_rss_mb")},
              "lm_eval": {k: theirs[k] for k in ("scoring_s", "wall_s", "peak_rss_mb")},
              "agreement": {
                  "same_prompt": float(same_prompt),
                  "same_prediction": float((ours_lp.argmax(1) == theirs_lp.argmax(1)).mean()),
                  "max_abs_logprob_diff": float(np.abs(ours_lp - theirs_lp).max()),
                  "max_abs_raw_diff": (float(np.abs(scores.logits - theirs_raw).max())
                                       if cloze else None)}}
    c, lm = result["calibtune"], result["lm_eval"]
    result["ratios"] = {"scoring_speedup": lm["scoring_s"] / c["scoring_s"],
                        "end_to_end_speedup": lm["wall_s"] / c["wall_s"],
                        "peak_memory_ratio": c["peak_rss_mb"] / lm["peak_rss_mb"]}
    return result


def main() -> None:
    from calibtune.models import builtin_model_folder

    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scoring", nargs="+", choices=["letter", "cloze"],
                    default=["letter", "cloze"])
    ap.add_argument("--ks", type=int, nargs="*", default=[0, 1, 5],
                    help="calibtune alone at these k (none: skip)")
    ap.add_argument("--name", default="fewshot", help="bench/results/NAME.json")
    args = ap.parse_args()
    folder = builtin_model_folder("smollm2-135m-instruct")
    work = Path(tempfile.mkdtemp(prefix="calibtune-fewshot-bench-"))
    result: dict = {"model": "smollm2-135m-instruct (fp32, CPU)", "batch_size": 16,
                    "items": args.items, "seed": args.seed, "vs_lm_eval": [], "by_k": []}
    for scoring in args.scoring:
        r = compare(folder, args, scoring, work)
        result["vs_lm_eval"].append(r)
        c, lm = r["calibtune"], r["lm_eval"]
        print(f"\n{scoring}, {args.shots}-shot, {r['items']} items in {r['groups']} groups")
        print(table([[side, s["scoring_s"], s["wall_s"], s["peak_rss_mb"]]
                     for side, s in (("calibtune", c), ("lm-eval", lm))],
                    ["tool", "scoring s", "process s", "peak RSS MB"]))
        print(json.dumps(r["ratios"]), json.dumps(r["agreement"]))
    for scoring in args.scoring:
        for k in args.ks:
            run = calibtune_run(folder, args, scoring, k, work / f"k{k}-{scoring}")
            result["by_k"].append({"scoring": scoring, "k": k, "scoring_s": run["scoring_s"],
                                   "wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"],
                                   "ms_per_item": 1000 * run["scoring_s"] / args.items})
    if result["by_k"]:
        print("\ncalibtune alone")
        print(table([[r["scoring"], r["k"], r["scoring_s"], r["ms_per_item"], r["peak_rss_mb"]]
                     for r in result["by_k"]],
                    ["scoring", "k", "scoring s", "ms/item", "peak RSS MB"]))
    print("wrote", save(args.name, result))


if __name__ == "__main__":
    main()
