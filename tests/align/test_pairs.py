"""Preference pairs from MCQ items and from a user's JSONL file: correct, seeded, validated."""
import json

import pytest

from calibtune.align.config import AlignConfig
from calibtune.align.dpo import encode_pair
from calibtune.align.pairs import (load_preferences, pairs_from_items, pairs_to_jsonl,
                                   split_pairs, wrong_option)
from calibtune.scoring.cloze import cloze_context
from calibtune.scoring.cloze import encode_continuation as cloze_encode_pair
from calibtune.data.items import LETTERS
from calibtune.errors import ConfigError, DataError
from calibtune.scoring.prompts import PROMPT_STYLES, PromptEncoder, letter_prefix, render_prompt

from conftest import build_tokenizer, make_items, write_jsonl


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def items():
    return make_items(30, k=[4, 3, 5, 2], seed=3)


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_letter_pairs_hold_the_gold_letter_over_a_wrong_one(style, items, tok):
    pairs = pairs_from_items(items, scoring="letter", style=style, tokenizer=tok, seed=0)
    assert [p.id for p in pairs] == [it.id for it in items]
    prefix = letter_prefix(style)
    for pair, it in zip(pairs, items):
        assert pair.prompt == render_prompt(it, style, tok)
        assert pair.chosen == prefix + LETTERS[it.answer]
        wrong = LETTERS.index(pair.rejected[len(prefix):])
        assert pair.rejected == prefix + LETTERS[wrong]
        assert wrong != it.answer and 0 <= wrong < it.n_options
        assert pair.chat == (style == "chat")
        # the tokens the pair trains on are the prompt and letter the letter scorer reads
        enc = encode_pair(tok, pair)
        encoder = PromptEncoder(tok, style, it.n_options)
        assert enc.prompt_ids == encoder.encode_prompts([it])[0]
        assert enc.chosen_ids == [encoder.letter_ids[it.answer]]
        assert enc.rejected_ids == [encoder.letter_ids[wrong]]


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_cloze_pairs_hold_the_gold_text_after_the_cloze_context(style, items, tok):
    pairs = pairs_from_items(items, scoring="cloze", style=style, tokenizer=tok, seed=0)
    for pair, it in zip(pairs, items):
        assert pair.prompt == cloze_context(it)  # cloze reads no prompt style
        assert pair.chosen == " " + it.options[it.answer].strip()
        wrong = [" " + o.strip() for o in it.options].index(pair.rejected)
        assert wrong != it.answer
        assert not pair.chat
        enc = encode_pair(tok, pair)
        ctx, gold = cloze_encode_pair(tok, cloze_context(it), " " + it.options[it.answer].strip())
        _, bad = cloze_encode_pair(tok, cloze_context(it), " " + it.options[wrong].strip())
        assert (enc.prompt_ids, enc.chosen_ids, enc.rejected_ids) == (ctx, gold, bad)


def test_rejected_option_is_seeded_reproducible_and_order_free(items, tok):
    a = pairs_from_items(items, seed=7)
    assert a == pairs_from_items(items, seed=7)
    assert a[::-1] == pairs_from_items(items[::-1], seed=7)  # one item's draw ignores the others
    assert pairs_from_items(items[:5], seed=7) == a[:5]
    other = pairs_from_items(items, seed=8)
    assert any(x.rejected != y.rejected for x, y in zip(a, other))
    # over many seeds every wrong option of a 5-option item is drawn, the gold never
    five = next(it for it in items if it.n_options == 5)
    drawn = {wrong_option(five, s) for s in range(200)}
    assert drawn == set(range(5)) - {five.answer}
    # letter and cloze pairs of an item reject the same option
    letter = pairs_from_items(items, scoring="letter", seed=7)
    cloze = pairs_from_items(items, scoring="cloze", seed=7)
    assert [p.meta["rejected_option"] for p in letter] == [p.meta["rejected_option"] for p in cloze]


def test_unknown_scoring_is_a_config_error(items):
    with pytest.raises(ConfigError, match="--scoring"):
        pairs_from_items(items, scoring="logprob")


def good_rows():
    return [{"prompt": "the sun ?", "chosen": " light", "rejected": " stone"},
            {"id": "p2", "prompt": "the moon ?", "chosen": " water", "rejected": " heat"}]


def test_a_valid_file_loads_and_round_trips(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", good_rows())
    loaded = load_preferences(path)
    assert [p.id for p in loaded.pairs] == ["prefs:1", "p2"]
    assert loaded.pairs[1].chosen == " water" and not loaded.pairs[1].chat
    again = tmp_path / "again.jsonl"
    again.write_text(pairs_to_jsonl(loaded.pairs))
    assert [(p.prompt, p.chosen, p.rejected) for p in load_preferences(again).pairs] == \
        [(p.prompt, p.chosen, p.rejected) for p in loaded.pairs]


BAD_ROWS = [
    ({"prompt": "q", "chosen": "a"}, "rejected", r"missing field rejected \(the row has: chosen, prompt\)"),
    ({"question": "q", "answer": "a"}, "prompt",
     r"missing fields prompt, chosen, rejected \(the row has: answer, question\)"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "prompt", "empty prompt"),
    ({"prompt": "q", "chosen": "   ", "rejected": "b"}, "chosen", "empty chosen"),
    ({"prompt": "q", "chosen": "a", "rejected": None}, "rejected", "empty rejected"),
    ({"prompt": "q", "chosen": 3, "rejected": "b"}, "chosen", "chosen must be a string, got int"),
    ({"prompt": ["q"], "chosen": "a", "rejected": "b"}, "prompt",
     "prompt must be a string, got list"),
    ({"prompt": "q", "chosen": "a", "rejected": True}, "rejected",
     "rejected must be a string, got bool"),
    ({"prompt": "q", "chosen": " same", "rejected": "same "}, "rejected",
     "chosen and rejected are the same text"),
    ({"id": "p2", "prompt": "q", "chosen": "a", "rejected": "b"}, "id", "duplicate id 'p2'"),
]


@pytest.mark.parametrize("row,field,message", BAD_ROWS)
def test_a_bad_row_fails_in_one_line_naming_file_row_and_field(row, field, message, tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", good_rows() + [row])
    with pytest.raises(DataError, match=message) as err:
        load_preferences(path)
    assert (err.value.file, err.value.row, err.value.field) == (str(path), 3, field)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}, row 3, field '{field}': ")


@pytest.mark.parametrize("line,message", [("{not json", "malformed JSON"),
                                          ('["a list"]', "expected a JSON object")])
def test_malformed_lines_fail_naming_the_line(line, message, tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(good_rows()[0]) + "\n\n" + line + "\n")
    with pytest.raises(DataError, match=message) as err:
        load_preferences(path)
    assert err.value.row == 3 and "\n" not in str(err.value)


def test_skip_invalid_keeps_the_good_rows_and_lists_the_bad(tmp_path):
    rows = good_rows() + [{"prompt": "q", "chosen": "a", "rejected": "a"}, {"prompt": "q"}]
    loaded = load_preferences(write_jsonl(tmp_path / "p.jsonl", rows), skip_invalid=True)
    assert len(loaded.pairs) == 2
    assert [(e.row, e.field) for e in loaded.rejected] == [(3, "rejected"), (4, "chosen")]


@pytest.mark.parametrize("name,content,message", [
    ("none.jsonl", None, "file not found"), ("p.csv", "prompt,chosen\n", "unknown file type"),
    ("empty.jsonl", "\n\n", "holds no rows")])
def test_unusable_files_fail_clearly(name, content, message, tmp_path):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_preferences(path)


def test_a_bad_preference_file_stops_align_before_anything_is_written(tmp_path):
    from calibtune.workflows.align import run_alignment

    path = write_jsonl(tmp_path / "p.jsonl", good_rows() + [{"prompt": "q", "chosen": 1,
                                                              "rejected": "b"}])
    out = tmp_path / "run"
    with pytest.raises(DataError, match="row 3, field 'chosen'"):
        run_alignment(AlignConfig(model="no-such-model", preferences=str(path), out=str(out)))
    assert not out.exists()


def test_split_pairs_is_seeded_and_disjoint(tmp_path):
    pairs = pairs_from_items(make_items(20))
    train, held = split_pairs(pairs, 0.25, seed=1)
    assert len(held) == 5 and len(train) == 15
    assert {p.id for p in train}.isdisjoint({p.id for p in held})
    assert (train, held) == split_pairs(pairs, 0.25, seed=1)
    assert held != split_pairs(pairs, 0.25, seed=2)[1]
    with pytest.raises(ConfigError):
        split_pairs(pairs[:2], 0.1)


@pytest.mark.parametrize("kw,match", [
    ({"loss": "kto"}, "--loss must be one of dpo, ipo"), ({"beta": 0}, "--beta"),
    ({"beta": -0.5}, "--beta"), ({"beta": float("nan")}, "--beta"),
    ({"beta": float("inf")}, "--beta"), ({"scoring": "x"}, "--scoring"),
    ({"prompt": "fancy"}, "--prompt"), ({"heldout_fraction": 1.0}, "--heldout-fraction"),
    ({"train_limit": 0}, "--train-limit"), ({"lora_dropout": 1.0}, "--lora-dropout"),
    ({"learning_rate": 0}, "--learning-rate"), ({"data": "", "preferences": None}, "--data")])
def test_align_config_is_validated(kw, match):
    with pytest.raises(ConfigError, match=match):
        AlignConfig(**kw)
    assert AlignConfig(loss="ipo", beta=0.5).method == "ipo"


def test_align_config_loads_from_yaml_with_the_command_line_winning(tmp_path):
    from calibtune.config import build_config

    path = tmp_path / "a.yaml"
    path.write_text("loss: ipo\nbeta: 0.3\nlora_r: 8\npreferences: hhh\n")
    cfg = build_config(AlignConfig, path, {"beta": 0.05, "out": None})
    assert (cfg.loss, cfg.beta, cfg.lora_r, cfg.preferences) == ("ipo", 0.05, 8, "hhh")
    path.write_text("loss: dpo\nlambda: 1\n")
    with pytest.raises(ConfigError, match="unknown option"):
        build_config(AlignConfig, path, {})
