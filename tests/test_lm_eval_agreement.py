"""Agreement with lm-evaluation-harness itself, on the same items, prompt and tiny model."""
import json

import numpy as np

from calibtune.cloze import ClozeScorer, cloze_context
from calibtune.models import load_model
from calibtune.prompts import render_prompt
from calibtune.scoring import LetterScorer

from conftest import make_items

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: {choice}
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
"""


def lm_eval_logliks(folder, tmp_path, name, docs, choice):
    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager

    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / f"{name}.yaml").write_text(TASK.format(name=name, docs=path, choice=choice))
    res = evaluator.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32",
                                    tasks=[name], task_manager=TaskManager(include_path=str(tmp_path)),
                                    batch_size=4, device="cpu", bootstrap_iters=0, log_samples=True)
    samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
    return np.array([[float(r[0]) for r in s["filtered_resps"]] for s in samples])


def log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_letter_and_cloze_agree_with_lm_eval(tiny_qwen, tmp_path):
    model, tok = load_model(str(tiny_qwen), device="cpu")
    items = make_items(8, k=4, seed=5)
    letter_docs = [{"prompt": render_prompt(it, "plain"), "answer": it.answer} for it in items]
    theirs = lm_eval_logliks(tiny_qwen, tmp_path, "ct_letter", letter_docs, '["A", "B", "C", "D"]')
    ours = LetterScorer(model, tok, progress=False).score(items).logits
    np.testing.assert_allclose(log_softmax(ours), log_softmax(theirs), atol=1e-4)
    assert (ours.argmax(1) == theirs.argmax(1)).all()

    cloze_docs = [{"prompt": cloze_context(it), "choices": [o.strip() for o in it.options],
                   "answer": it.answer} for it in items]
    theirs = lm_eval_logliks(tiny_qwen, tmp_path, "ct_cloze", cloze_docs, '"{{choices}}"')
    ours = ClozeScorer(model, tok, progress=False).score(items).logits
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert (ours.argmax(1) == theirs.argmax(1)).all()
