"""Run-folder files: strict JSON (null, never NaN) and the permissions a plain write gives."""
import json
import os

import numpy as np

from calibtune.integrity import atomic_write_json, atomic_write_text
from calibtune.scores import OptionScores


def strict_json(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=refuse)

def test_metrics_json_is_strict_json_with_null_for_empty_bins(tmp_path):
    from calibtune.workflows.run_folder import write_run

    rng = np.random.default_rng(0)
    z = rng.normal(size=(30, 4)) * 4
    scores = OptionScores(z, rng.integers(0, 4, 30), np.ones((30, 4), bool),
                          [f"q{i}" for i in range(30)])
    write_run(tmp_path, scores, title="t", context={}, n_boot=20)
    text = (tmp_path / "metrics.json").read_text()
    bins = strict_json(text)["bins"]
    empty = [c == 0 for c in bins["count"]]
    assert any(empty) and not all(empty)  # 30 items over 10 bins leave some bin empty
    for key in ("accuracy", "confidence", "gap"):  # null exactly where a bin is empty
        assert [v is None for v in bins[key]] == empty, key
    assert all(0 <= a <= 1 for a in bins["accuracy"] if a is not None)
    assert "NaN" not in text and "Infinity" not in text


def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_json(tmp_path / "b.json", {"x": float("nan")})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
        assert strict_json((tmp_path / "b.json").read_text()) == {"x": None}
    finally:
        os.umask(old)
