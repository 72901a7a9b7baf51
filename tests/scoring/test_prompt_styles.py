"""The reference code's prompt template, exactly, and its letters without a space."""
from calibtune.models import load_model
from calibtune.scoring.prompts import PromptEncoder, render_prompt

from conftest import make_items

def test_reference_template_is_the_reference_codes_exactly():
    item = make_items(1, k=3)[0]
    text = render_prompt(item, "reference")
    opts = "\n".join(f"{'ABC'[i]}. {o}" for i, o in enumerate(item.options))
    assert text == (f"### Question: Question: {item.question}\n\nOptions:\n{opts}\n\n"
                    "Answer with only a single letter:\n ### Answer:")


def test_reference_style_letters_follow_without_a_space(tiny_llama):
    _, tok = load_model(str(tiny_llama), device="cpu")
    plain, ref = PromptEncoder(tok, "plain"), PromptEncoder(tok, "reference")
    assert plain.letter_ids == [tok.encode(" " + c, add_special_tokens=False)[0] for c in "ABCD"] \
        or plain.letter_ids == [tok.encode(c, add_special_tokens=False)[0] for c in "ABCD"]
    assert ref.letter_ids == [tok.encode(c, add_special_tokens=False)[0] for c in "ABCD"]
