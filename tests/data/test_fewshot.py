"""Few-shot exemplars: never a scored item, drawn per group, deterministic per seed."""
import pytest

from calibtune.data import FieldMap, load_items
from calibtune.data.fewshot import draw_fewshot, group_of
from calibtune.data.items import MCQItem
from calibtune.errors import ConfigError
from conftest import items_to_rows, make_items, write_jsonl


def test_exemplars_are_never_scored_and_come_from_the_items_group():
    items = make_items(60)
    scored = items[::4]  # pool = all items: the scored ones must be left out
    fs = draw_fewshot(scored, items, 4, seed=0)
    scored_ids = {it.id for it in scored}
    assert set(fs.exemplars) == {group_of(it) for it in scored}
    for group, exs in fs.exemplars.items():
        assert len(exs) == 4 and len({ex.id for ex in exs}) == 4
        assert all(ex.id not in scored_ids and group_of(ex) == group for ex in exs)
    for it in scored:
        assert it.id not in {ex.id for ex in fs.for_item(it)}


def test_an_unscored_copy_of_a_scored_item_is_no_exemplar():
    items = make_items(12)
    copy = MCQItem("copy-of-q0", items[0].question + " ", items[0].options, items[0].answer,
                   items[0].subject)
    others = [it for it in items if it.subject == items[0].subject and it.id != "q0"]
    # k = the number of genuine candidates: the draw must take exactly them, whatever the seed
    # (a draw that let the copy in would pick it 3 times in 4 per seed)
    for seed in range(20):
        fs = draw_fewshot([items[0]], [copy] + others, len(others), seed=seed)
        assert set(fs.to_json()["groups"][items[0].subject]) == {it.id for it in others}


def test_the_draw_is_seeded_and_recorded():
    items = make_items(60)
    scored, pool = items[:12], items[12:]
    a, b = draw_fewshot(scored, pool, 3, 7), draw_fewshot(scored, pool, 3, 7)
    assert a.to_json() == b.to_json()
    assert a.to_json()["groups"] != draw_fewshot(scored, pool, 3, 8).to_json()["groups"]
    # a group's draw does not depend on which other groups are scored
    only_s0 = [it for it in scored if it.subject == "s0"]
    assert draw_fewshot(only_s0, pool, 3, 7).exemplars["s0"] == a.exemplars["s0"]
    assert a.to_json()["num_fewshot"] == 3 and a.to_json()["seed"] == 7


def test_too_few_candidates_is_one_clear_line():
    items = make_items(12)  # 4 per subject
    with pytest.raises(ConfigError) as err:
        draw_fewshot(items[:6], items, 3, 0)  # each subject keeps 2 unscored items
    msg = str(err.value)
    assert "\n" not in msg and "--num-fewshot 3" in msg and "3 of 3 group(s)" in msg
    assert "--fewshot-data" in msg


def test_group_field_overrides_the_subject(tmp_path):
    rows = items_to_rows(make_items(6))
    for i, r in enumerate(rows):
        r["topic"] = "even" if i % 2 == 0 else "odd"
    path = write_jsonl(tmp_path / "items.jsonl", rows)
    items = load_items(path, FieldMap(group="topic")).items
    assert [group_of(it) for it in items] == ["even", "odd"] * 3
    assert items[0].subject == "s0"  # the subject (and per-group table) is untouched
    assert [group_of(it) for it in load_items(path).items] == ["s0", "s1", "s2"] * 2
