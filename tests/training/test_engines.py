"""Engine detection and the lockstep deal of E-step work across sharded ranks."""
import json

import pytest

from calibtune.training.distributed import lockstep_chunks, sharding_engine


@pytest.mark.parametrize("n,chunk,world", [(40, 16, 2), (10, 4, 3), (1, 8, 4), (7, 1, 2),
                                           (0, 4, 2), (16, 16, 2)])
def test_every_rank_gets_as_many_chunks_and_every_item_is_covered(n, chunk, world):
    shares = [lockstep_chunks(n, chunk, r, world) for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # the same number of forward calls everywhere
    assert all(len(c) <= chunk for s in shares for c in s)
    covered = sorted({i for s in shares for c in s for i in c})
    assert covered == list(range(n))


def test_chunks_are_dealt_round_robin():
    assert lockstep_chunks(40, 16, 0, 2) == [list(range(16)), list(range(32, 40))]
    assert lockstep_chunks(40, 16, 1, 2) == [list(range(16, 32))] * 2  # repeats its last


def test_engine_from_accelerate_environment(monkeypatch, tmp_path):
    for key in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED",
                "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    assert sharding_engine() is None
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert sharding_engine() is None  # ZeRO-2 shards optimizer state only
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(config))
    assert sharding_engine() == "zero3"  # a DeepSpeed JSON file wins over the flags
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert sharding_engine() == "fsdp"


def release_head_outside_its_forward(model):
    """Mimic ZeRO-3 on one process: the output head's weight is an empty placeholder except
    while the head's own forward call runs (the engine's hooks, registered first)."""
    import torch

    head = model.get_output_embeddings()
    full = head.weight.data

    def gather(module, args):
        module.weight.data = full

    def release(module, args, out):
        module.weight.data = torch.empty(0)

    head.register_forward_pre_hook(gather)
    head.register_forward_hook(release)
    release(head, None, None)


def test_scores_are_read_while_the_head_is_gathered(tiny_qwen):
    """Letter and cloze scores (and so the E-step and evaluation) come out the same when the
    head exists only inside its forward call."""
    import numpy as np

    from calibtune.models import load_model
    from calibtune.scoring import make_scorer

    from conftest import make_items

    items = make_items(6, k=[4, 3])
    model, tok = load_model(str(tiny_qwen), device="cpu")
    gathered, _ = load_model(str(tiny_qwen), device="cpu")
    release_head_outside_its_forward(gathered)
    for scoring in ("letter", "cloze"):
        ref = make_scorer(model, tok, scoring, progress=False).score(items)
        got = make_scorer(gathered, tok, scoring, progress=False).score(items)
        np.testing.assert_allclose(got.logits, ref.logits, atol=1e-5)
