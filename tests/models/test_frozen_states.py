"""Frozen-layer states on disk: read back by a later cache over the same frozen weights only,
written whole, and equal to what the plain forward computes."""
from __future__ import annotations

import torch

from calibtune.models import frozen_prefix
from calibtune.models.frozen_states import FrozenStateStore, fingerprint
from calibtune.models.lora import wrap_lora
from calibtune.scoring.forward import answer_logits
from calibtune.training.config import TrainConfig

from .test_frozen_prefix import ROWS, TOL, batch, tiny

LETTERS = torch.tensor([3, 5, 7, 9])


def test_a_second_cache_reads_the_first_ones_states_and_gives_the_plain_logits(tmp_path):
    model = tiny("gemma3")
    plain = answer_logits(model, *batch(ROWS), LETTERS)
    first = frozen_prefix.install(model, 2, 64, tmp_path)
    answer_logits(model, *batch(ROWS[:2]), LETTERS)
    frozen_prefix.uninstall(first)
    assert first.store.written == 2 and len(list(first.store.folder.glob("*.safetensors"))) == 2
    second = frozen_prefix.install(model, 2, 64, tmp_path)  # as a later step would
    got = answer_logits(model, *batch(ROWS), LETTERS)
    assert second.store.folder == first.store.folder
    assert (second.store.loaded, second.store.written, second.stats.misses) == (2, 2, 2)
    torch.testing.assert_close(got, plain, atol=TOL, rtol=0)
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_fingerprint_follows_the_frozen_weights_and_the_boundary_only():
    model = tiny("qwen2")
    decoder = model.get_decoder()
    base = fingerprint(decoder, 2)
    assert fingerprint(decoder, 3) != base
    adapted = wrap_lora(tiny("qwen2"), TrainConfig(lora_r=2, lora_alpha=4, lora_layers=2))
    # an adapter on the top two layers leaves the frozen ones: the same states serve both
    assert fingerprint(adapted.get_base_model().get_decoder(), 2) == base
    with torch.no_grad():
        decoder.layers[3].mlp.up_proj.weight[0, 0] += 1.0  # above the boundary
    assert fingerprint(decoder, 2) == base
    with torch.no_grad():
        w = decoder.layers[1].mlp.up_proj.weight
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(float("inf")))  # one ulp, below it
    assert fingerprint(decoder, 2) != base


def test_states_of_other_weights_are_not_read(tmp_path):
    model = tiny("llama")
    cache = frozen_prefix.install(model, 2, 64, tmp_path)
    answer_logits(model, *batch(ROWS), LETTERS)
    frozen_prefix.uninstall(cache)
    other = tiny("llama")
    with torch.no_grad():
        other.get_decoder().layers[0].self_attn.q_proj.weight.mul_(1.5)
    plain = answer_logits(other, *batch(ROWS), LETTERS)
    cache = frozen_prefix.install(other, 2, 64, tmp_path)
    got = answer_logits(other, *batch(ROWS), LETTERS)
    assert cache.store.loaded == 0 and cache.stats.misses == len(ROWS)
    torch.testing.assert_close(got, plain, atol=TOL, rtol=0)
    assert len(list(tmp_path.iterdir())) == 2  # one folder per fingerprint


def test_a_damaged_or_foreign_file_is_a_miss(tmp_path, caplog):
    store = FrozenStateStore(tmp_path)
    state = torch.arange(6.0).reshape(3, 2)
    store.put(b"abc", state)
    torch.testing.assert_close(store.get(b"abc"), state)
    path = next(tmp_path.glob("*.safetensors"))
    path.write_bytes(path.read_bytes()[:20])  # cut short, as by a full disk
    assert store.get(b"abc") is None and "unreadable" in caplog.text
    assert not path.exists()  # removed, so that the next put writes it again
    store.put(b"abc", state)
    torch.testing.assert_close(store.get(b"abc"), state)
    path.unlink()
    store.put(b"abc", state)
    path.rename(store._path(b"abd"))  # a file whose name does not match its key
    assert store.get(b"abd") is None


def test_a_failing_disk_turns_the_store_off_and_the_forward_goes_on(tmp_path, monkeypatch,
                                                                     caplog):
    model = tiny("llama")
    plain = answer_logits(model, *batch(ROWS), LETTERS)
    cache = frozen_prefix.install(model, 2, 64, tmp_path)

    def full(key, state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.store, "put", full)
    torch.testing.assert_close(answer_logits(model, *batch(ROWS), LETTERS), plain, atol=TOL,
                               rtol=0)
    assert cache.store is None and "going on without the disk" in caplog.text


def test_states_computed_under_autocast_are_kept_apart():
    """bf16 autocast (training with --bf16) and fp32 scoring give different frozen-layer
    outputs: neither is served for the other."""
    model = tiny("llama")
    cache = frozen_prefix.install(model, 2, 64)
    answer_logits(model, *batch(ROWS[:1]), LETTERS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        answer_logits(model, *batch(ROWS[:1]), LETTERS)
    answer_logits(model, *batch(ROWS[:1]), LETTERS)
    assert (cache.stats.misses, cache.stats.hits) == (2, 1)
