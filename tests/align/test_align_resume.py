"""`align --resume` refuses what `train --resume` refuses: a checkpoint whose files changed since
they were saved, or one its save never finished (no seal), before anything is loaded or written."""
import pytest
import torch

from calibtune.align.config import AlignConfig
from calibtune.errors import TrainingError
from calibtune.workflows.align import run_alignment

from conftest import make_items, write_train_eval


@pytest.fixture(scope="module")
def finished(tiny_llama, tmp_path_factory):
    """A two-step align run that saved checkpoint-2, and the config that made it."""
    root = tmp_path_factory.mktemp("align-resume")
    data = write_train_eval(root, make_items(8, k=[4, 3], seed=1), make_items(4, seed=2))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = AlignConfig(model=str(tiny_llama), data=str(data / "train.jsonl"), split=None,
                      eval_data=str(data / "eval.jsonl"), eval_split=None, eval_limit=2,
                      batch_size=4, lora_r=4, lora_alpha=8, max_steps=2, save_steps=2,
                      eval_before=False, retention=False, out=str(root / "run"))
    try:
        run_alignment(cfg)
    finally:
        torch.set_num_threads(n)
    return cfg, root / "run" / "checkpoints" / "checkpoint-2"


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_corrupted_checkpoint_is_refused(finished):
    cfg, ckpt = finished
    weights = ckpt / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # a flipped byte in the tensors: same size, loads without complaint
    weights.write_bytes(bytes(data))
    before = snapshot(ckpt.parent.parent)
    with pytest.raises(TrainingError, match=r"cannot resume from .*checkpoint-2: "
                                            r"adapter_model.safetensors is corrupted"):
        run_alignment(cfg, resume=True)
    assert snapshot(ckpt.parent.parent) == before  # nothing was changed


def test_an_unsealed_checkpoint_is_refused(finished, tmp_path):
    cfg, ckpt = finished
    (ckpt / "calibtune_checkpoint.json").unlink(missing_ok=True)
    with pytest.raises(TrainingError, match="incomplete"):
        run_alignment(cfg, resume=True)


def test_an_align_run_and_a_preference_eval_write_report_html(finished, tiny_llama, tmp_path):
    import json

    from calibtune.workflows.align import run_preference_eval
    from calibtune.workflows.config import PreferenceEvalConfig

    cfg, ckpt = finished
    run = ckpt.parent.parent
    page = (run / "report.html").read_text()
    after = json.loads((run / "summary.json").read_text())["after"]
    assert "Held-out MCQ items" in page and f"{after['ece']:.4f}" in page
    res = run_preference_eval(PreferenceEvalConfig(model=str(tiny_llama), out=str(tmp_path / "p"),
                                                   preferences=str(run / "train_pairs.jsonl")))
    page = (res.folder / "report.html").read_text()
    p = json.loads((res.folder / "preferences.json").read_text())["preference"]
    assert f"{p['accuracy']:.3f} [{p['ci']['accuracy']['low']:.3f}" in page
    assert f"{p['mean_margin']:.2f}" in page
