"""Export items as an lm-evaluation-harness task that scores exactly what calibtune scores.

The docs carry calibtune's own prompt (the plain letter prompt, or the cloze context) and the
choices (letters, or option texts), so lm-eval and calibtune can be compared item for item.
"""
from __future__ import annotations

import json
from pathlib import Path

from calibtune.scoring.cloze import cloze_context
from calibtune.data.items import LETTERS, MCQItem
from calibtune.integrity import atomic_write_text
from calibtune.scoring.prompts import render_prompt

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
"""


def write_lm_eval_task(items: list[MCQItem], folder: str | Path, name: str,
                       scoring: str = "letter") -> Path:
    """Write `name.jsonl` and `name.yaml` into `folder` (pass it as lm-eval's include_path)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cloze = scoring == "cloze"
    docs = [{"prompt": cloze_context(it) if cloze else render_prompt(it, "plain"),
             "choices": [o.strip() for o in it.options] if cloze else list(LETTERS[:it.n_options]),
             "answer": it.answer} for it in items]
    path = folder / f"{name}.jsonl"
    atomic_write_text(path, "".join(json.dumps(d) + "\n" for d in docs))
    atomic_write_text(folder / f"{name}.yaml", TASK.format(name=name, docs=path))
    return folder
