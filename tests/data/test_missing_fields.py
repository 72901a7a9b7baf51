"""A user's file missing a needed field (docs/reliability.md): the one line names the fields the row has and
the flag that maps them; following it, field by field, the file is read."""
import json

import numpy as np
from typer.testing import CliRunner

from calibtune.cli import app

runner = CliRunner()


def invoke(*args):
    res = runner.invoke(app, list(args))
    return res.exit_code, " ".join(res.output.split())


def refused(args, *must):
    code, text = invoke(*args)
    assert code == 2 and text.startswith("error: ") and "Traceback" not in text, text
    for fragment in must:
        assert fragment in text, text
    return text


def test_mcq_jsonl_with_other_field_names(tiny_llama, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"qid": f"q{i}", "prompt": "the sun ?",
                                        "choices": ["moon", "sun", "gas"], "gold": i % 3}) + "\n"
                            for i in range(6)))
    base = ["eval", "--model", str(tiny_llama), "--data", str(path), "--out",
            str(tmp_path / "out"), "--n-boot", "0"]
    has = "(the row has: qid, prompt, choices, gold)"
    refused(base, f"{path}, row 1, field 'question': missing field {has}",
            "name the question field with --question-field")
    base += ["--question-field", "prompt"]
    refused(base, "field 'options': missing field", has, "with --options-field")
    base += ["--options-field", "choices"]
    refused(base, "field 'answer': missing field", has, "with --answer-field")
    assert not (tmp_path / "out").exists()
    code, text = invoke(*base, "--answer-field", "gold", "--id-field", "qid")
    assert code == 0, text


def test_mcq_csv_with_one_option_column_missing(tiny_llama, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("question,a,b,c,answer\nthe sun ?,moon,sun,gas,1\n")
    refused(["eval", "--model", str(tiny_llama), "--data", str(path), "--options-field",
             "a,b,c,d", "--out", str(tmp_path / "out")],
            "row 1, field 'd': missing field (the row has: question, a, b, c, answer)",
            "--options-field")


def test_table_import_with_other_column_names(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("qid,gold,s0,s1,s2\n" + "".join(f"q{i},{i % 3},-1.0,-2.0,-0.5\n"
                                                   for i in range(8)))
    base = ["eval", "--from", "table", str(path), "--out", str(tmp_path / "out"), "--n-boot", "0"]
    has = "the row has: qid, gold, s0, s1, s2"
    refused(base, "no option columns found", has, "name them with --options-field")
    base += ["--options-field", "s0,s1,s2"]  # no id column needed: the row number is the id
    refused(base, "row 1, field 'label': missing field", has, "with --answer-field")
    assert not (tmp_path / "out").exists()
    code, text = invoke(*base, "--answer-field", "gold")
    assert code == 0, text
    assert np.load(tmp_path / "out" / "scores.npz")["ids"].tolist()[:2] == ["1", "2"]
    code, text = invoke(*base, "--answer-field", "gold", "--id-field", "qid", "--overwrite")
    assert code == 0, text
    assert np.load(tmp_path / "out" / "scores.npz")["ids"].tolist()[:2] == ["q0", "q1"]


def test_preference_pairs_name_the_fields_the_row_has(tiny_llama, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"question": "q", "good": "a", "bad": "b"}) + "\n")
    refused(["eval", "--model", str(tiny_llama), "--preferences", str(path), "--out",
             str(tmp_path / "out")],
            "missing fields prompt, chosen, rejected (the row has: bad, good, question)",
            "prompt, chosen and rejected")
