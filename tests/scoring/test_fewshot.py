"""Few-shot scoring: the cached exemplar prefix gives the scores of the same prompts scored
whole, in letter mode (every prompt style) and cloze mode; zero-shot is untouched."""
import numpy as np
import pytest
import torch

from calibtune.data.fewshot import draw_fewshot
from calibtune.models import load_model
from calibtune.scoring import make_scorer
from calibtune.scoring.prefix import CACHE_FIELD, PrefixCache, prefix_groups, shared_prefix_length
from calibtune.scoring.prompts import LETTERS, render_prompt
from conftest import make_items


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return load_model(str(tiny_llama))


@pytest.fixture(scope="module")
def fewshot_items():
    items = make_items(36, k=[4, 3, 4, 2])  # ragged K: dummy rows and masks take part
    scored, pool = items[:14], items[14:]
    return scored, draw_fewshot(scored, pool, 3, seed=0)


def assert_cached_equals_whole(model, tok, scoring, fs, scored, **kw):
    """Scores with the group prefixes cached equal those of the whole prompts, uncached."""
    cached = make_scorer(model, tok, scoring, fewshot=fs, batch_size=6, progress=False,
                         **kw).score(scored)
    whole = make_scorer(model, tok, scoring, fewshot=fs, share_prefix=False, progress=False,
                        **kw).score(scored)
    np.testing.assert_allclose(cached.logits, whole.logits, atol=1e-4, rtol=0)
    assert (cached.probs().argmax(1) == whole.probs().argmax(1)).all()
    np.testing.assert_array_equal(cached.ids, whole.ids)
    return cached


@pytest.mark.parametrize("style", ["plain", "reference", "chat"])
def test_letter_cached_prefix_equals_whole_prompts(llama, fewshot_items, style):
    model, tok = llama
    scored, fs = fewshot_items
    cached = assert_cached_equals_whole(model, tok, "letter", fs, scored, prompt=style)
    zero = make_scorer(model, tok, "letter", prompt=style, progress=False).score(scored)
    assert np.abs(zero.logits - cached.logits).max() > 1e-3  # the exemplars are really read


@pytest.mark.parametrize("norm", ["none", "char"])
def test_cloze_cached_prefix_equals_whole_sequences(tiny_qwen, fewshot_items, norm):
    model, tok = load_model(str(tiny_qwen))
    assert_cached_equals_whole(model, tok, "cloze", fewshot_items[1], fewshot_items[0],
                               cloze_norm=norm)


def test_fewshot_prompt_format(llama, fewshot_items):
    _, tok = llama
    scored, fs = fewshot_items
    item, exs = scored[0], fs.for_item(scored[0])
    text = render_prompt(item, "plain", exemplars=exs)
    shots = text.split("\n\n")
    assert len(shots) == 4 and shots[-1] == render_prompt(item, "plain")
    assert shots[0] == render_prompt(exs[0], "plain") + " " + LETTERS[exs[0].answer]
    chat = render_prompt(item, "chat", tok, exs)
    assert chat.count("<|user|>") == 4 and chat.count("<|assistant|>") == 4  # 3 answers + prompt
    assert render_prompt(item, "reference", exemplars=()) == render_prompt(item, "reference")


def test_prefix_cache_is_not_changed_by_a_batch(llama):
    model, tok = llama
    prefix = PrefixCache(model, tok("the cell energy ? A")["input_ids"], torch.device("cpu"))
    before = [(layer.keys.clone(), layer.values.clone()) for layer in prefix.cache.layers]
    batch = prefix.for_batch(3)
    ids = torch.tensor([[9, 10], [11, 12], [13, 14]])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=prefix.attention_mask(torch.ones_like(ids)),
              position_ids=prefix.length + torch.arange(2)[None].expand(3, 2),
              use_cache=True, **{CACHE_FIELD: batch})
    assert batch.get_seq_length() == prefix.length + 2
    for (k, v), layer in zip(before, prefix.cache.layers):
        assert layer.keys.shape[0] == 1
        assert torch.equal(k, layer.keys) and torch.equal(v, layer.values)


def test_shared_prefix_stops_where_tokenisations_part():
    # a tokenizer that merges across the exemplar/question boundary makes the items' starts
    # differ from the prefix's own tokens: the cached part ends where they part
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 7]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # one token of its own each
    assert shared_prefix_length([[5]]) == 0
    items = make_items(7)
    units = list(prefix_groups(items[:4], [[1, 2, i] for i in range(4)]))
    assert units == [([0, 3], 2), ([1, 2], 0)]  # s1 and s2 hold one item each: scored whole


def test_zero_shot_scores_unchanged(llama):
    """No exemplars: each item's letter logits are those of its own zero-shot prompt, read
    one item at a time outside the scorer, and nothing records a few-shot setting."""
    from calibtune.scoring.forward import answer_logits
    from calibtune.scoring.prompts import letter_token_ids

    model, tok = llama
    items = make_items(10)
    scores = make_scorer(model, tok, "letter", batch_size=4, progress=False).score(items)
    letters = torch.tensor(letter_token_ids(tok, 4, "plain"))
    for row, it in zip(scores.logits, items):
        ids = torch.tensor([tok(render_prompt(it, "plain"))["input_ids"]])
        with torch.no_grad():
            alone = answer_logits(model, ids, torch.ones_like(ids), letters)[0].numpy()
        np.testing.assert_allclose(row, alone, atol=1e-5, rtol=0)
    assert "num_fewshot" not in scores.meta


@pytest.mark.slow
def test_embedded_model_cached_prefix_equals_whole_prompts():
    """SmolLM2's byte-level BPE merges "\\n\\n" before the question differently from the
    exemplars' own tokenisation; the cached path still scores the whole prompt's tokens."""
    from calibtune.data import load_dataset

    model, tok = load_model("smollm2-135m-instruct", device="cpu")
    mmlu = load_dataset("mmlu", "test").items
    subjects = sorted({it.subject for it in mmlu})[:2]
    scored = [it for s in subjects for it in [x for x in mmlu if x.subject == s][:5]]  # 10
    fs = draw_fewshot(scored, mmlu, 2, seed=0)
    assert_cached_equals_whole(model, tok, "letter", fs, scored, prompt="plain")
    assert_cached_equals_whole(model, tok, "cloze", fs, scored)
