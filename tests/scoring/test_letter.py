import numpy as np
import pytest
import torch

from calibtune.errors import DataError, ModelError
from calibtune.scoring.forward import answer_logits, last_positions
from calibtune.models import load_model
from calibtune.scoring.prompts import PromptEncoder, letter_token_ids, render_prompt
from calibtune.scores import OptionScores
from calibtune.scoring import LetterScorer, plan_batches

from conftest import make_items


@pytest.fixture(params=["tiny_llama", "tiny_qwen"])
def model_and_tok(request):
    return load_model(str(request.getfixturevalue(request.param)), device="cpu")


@pytest.mark.parametrize("prompt", ["plain", "chat"])
def test_scores_independent_of_batch_size_and_padding_side(model_and_tok, prompt):
    model, tok = model_and_tok
    items = make_items(13, k=[4, 3, 5, 2])
    ref = LetterScorer(model, tok, prompt=prompt, batch_size=1, progress=False).score(items)
    for bs in (2, 5, 16):
        for side in ("left", "right"):
            got = LetterScorer(model, tok, prompt=prompt, batch_size=bs, padding_side=side,
                               progress=False).score(items)
            np.testing.assert_allclose(got.logits, ref.logits, atol=1e-4, rtol=0)
            assert (got.logits.argmax(1) == ref.logits.argmax(1)).all()
    assert ref.mask.sum(1).tolist() == [it.n_options for it in items]
    assert (ref.logits[~ref.mask] == 0).all()


def test_option_logits_match_full_forward(model_and_tok):
    """The K-row head at the answer position equals the full model's logits gathered there."""
    model, tok = model_and_tok
    items = make_items(4)
    enc = PromptEncoder(tok, "plain", 4)
    seqs = enc.encode_prompts(items)
    for seq in seqs:
        ids = torch.tensor([seq])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            full = model(input_ids=ids, attention_mask=mask).logits[0, -1, enc.letter_ids]
            ours = answer_logits(model, ids, mask, torch.tensor(enc.letter_ids))
        torch.testing.assert_close(ours[0], full, atol=1e-4, rtol=1e-4)


def test_last_positions_left_and_right():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert last_positions(right).tolist() == [2, 3, 0]
    assert last_positions(left).tolist() == [3, 3, 3]


def test_letters_must_be_single_tokens(tiny_llama):
    _, tok = load_model(str(tiny_llama), device="cpu")
    assert len(set(letter_token_ids(tok, 26, "plain"))) == 26

    class TwoTokenLetters:
        def encode(self, text, add_special_tokens=False):
            return [1, 2]

    with pytest.raises(ModelError, match="one token per letter"):
        letter_token_ids(TwoTokenLetters(), 4, "plain")


def test_chat_prompt_needs_a_template(tiny_llama):
    _, tok = load_model(str(tiny_llama), device="cpu")
    item = make_items(1)[0]
    assert render_prompt(item, "chat", tok).endswith("<|assistant|>")
    tok.chat_template = None
    with pytest.raises(ModelError, match="chat template"):
        render_prompt(item, "chat", tok)


def test_context_overflow_names_the_item(tmp_path):
    from conftest import build_model_folder

    folder = build_model_folder(tmp_path / "short", max_positions=16)
    model, tok = load_model(str(folder), device="cpu")
    items = make_items(3)
    with pytest.raises(DataError, match="longer than the model's context"):
        LetterScorer(model, tok, progress=False).score(items)


def test_nan_logits_are_reported(tiny_llama):
    model, tok = load_model(str(tiny_llama), device="cpu")
    with torch.no_grad():
        model.get_output_embeddings().weight[:] = float("nan")
    with pytest.raises(ModelError, match="NaN/inf"):
        LetterScorer(model, tok, progress=False).score(make_items(2))


def test_plan_batches_respects_limits():
    lengths = [5, 50, 7, 49, 10, 3]
    plan = plan_batches(lengths, batch_size=2, max_batch_tokens=60)
    flat = sorted(i for b in plan.batches for i in b)
    assert flat == list(range(6))
    for b in plan.batches:
        assert len(b) <= 2 and max(lengths[i] for i in b) * len(b) <= 60 or len(b) == 1


def test_option_scores_roundtrip(tmp_path):
    s = OptionScores(np.array([[1.0, 2.0, 0.0], [0.5, 0.1, 3.0]]), [1, 2],
                     [[True, True, False], [True, True, True]], ["a", "b"], {"model": "x"})
    s.save(tmp_path / "s.npz")
    back = OptionScores.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.logits, s.logits)
    assert back.meta == {"model": "x"} and back.ids.tolist() == ["a", "b"]
    np.testing.assert_allclose(back.probs()[0], [1 / (1 + np.e), np.e / (1 + np.e), 0.0])
