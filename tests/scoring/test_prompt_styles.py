"""The reference code's prompt template, exactly, and its letters without a space."""
from calibtune.scoring.prompts import PromptEncoder, render_prompt

from conftest import make_items

def test_reference_template_is_the_reference_codes_exactly():
    item = make_items(1, k=3)[0]
    text = render_prompt(item, "reference")
    opts = "\n".join(f"{'ABC'[i]}. {o}" for i, o in enumerate(item.options))
    assert text == (f"### Question: Question: {item.question}\n\nOptions:\n{opts}\n\n"
                    "Answer with only a single letter:\n ### Answer:")


def space_aware_tokenizer():
    """A word-level tokenizer whose pre-tokenizer keeps a leading space as part of the token
    (byte-level, as GPT-2/Llama-3 tokenizers do): " A" and "A" are different tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    letters = list("ABCD")
    vocab = {t: i for i, t in enumerate(["<unk>"] + letters + ["\u0120" + c for c in letters])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_reference_style_letters_follow_without_a_space():
    tok = space_aware_tokenizer()
    spaced = [tok.convert_tokens_to_ids("\u0120" + c) for c in "ABCD"]
    bare = [tok.convert_tokens_to_ids(c) for c in "ABCD"]
    assert len(set(spaced + bare)) == 8  # the tokenizer tells the two apart
    assert PromptEncoder(tok, "plain").letter_ids == spaced  # "Answer: A"
    assert PromptEncoder(tok, "reference").letter_ids == bare  # "Answer:A", as the reference code
    assert PromptEncoder(tok, "chat").letter_ids == bare  # the assistant turn's first token

