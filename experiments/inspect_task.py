"""An Inspect task that reports calibtune's calibration metrics, and its log imported back.

As an Inspect task file (any provider that returns log-probabilities)::

    inspect eval experiments/inspect_task.py --model hf/PATH -M do_sample=False \\
        --logprobs --top-logprobs 20 -T limit=40

As a script, on the embedded SmolLM2-135M-Instruct through Inspect's Hugging Face provider::

    python experiments/inspect_task.py --limit 40

runs the task with `inspect_ai.eval`, prints the metrics Inspect reported (accuracy, calibtune's
ECE with its noise floor, cw-ECE, Brier), imports the log as `calibtune eval --from inspect`
does, and writes both sides to experiments/results/inspect_task.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.solver import multiple_choice

from calibtune.data import load_dataset
from calibtune.data.items import LETTERS
from calibtune.inspect import choice_probabilities


@task
def mmlu_calibration(limit: int = 40, max_tokens: int = 4) -> Task:
    """MMLU test items (calibtune's built-in copy, a seeded sample of `limit`), Inspect's
    multiple_choice() template, scored by choice_probabilities() (accuracy, ece, cw_ece, brier)."""
    items = load_dataset("mmlu", "test", limit=limit).items
    samples = [Sample(input=it.question, choices=list(it.options), target=LETTERS[it.answer],
                      id=it.id, metadata={"subject": it.subject}) for it in items]
    return Task(dataset=MemoryDataset(samples), solver=multiple_choice(max_tokens=max_tokens),
                scorer=choice_probabilities())


def main() -> None:
    from inspect_ai import eval as inspect_eval

    import calibtune as ct
    from calibtune.models.builtin import builtin_model_folder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--top-logprobs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/inspect_task.json"))
    args = parser.parse_args()
    model = f"hf/{builtin_model_folder('smollm2-135m-instruct')}"
    with tempfile.TemporaryDirectory() as log_dir:
        start = time.perf_counter()
        (log,) = inspect_eval(mmlu_calibration(limit=args.limit), model=model, log_dir=log_dir,
                              model_args={"do_sample": False, "device": "cpu"}, logprobs=True,
                              top_logprobs=args.top_logprobs, display="none")
        seconds = time.perf_counter() - start
        reported = {name: m.value for name, m in log.results.scores[0].metrics.items()}
        scores = ct.load_inspect_logs(log.location)
    metrics = ct.evaluate(scores)
    info = scores.meta["tasks"]["mmlu_calibration"]
    result = {
        "model": "smollm2-135m-instruct via Inspect's hf provider (greedy)",
        "inspect_version": scores.meta["inspect_version"], "items": len(scores),
        "top_logprobs": args.top_logprobs, "inspect_seconds": round(seconds, 1),
        "inspect_reported": reported,
        "imported": {k: metrics[k] for k in ("accuracy", "mean_confidence", "ece", "cw_ece",
                                             "brier", "nll")}
        | {"ece_ci": [metrics["ci"]["ece"]["low"], metrics["ci"]["ece"]["high"]],
           "ece_noise_q95": metrics["ece_noise_floor"]["q95"]},
        "answer_position": info["answer_position"],
        "coverage": {k: info[k] for k in ("items_missing_letters", "letter_mass_mean",
                                          "unseen_mass_mean", "unseen_mass_max")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
