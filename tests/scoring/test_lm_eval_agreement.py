"""Agreement with lm-evaluation-harness itself, on the same items, prompt and tiny model."""
import numpy as np

from calibtune.scoring.cloze import ClozeScorer
from lm_eval_task import write_lm_eval_task
from calibtune.models import load_model
from calibtune.scoring import LetterScorer

from conftest import make_items

def lm_eval_logliks(folder, task_dir, name):
    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager

    res = evaluator.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32",
                                    tasks=[name], task_manager=TaskManager(include_path=str(task_dir)),
                                    batch_size=4, device="cpu", bootstrap_iters=0, log_samples=True)
    samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
    return np.array([[float(r[0]) for r in s["filtered_resps"]] for s in samples])


def log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_letter_and_cloze_agree_with_lm_eval(tiny_qwen, tmp_path):
    model, tok = load_model(str(tiny_qwen), device="cpu")
    items = make_items(8, k=4, seed=5)
    write_lm_eval_task(items, tmp_path, "ct_letter", "letter")
    theirs = lm_eval_logliks(tiny_qwen, tmp_path, "ct_letter")
    ours = LetterScorer(model, tok, progress=False).score(items).logits
    np.testing.assert_allclose(log_softmax(ours), log_softmax(theirs), atol=1e-4)
    assert (ours.argmax(1) == theirs.argmax(1)).all()

    write_lm_eval_task(items, tmp_path, "ct_cloze", "cloze")
    theirs = lm_eval_logliks(tiny_qwen, tmp_path, "ct_cloze")
    ours = ClozeScorer(model, tok, progress=False).score(items).logits
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert (ours.argmax(1) == theirs.argmax(1)).all()
