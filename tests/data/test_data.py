import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calibtune.data import (FieldMap, load_dataset, load_items, random_split, sample_items,
                            subject_split)
from calibtune.errors import ConfigError, DataError

from conftest import make_items, write_jsonl

GOOD = {"id": "x1", "question": "Q?", "options": ["a", "b", "c"], "answer": 1}


def row(**kw):
    r = dict(GOOD)
    r.update(kw)
    return {k: v for k, v in r.items() if v is not ...}


@pytest.mark.parametrize("bad, field, message", [
    (row(question=...), "question", "missing field"),
    (row(options=...), "options", "missing field"),
    (row(answer=...), "answer", "missing field"),
    (row(answer=3), "answer", "out of range"),
    (row(answer="D"), "answer", "out of range"),
    (row(answer="zebra"), "answer", "not among the options"),
    (row(options=["a"]), "options", "1 options; need 2 to 26"),
    (row(options=[f"o{i}" for i in range(27)]), "options", "27 options"),
    (row(options=["a", "", "c"]), "options[1]", "empty option"),
    (row(options=["a", "b", "a "]), "options[2]", "duplicate option"),
    (row(question=""), "question", "empty question"),
    (row(question=["not", "text"]), "question", "must be text"),
    (row(options="a,b"), "options", "must be a list"),
    (row(answer=True), "answer", "answer must be"),
    (row(question="x" * 100_001), "question", "characters"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, bad, field, message):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD | {"id": "x0"}, bad])
    with pytest.raises(DataError) as info:
        load_items(path)
    err = info.value
    assert (err.file, err.row, err.field) == (str(path), 2, field)
    assert message in str(err)
    assert str(err).startswith(f"{path}, row 2, field '{field}'")
    assert "\n" not in str(err)


def test_answer_formats(tmp_path):
    rows = [row(id="i", answer=2), row(id="l", answer="C"), row(id="t", answer="c"),
            row(id="s", answer="2")]
    items = load_items(write_jsonl(tmp_path / "d.jsonl", rows)).items
    assert [it.answer for it in items] == [2, 2, 2, 2]
    with pytest.raises(DataError, match="not a letter"):
        load_items(write_jsonl(tmp_path / "e.jsonl", [row(answer=1)]),
                   FieldMap(answer_format="letter"))


def test_malformed_json_and_duplicate_ids(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(DataError, match=r"row 2: malformed JSON"):
        load_items(p)
    p.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(DataError, match=r"row 2, field 'id': duplicate id 'x1'"):
        load_items(p)


def test_skip_invalid_keeps_good_rows(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [GOOD, row(id="b", answer=9), row(id="c")])
    result = load_items(p, skip_invalid=True)
    assert [it.id for it in result.items] == ["x1", "c"]
    assert [(e.row, e.field) for e in result.rejected] == [(2, "answer")]


def test_bom_and_bad_encoding(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert load_items(p).items[0].id == "x1"
    p.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"question": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"row 2: not valid UTF-8"):
        load_items(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    with pytest.raises(DataError, match="no rows"):
        load_items(p)


def test_csv_with_option_columns_and_quoting(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('q,a,b,c,ans\n"Which, of these?","x, y","z",w,B\n"Two?",p,q,,A\n')
    items = load_items(p, FieldMap(question="q", options=("a", "b", "c"), answer="ans",
                                   id=None, subject=None)).items
    assert items[0].options == ("x, y", "z", "w") and items[0].answer == 1
    assert items[1].options == ("p", "q") and items[0].id == "d:1"
    p.write_text('q,a,b,ans\n"Open quote,x,y,A\n')
    with pytest.raises(DataError, match="row 1"):
        load_items(p, FieldMap(question="q", options=("a", "b"), answer="ans"))


def test_parquet(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD, row(id="x2", answer=5)]), p)
    with pytest.raises(DataError, match=r"row 2, field 'answer'"):
        load_items(p)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_items(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        load_items(tmp_path / "d.txt")


def test_seeded_splits_are_deterministic_and_disjoint():
    items = make_items(40)
    assert sample_items(items, 10, 3) == sample_items(items, 10, 3)
    assert sample_items(items, 10, 3) != sample_items(items, 10, 4)
    a, b = random_split(items, 0.25, seed=1)
    assert len(a) == 10 and len(b) == 30 and not {i.id for i in a} & {i.id for i in b}
    tr, te = subject_split(items, 0.3, seed=0)
    assert not {i.subject for i in tr} & {i.subject for i in te}
    assert len(tr) + len(te) == 40
    with pytest.raises(ConfigError):
        random_split(items, 1.5)


def test_builtin_mmlu():
    full = load_dataset("mmlu")
    assert len(full.items) == 14042 - 9  # 9 MMLU errata with duplicated options are dropped
    assert len({it.subject for it in full.items}) == 57
    assert all(it.n_options == 4 for it in full.items[:100])
    train, test = load_dataset("mmlu", "train").items, load_dataset("mmlu", "test").items
    assert len(train) + len(test) == len(full.items)
    assert not {i.subject for i in train} & {i.subject for i in test}
    assert 0.2 < len(train) / len(full.items) < 0.35
    with pytest.raises(ConfigError, match="splits"):
        load_dataset("mmlu", "validation")


def test_evals_parsers_take_the_options_out_of_the_text():
    from calibtune.data.evals_sets import parse_medmcqa, parse_quartz, parse_socialiqa

    q, opts, a = parse_socialiqa("Kai sat down; then what? A: rest; B: run, fast; C: eat cake.", "C")
    assert (q, opts, a) == ("Kai sat down; then what?", ["rest", "run, fast", "eat cake"], 2)
    q, opts, a = parse_quartz("Heavier objects\n fall\n\n A: faster\n B: slower", "B")
    assert (q, opts, a) == ("Heavier objects\n fall", ["faster", "slower"], 1)
    q, opts, a = parse_medmcqa("Subject: Anatomy\n\nWhich bone?\nPick one.\n\na) Femur\nb) Ulna\n"
                               "c) Tibia\nd) Radius", "c) Tibia")
    assert (q, opts, a) == ("Which bone?\nPick one.", ["Femur", "Ulna", "Tibia", "Radius"], 2)
    with pytest.raises(ValueError, match="option letters"):
        parse_socialiqa("Q? A: x; B: y; C: z.", "D")
    with pytest.raises(ValueError, match="expected"):
        parse_quartz("no options here", "A")
    with pytest.raises(ValueError, match="expected"):
        parse_medmcqa("Subject: X\n\nQ\n\na) one\nc) three", "a) one")


def test_evals_rows_that_do_not_parse_are_dropped_with_their_line(tmp_path, caplog):
    import logging

    from calibtune.data.evals_sets import load_evals_jsonl, parse_socialiqa

    rows = [{"input": [{"role": "user", "content": "Q1? A: a; B: b; C: c."}], "ideal": "A"},
            {"input": [{"role": "user", "content": "Q2? A: same; B: same; C: c."}], "ideal": "B"},
            {"input": [{"role": "user", "content": "garbled"}], "ideal": "A"},
            {"input": [], "ideal": "A"}]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.DEBUG, logger="calibtune.data.evals_sets"):
        result = load_evals_jsonl(path, "s", parse_socialiqa)
    assert [it.id for it in result.items] == ["s-1"]
    assert "row 2, field 'options[1]': duplicate option" in caplog.text
    assert "row 3, field 'input'" in caplog.text and "row 4, field 'input'" in caplog.text


@pytest.mark.parametrize("name,n_items,k", [("socialiqa", 2219, 3), ("quartz", 3860, 2),
                                            ("medmcqa", 299, 4)])
def test_builtin_evals_sets(name, n_items, k):
    import importlib.util

    if importlib.util.find_spec("evals") is None:  # importing evals needs its own deps: find it
        pytest.skip("pip install --no-deps evals==3.0.1.post1")
    full = load_dataset(name).items
    assert len(full) == n_items and all(it.n_options == k for it in full)
    train, test = load_dataset(name, "train").items, load_dataset(name, "test").items
    assert len(train) + len(test) == n_items and not {i.id for i in train} & {i.id for i in test}
    assert [i.id for i in load_dataset(name, "train").items] == [i.id for i in train]
