"""Shared fixtures: tiny random Llama/Qwen-style models with a word-level tokenizer, built here."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from calibtune.data.items import LETTERS, MCQItem  # noqa: E402

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def make_items(n: int = 12, k: int = 4, seed: int = 0) -> list[MCQItem]:
    """Items of varied length (so padding matters) with answers spread over the options."""
    import random

    rng = random.Random(seed)
    words = "the cell energy river stone light water heat moon sun plant gas iron salt".split()
    items = []
    for i in range(n):
        kk = k if isinstance(k, int) else k[i % len(k)]
        q = " ".join(rng.choice(words) for _ in range(3 + (i * 7) % 23)) + " ?"
        opts = tuple(f"{rng.choice(words)} {rng.choice(words)} {j}" for j in range(kk))
        items.append(MCQItem(id=f"q{i}", question=q, options=opts, answer=rng.randrange(kk),
                             subject=f"s{i % 3}"))
    return items


def build_tokenizer(extra_words: list[str] | None = None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    words = set("the cell energy river stone light water heat moon sun plant gas iron salt ? ### "
                "Question : Answer . Answer with the letter of correct option only".split())
    words |= set(LETTERS) | {str(i) for i in range(30)} | set(extra_words or [])
    vocab = {t: i for i, t in enumerate(specials + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model_folder(path: Path, arch: str = "llama", vocab_size: int = 128, seed: int = 0,
                       max_positions: int = 512, hidden_size: int = 32) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    tokenizer = build_tokenizer()
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden_size,
                  intermediate_size=2 * hidden_size,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = LlamaConfig(**common, tie_word_embeddings=True) if arch == "llama" else \
        Qwen2Config(**common, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger weights than the default init so letters differ visibly
        for p in model.parameters():
            p.mul_(8.0 if p.ndim == 2 else 1.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_model_folder(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    return build_model_folder(tmp_path_factory.mktemp("tiny-qwen"), "qwen2", seed=1)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def items_to_rows(items: list[MCQItem]) -> list[dict]:
    return [{"id": it.id, "question": it.question, "options": list(it.options),
             "answer": it.answer, "subject": it.subject} for it in items]


def write_train_eval(folder: Path, train_items: list[MCQItem], eval_items: list[MCQItem]) -> Path:
    """train.jsonl and eval.jsonl in `folder`; eval ids are prefixed so the two never overlap."""
    write_jsonl(folder / "train.jsonl", items_to_rows(train_items))
    rows = items_to_rows(eval_items)
    for r in rows:
        r["id"] = "eval-" + r["id"]
    write_jsonl(folder / "eval.jsonl", rows)
    return folder


def tiny_train_config(model: Path, data: Path, tmp_path: Path, **overrides):
    """A TrainRunConfig for a seconds-long LoRA run on a tiny model and `write_train_eval` files."""
    from calibtune.workflows.config import TrainRunConfig

    base = dict(model=str(model), data=str(data / "train.jsonl"), split=None,
                eval_data=str(data / "eval.jsonl"), eval_split=None, eval_limit=None,
                batch_size=4, lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=5e-3,
                logging_steps=1, out=str(tmp_path / "run"))
    return TrainRunConfig(**(base | overrides))
