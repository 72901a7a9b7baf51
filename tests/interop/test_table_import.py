"""Per-option score tables (CSV / JSONL / Parquet) into OptionScores, and one-line row errors."""
import json

import numpy as np
import pytest

from calibtune.errors import DataError
from calibtune.interop.table import load_option_table


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_csv_numbered_option_columns_logprob_with_fewer_options(tmp_path):
    f = write_csv(tmp_path / "s.csv", ["id", "label", "option_0", "option_1", "option_2"],
                  [["a", 2, -1.0, -2.0, -0.5], ["b", "B", -0.1, -3.0, ""], ["c", "0", -0.7, -0.7, ""]])
    s = load_option_table(f)
    assert s.ids.tolist() == ["a", "b", "c"] and s.labels.tolist() == [2, 1, 0]
    assert s.mask.tolist() == [[True] * 3, [True, True, False], [True, True, False]]
    np.testing.assert_allclose(s.logits[0], [-1.0, -2.0, -0.5])
    assert s.logits[1, 2] == 0.0 and s.probs()[1, 2] == 0.0
    assert s.meta["kind"] == "logprob" and s.meta["options"] == ["option_0", "option_1", "option_2"]


def test_letter_columns_probabilities_round_trip(tmp_path):
    f = write_csv(tmp_path / "s.csv", ["id", "label", "A", "B", "C", "D", "note"],
                  [[1, "D", 0.1, 0.2, 0.3, 0.4, "x"], [2, "a", 0.7, 0.1, 0.1, 0.1, "y"]])
    s = load_option_table(f, kind="prob")
    np.testing.assert_allclose(s.probs(), [[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    assert s.labels.tolist() == [3, 0] and s.ids.tolist() == ["1", "2"]


def test_list_column_jsonl_and_renormalise(tmp_path):
    f = write_jsonl(tmp_path / "s.jsonl", [{"qid": "x", "gold": 1, "p": [0.2, 0.6]},
                                           {"qid": "y", "gold": "C", "p": [1, 1, 2]}])
    with pytest.raises(DataError) as err:
        load_option_table(f, id_col="qid", label_col="gold", options="p", kind="prob")
    assert str(err.value).startswith(f"{f}, row 1, field 'p[0],p[1]': probabilities sum to 0.8")
    assert err.value.row == 1 and err.value.file == str(f) and "\n" not in str(err.value)
    s = load_option_table(f, id_col="qid", label_col="gold", options="p", kind="prob",
                          renormalise=True)
    np.testing.assert_allclose(s.probs(), [[0.25, 0.75, 0.0], [0.25, 0.25, 0.5]])
    assert s.mask.sum(1).tolist() == [2, 3] and s.labels.tolist() == [1, 2]


def test_sum_tolerance(tmp_path):
    f = write_jsonl(tmp_path / "s.jsonl", [{"id": "x", "label": 0, "options": [0.5004, 0.5]}])
    assert load_option_table(f, options="options", kind="prob").probs()[0].sum() == pytest.approx(1)
    f = write_jsonl(tmp_path / "t.jsonl", [{"id": "x", "label": 0, "options": [0.502, 0.5]}])
    with pytest.raises(DataError, match="sum to 1.002"):
        load_option_table(f, options="options", kind="prob")


def test_parquet_with_configured_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "label": [1, 0], "s1": [-2.0, -1.0],
                             "s2": [-0.1, -0.5], "s3": [-3.0, None]}), f)
    s = load_option_table(f, options=["s1", "s2", "s3"])
    assert s.mask.tolist() == [[True, True, True], [True, True, False]]
    np.testing.assert_allclose(s.logits, [[-2.0, -0.1, -3.0], [-1.0, -0.5, 0.0]])
    f2 = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": ["a"], "label": [1], "scores": [[-2.0, -0.1, -3.0]]}), f2)
    s = load_option_table(f2, options="scores")
    np.testing.assert_allclose(s.logits, [[-2.0, -0.1, -3.0]])


@pytest.mark.parametrize("rows,kwargs,match,row,field", [
    ([["a", 5, -1, -2]], {}, "label index 5 out of range for 2 options", 1, "label"),
    ([["a", "Z", -1, -2]], {}, "label letter 'Z' out of range", 1, "label"),
    ([["a", "foo", -1, -2]], {}, "label 'foo' is not an index or a letter", 1, "label"),
    ([["a", "B", -1, -2]], {"label_format": "index"}, "is not an integer index", 1, "label"),
    ([["a", 0, -1, -2], ["a", 1, -1, -2]], {}, "duplicate id 'a' \\(first seen in row 1\\)", 2,
     "id"),
    ([["a", 0, -1, "abc"]], {}, "not a number: 'abc'", 1, "option_1"),
    ([["a", 0, "nan", -2]], {}, "score must be finite", 1, "option_0"),
    ([["a", 0, "", -2]], {}, "empty option score before a filled one", 1, "option_0"),
    ([["a", 0, -1, ""]], {}, "1 option scores; need 2 to 26", 1, "option_0,option_1"),
    ([["", 0, -1, -2]], {}, "missing id", 1, "id"),
    ([["a", 0, 1.2, -0.2]], {"kind": "prob"}, "probability 1.2 outside", 1, "option_0"),
])
def test_bad_rows_raise_one_line_data_errors(tmp_path, rows, kwargs, match, row, field):
    f = write_csv(tmp_path / "bad.csv", ["id", "label", "option_0", "option_1"], rows)
    with pytest.raises(DataError, match=match) as err:
        load_option_table(f, **kwargs)
    assert (err.value.file, err.value.row, err.value.field) == (str(f), row, field)
    assert "\n" not in str(err.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_option_table(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="unknown file type"):
        load_option_table(write_csv(tmp_path / "s.tsv", ["id"], [["a"]]))
    with pytest.raises(DataError, match="no option columns found"):
        load_option_table(write_csv(tmp_path / "s.csv", ["id", "label", "x"], [["a", 0, 1]]))
    with pytest.raises(DataError, match="missing field"):
        load_option_table(write_csv(tmp_path / "t.csv", ["id", "option_0", "option_1"],
                                    [["a", -1, -2]]))
    with pytest.raises(DataError, match="kind must be"):
        load_option_table(tmp_path / "t.csv", kind="logit")
    (tmp_path / "e.csv").write_text("id,label,option_0,option_1\n")
    with pytest.raises(DataError, match="no rows"):
        load_option_table(tmp_path / "e.csv")
    (tmp_path / "m.jsonl").write_text('{"id": "a", "label": 0, "options": [0, 1]}\n{oops\n')
    with pytest.raises(DataError, match="malformed JSON") as err:
        load_option_table(tmp_path / "m.jsonl", options="options")
    assert err.value.row == 2


def test_without_an_id_column_the_row_number_is_the_id(tmp_path):
    s = load_option_table(write_csv(tmp_path / "s.csv", ["label", "A", "B"],
                                    [[0, -1, -2], [1, -3, -0.5], ["B", -2, -1]]))
    assert s.ids.tolist() == ["1", "2", "3"] and s.meta["id"] == "row number"
    j = load_option_table(write_jsonl(tmp_path / "s.jsonl", [{"label": 1, "scores": [0.1, 0.9]},
                                                           {"label": 0, "scores": [0.6, 0.4]}]),
                          options="scores", kind="prob")
    assert j.ids.tolist() == ["1", "2"]
    with pytest.raises(DataError, match="missing field") as err:  # a named id column must exist
        load_option_table(tmp_path / "s.csv", id_col="qid")
    assert err.value.field == "qid"


def test_minus_inf_log_probability_means_probability_zero(tmp_path):
    f = write_csv(tmp_path / "s.csv", ["id", "label", "A", "B", "C"],
                  [["a", 0, -0.5, "-inf", -1.5], ["b", 2, "-inf", -400.0, -401.0]])
    p = load_option_table(f).probs()
    assert p[0, 1] <= 1e-14 and p[1, 0] <= 1e-14
    q = np.exp([-0.5, -1.5])
    np.testing.assert_allclose(p[0, [0, 2]], q / q.sum(), atol=1e-12)
    q = np.exp([0.0, -1.0])  # logits far below 0: still relative to the row's best option
    np.testing.assert_allclose(p[1, [1, 2]], q / q.sum(), atol=1e-12)


@pytest.mark.parametrize("rows,kwargs,match,field", [
    ([["a", 0, "-inf", "-inf"]], {}, "every option's log-probability is -inf", "option_0,option_1"),
    ([["a", 0, "inf", -1]], {}, "score must be finite, got inf", "option_0"),
    ([["a", 0, "-inf", 1]], {"kind": "prob"}, "score must be finite, got -inf", "option_0"),
])
def test_infinite_scores_that_mean_nothing_are_refused(tmp_path, rows, kwargs, match, field):
    f = write_csv(tmp_path / "bad.csv", ["id", "label", "option_0", "option_1"], rows)
    with pytest.raises(DataError, match=match) as err:
        load_option_table(f, **kwargs)
    assert (err.value.row, err.value.field) == (1, field) and "\n" not in str(err.value)


def test_cli_reads_a_table_without_ids_and_with_minus_inf(tmp_path):
    from typer.testing import CliRunner

    from calibtune.cli import app

    f = write_csv(tmp_path / "s.csv", ["label", "A", "B", "C"],
                  [[0, -0.2, "-inf", -2.0], [2, -1.0, -2.0, -0.3], [1, -3.0, -0.1, "-inf"]])
    res = CliRunner().invoke(app, ["eval", "--from", "table", str(f), "--out", str(tmp_path / "r"),
                                   "--n-boot", "10"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["accuracy"] == pytest.approx(1.0)
