"""The frozen-layer cache gives the plain forward's numbers, runs each sequence's frozen layers
once, and refuses a model whose lower layers train."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from calibtune.errors import ConfigError
from calibtune.models import frozen_prefix
from calibtune.models.lora import wrap_lora
from calibtune.scoring.forward import answer_logits
from calibtune.training.config import TrainConfig

TOL = 1e-5  # the frozen layers may run in another batch: float reassociation only


def tiny(arch: str, vocab_size: int = 64):
    """A 4-layer model; gemma3's mixes sliding (window 3) and full attention so that the top two
    layers' types differ from the first two's: a layer run with another's type would show."""
    from transformers import (AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig,
                              Qwen2Config)

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config = {"llama": lambda: LlamaConfig(**common),
              "qwen2": lambda: Qwen2Config(**common),
              "gemma3": lambda: Gemma3TextConfig(
                  **common, head_dim=8, sliding_window=3,
                  layer_types=["full_attention", "sliding_attention", "sliding_attention",
                               "full_attention"])}[arch]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0 if p.ndim == 2 else 1.0)
    return model.requires_grad_(False)  # frozen, as under a LoRA adapter


def batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask."""
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


ROWS = [[5, 9, 11, 3, 7, 8, 2, 30], [4, 4, 6, 12], [7, 1, 2, 3, 4, 5, 6], [9, 9, 10, 40, 41]]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_cached_logits_equal_the_plain_forward_in_any_batch(arch):
    model = tiny(arch)
    letters = torch.tensor([3, 5, 7, 9])
    plain = {i: answer_logits(model, *batch([r]), letters) for i, r in enumerate(ROWS)}
    cache = frozen_prefix.install(model, start=2, max_mb=64)
    first = answer_logits(model, *batch(ROWS[:3]), letters)  # all three run the frozen layers
    assert (cache.stats.misses, cache.stats.hits) == (3, 0)
    # again, in another order and padding, next to an unseen row
    second = answer_logits(model, *batch([ROWS[3], ROWS[1], ROWS[0]]), letters)
    assert (cache.stats.misses, cache.stats.hits) == (4, 2)
    for got, want in [(first[0], plain[0]), (first[1], plain[1]), (first[2], plain[2]),
                      (second[0], plain[3]), (second[1], plain[1]), (second[2], plain[0])]:
        torch.testing.assert_close(got, want[0], atol=TOL, rtol=0)
    frozen_prefix.uninstall(cache)
    assert "forward" not in model.get_decoder().__dict__
    assert len(model.get_decoder().layers) == 4


def test_gradients_of_the_adapted_layers_equal_the_plain_ones():
    grads = []
    for cached in (False, True):
        model = wrap_lora(tiny("qwen2"), TrainConfig(lora_r=2, lora_alpha=4, lora_dropout=0.0,
                                                     lora_layers=2)).train()
        torch.manual_seed(1)  # the same fresh adapter both times
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
        cache = frozen_prefix.install(model, 2, 64) if cached else None
        for _ in range(2):  # the second pass reads the cache
            model.zero_grad()
            answer_logits(model, *batch(ROWS), torch.tensor([3, 5, 7])).logsumexp(-1).sum() \
                .backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        if cached:
            assert cache.stats.hits == len(ROWS)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=TOL, rtol=1e-4)


def test_a_full_cache_computes_without_keeping():
    model = tiny("llama")
    cache = frozen_prefix.install(model, 2, max_mb=8 * 32 * 4 / 2**20)  # room for one row of 8
    answer_logits(model, *batch(ROWS[:2]))
    assert len(cache.entries) == 1 and cache.stats.full
    answer_logits(model, *batch(ROWS[:2]))
    assert (cache.stats.hits, cache.stats.misses) == (1, 3)


def test_trainable_lower_layers_and_bad_starts_are_refused():
    model = wrap_lora(tiny("llama"), TrainConfig(lora_r=2, lora_alpha=4, lora_layers=3))
    with pytest.raises(ConfigError, match="a layer below the adapted ones is trainable"):
        frozen_prefix.install(model, 2, 64)
    with pytest.raises(ConfigError, match="start 4 is not inside the decoder's 4 layers"):
        frozen_prefix.install(tiny("llama"), 4, 64)


def test_training_with_the_cache_ends_with_the_adapter_of_training_without(tiny_llama, caplog):
    """RCFT through `train()`, 2 epochs of 4 items: the first epoch's E-step (scoring
    sequences) and steps (prompt + answer sequences) run the frozen layers, the second epoch's
    reuse them; the adapter equals the one trained without the cache."""
    import logging

    from calibtune.models import load_model
    from calibtune.training import train
    from conftest import make_items

    adapters = []
    for mb in (0.0, 64.0):
        cfg = TrainConfig(method="rcft", lora_r=2, lora_alpha=4, lora_layers=1, max_steps=4,
                          batch_size=2, warmup_ratio=0.0, learning_rate=1e-2,
                          epoch_eval_limit=0, frozen_cache_mb=mb)
        with caplog.at_level(logging.INFO, logger="calibtune.training.finetune"):
            out = train(load_model(str(tiny_llama), device="cpu"), make_items(4), cfg)
        adapters.append({n: p.detach().clone() for n, p in out.model.model.named_parameters()
                         if "lora_" in n})
        assert "forward" not in out.model.model.get_base_model().get_decoder().__dict__
    reused = [r.getMessage() for r in caplog.records if "frozen layers run for" in r.getMessage()]
    assert reused == ["frozen layers run for 8 sequences, reused for 8 (0 MB kept)"]
    for name in adapters[0]:
        torch.testing.assert_close(adapters[1][name], adapters[0][name], atol=1e-5, rtol=1e-4)


def test_the_run_scores_its_held_out_items_through_the_frozen_layers_once(tiny_llama, tmp_path,
                                                                          caplog):
    """`calibtune train` scores the held-out items before (adapter off) and after: the second
    pass reuses the first's frozen layers, and the scores equal a run without the cache."""
    import logging

    import numpy as np

    from calibtune.workflows.train import run_training
    from conftest import make_items, tiny_train_config, write_train_eval

    data = write_train_eval(tmp_path, make_items(4), make_items(6, seed=1))
    scores = []
    for mb in (0.0, 64.0):
        cfg = tiny_train_config(tiny_llama, data, tmp_path / f"mb{mb:g}", lora_layers=1,
                                max_steps=1, frozen_cache_mb=mb, epoch_eval_limit=0)
        with caplog.at_level(logging.INFO, logger="calibtune.training.finetune"):
            run_training(cfg)
        scores.append(np.load(tmp_path / f"mb{mb:g}" / "run" / "eval" / "scores.npz")["logits"])
    messages = [r.getMessage() for r in caplog.records if "frozen layers run for" in r.getMessage()]
    assert messages[-1].startswith("frozen layers run for 6 sequences, reused for 6 ")
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_cloze_scoring_with_a_shared_context_gives_the_plain_scores(arch):
    """Cloze scoring computes each context once with `use_cache=True`, then its continuations
    on those keys and values: every layer's must be there, so such a forward is not served
    from the cache (the continuations would otherwise read the top layers' keys as layer 0's)."""
    from calibtune.scoring.cloze import ClozeScorer
    from conftest import build_tokenizer, make_items

    tokenizer = build_tokenizer()
    model = tiny(arch, vocab_size=len(tokenizer))
    items = make_items(4)
    plain = ClozeScorer(model, tokenizer, progress=False).score(items).logits
    cache = frozen_prefix.install(model, 2, 64)
    for _ in range(2):
        got = ClozeScorer(model, tokenizer, progress=False).score(items).logits
        np.testing.assert_allclose(got, plain, atol=TOL)
    frozen_prefix.uninstall(cache)
