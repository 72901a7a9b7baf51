"""`calibtune eval`, `posthoc` and `train` write the run folders they wrote before the layering
refactor: the files in golden/ were made by commit 42a46d2 (main before the layering merge,
after the fidelity changes of issue 13) with tests/golden_runs.py (same CLI flags, same tiny
model). What was added since may only add: options in config.yaml with their defaults
(ADDED), new keys in JSON files, sections at the end of report.md (golden lines
in order, new sections between), a `groups` array in
scores.npz; everything the golden files hold must be unchanged. Text files compare byte for
byte wherever the scores they come from are bit-equal (always, on the machine that made
them); scores compare to float tolerance."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from golden_runs import KEPT, collect, make_runs, posthoc_args, read_scores

GOLDEN = Path(__file__).parent / "golden"
NUMBER = re.compile(r"-?\d+\.\d+(e-?\d+)?")
TOLERANCE = {"train/eval/scores.npz": 1e-3}  # after two optimiser steps
FEWSHOT = ["fewshot_data: null\n", "fewshot_seed: null\n", "num_fewshot: 0\n"]  # issue 19
ADDED = {"train/config.yaml": ["eval_seed: null\n", "base_adapter: null\n",
                               "max_step_tokens: null\n", *FEWSHOT],
         "eval/config.yaml": ["base_adapter: null\n", "device_map: null\n", "max_memory: null\n",
                              *FEWSHOT],
         "posthoc/config.yaml": ["num_fewshot: null\n"]}  # options added after the golden run


def without_added(rel: str, text: str) -> str:
    for line in ADDED.get(rel, []):
        text = text.replace(line, "", 1)
    return text


@pytest.fixture(scope="module")
def now(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("golden-now")
    make_runs(root / "runs", tiny_llama)
    collect(root / "runs", tiny_llama, root / "now")
    return root / "now"


def same_scores(old: Path, new: Path, atol: float) -> bool:
    """Assert the arrays agree (ids, labels, mask, meta exactly); True when bit-equal."""
    a, b = (read_scores(p, Path("/nowhere"), Path("/nowhere")) for p in (old, new))
    assert set(a) <= set(b) and set(b) - set(a) <= {"groups", "format"}
    for key in ("labels", "mask", "ids", "meta"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_allclose(b["logits"], a["logits"], atol=atol, rtol=0)
    return bool(np.array_equal(a["logits"], b["logits"]))


def only_old_lines(new: str, old: str) -> str:
    """The golden file's lines as they appear, in order, in `new` (added sections dropped);
    a golden line missing from `new` stays missing, so the comparison then fails."""
    keep, lines = [], iter(new.splitlines(keepends=True))
    for line in old.splitlines(keepends=True):
        for candidate in lines:
            if NUMBER.sub("#", candidate) == NUMBER.sub("#", line):
                keep.append(candidate)
                break
    return "".join(keep)


def kept_keys(new, old):
    """`new` restricted to the keys `old` has, at every depth (added keys are allowed)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {k: kept_keys(new[k], old[k]) if k in new else new.get(k) for k in old}
    return new


def test_run_folders_equal_the_pre_refactor_ones(now):
    bit_equal = {}
    for run, names in KEPT.items():
        for name in names:
            if name.endswith(".npz"):
                rel = f"{run}/{name}"
                bit_equal[rel] = same_scores(GOLDEN / rel, now / rel, TOLERANCE.get(rel, 1e-5))
    deterministic = all(bit_equal.values())
    for run, names in KEPT.items():
        for name in [n for n in names if not n.endswith(".npz")] + \
                (["files.json"] if run == "train" else []):
            old = (GOLDEN / run / name).read_text()
            new = without_added(f"{run}/{name}", (now / run / name).read_text())
            if name.endswith(".json") and name != "files.json":
                new = json.dumps(kept_keys(json.loads(new), json.loads(old)), indent=2,
                                 sort_keys=True) + "\n"
                old = json.dumps(json.loads(old), indent=2, sort_keys=True) + "\n"
            elif name.endswith(".md"):
                new = only_old_lines(new, old)
            if name == "files.json":
                assert set(json.loads(old)) <= set(json.loads(new)), f"{run}/{name} lost files"
            elif deterministic or name == "config.yaml":
                assert new == old, f"{run}/{name} differs"
            else:  # other floating point: the same file up to its numbers
                assert NUMBER.sub("#", new) == NUMBER.sub("#", old), f"{run}/{name} differs"
                if name.endswith(".json") and isinstance(json.loads(old), dict):
                    assert json.loads(new).keys() == json.loads(old).keys()


def test_posthoc_on_the_golden_scores_is_byte_for_byte(tmp_path):
    """No model involved: the posthoc workflow on the pre-refactor scores.npz rewrites the
    pre-refactor posthoc folder exactly."""
    root = tmp_path / "runs"
    (root / "eval").mkdir(parents=True)
    shutil.copy(GOLDEN / "eval" / "scores.npz", root / "eval" / "scores.npz")
    from calibtune.cli import app

    res = CliRunner().invoke(app, posthoc_args(root))
    assert res.exit_code == 0, res.output
    for name in KEPT["posthoc"]:
        src = root / "posthoc" / name
        if name.endswith(".npz"):
            assert same_scores(GOLDEN / "posthoc" / name, src, 0.0)
            continue
        text = without_added(f"posthoc/{name}", src.read_text().replace(str(root), "<root>"))
        old = (GOLDEN / "posthoc" / name).read_text()
        if name.endswith(".json"):
            assert kept_keys(json.loads(text), json.loads(old)) == json.loads(old), name
        else:
            assert (only_old_lines(text, old) if name.endswith(".md") else text) == old, name
