"""`calibtune eval`, `posthoc` and `train` write the run folders they wrote before the layering
refactor: the files in golden/ were made by commit 42a46d2 (main before the layering merge)
with tests/golden_runs.py (same CLI flags, same tiny model). What was added since may only add:
options in config.yaml with their defaults (ADDED), new keys in JSON files, sections at the end
of report.md (golden lines in order, new sections between), a `groups` array in scores.npz;
everything the golden files hold must be unchanged.

"Unchanged" holds on any CPU (tests/golden_compare.py): structure, keys, integers and text
exactly; every float, in scores.npz, JSON or printed text, to the stated tolerance of its file.
The golden files were written on one machine; on another, float kernels move the tiny model's
log-probabilities by about 1e-6 (measured: up to 1.4e-6 with MKL limited to AVX2)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from golden_compare import compare_json, compare_scores, compare_text, mask_numbers
from golden_runs import KEPT, collect, make_runs, posthoc_args, read_scores

GOLDEN = Path(__file__).parent / "golden"
NOWHERE = Path("/nowhere")
# Largest |Δ| accepted: on log-probabilities in scores.npz, and (relative above 1) on every
# float derived from them. 1e-4 is ~70× what another float path moves them by, and ~100× below
# what a 1e-2 change of the scores does to the metrics (test_a_planted_perturbation...).
SCORES_TOL = 1e-4
NUMBERS_TOL = 1e-4
SCORES_TOL_AFTER_TRAINING = {"train/eval/scores.npz": 1e-3}  # after two optimiser steps
FEWSHOT = ["fewshot_data: null\n", "fewshot_seed: null\n", "num_fewshot: 0\n"]
ADDED = {"train/config.yaml": ["eval_seed: null\n", "base_adapter: null\n", "lora_layers: null\n",
                               "frozen_cache_mb: 2048.0\n", "frozen_cache_dir: null\n",
                               "max_step_tokens: null\n", "ece_bin_prior: 0.0\n", *FEWSHOT],
         "eval/config.yaml": ["base_adapter: null\n", "device_map: null\n", "max_memory: null\n",
                              *FEWSHOT, "concurrency: 8\n", "request_timeout: 60.0\n",
                              "top_logprobs: 20\n"],
         "posthoc/config.yaml": ["num_fewshot: null\n"]}  # options added after the golden run


def without_added(rel: str, text: str) -> str:
    for line in ADDED.get(rel, []):
        text = text.replace(line, "", 1)
    return text


def only_old_lines(new: str, old: str) -> str:
    """The golden file's lines as they appear, in order, in `new` (added sections dropped);
    a golden line missing from `new` stays missing, so the comparison then fails."""
    keep, lines = [], iter(new.splitlines(keepends=True))
    for line in old.splitlines(keepends=True):
        for candidate in lines:
            if mask_numbers(candidate) == mask_numbers(line):
                keep.append(candidate)
                break
    return "".join(keep)


def compare_file(rel: str, golden: Path, new: Path) -> list[str]:
    """Differences of one kept file from its golden copy, under the rules of this module."""
    if rel.endswith(".npz"):
        tol = SCORES_TOL_AFTER_TRAINING.get(rel, SCORES_TOL)
        return compare_scores(read_scores(golden, NOWHERE, NOWHERE),
                              read_scores(new, NOWHERE, NOWHERE), tol, rel)
    old, text = golden.read_text(), without_added(rel, new.read_text())
    if rel.endswith("files.json"):
        lost = set(json.loads(old)) - set(json.loads(text))
        return [f"{rel}: lost files {sorted(lost)}"] if lost else []
    if rel.endswith(".json"):
        return compare_json(json.loads(old), json.loads(text), NUMBERS_TOL, f"{rel}: $")
    if rel.endswith("config.yaml"):  # options as given: no computed number, so exactly
        return [] if text == old else [f"{rel}: differs"]
    if rel.endswith(".md"):
        text = only_old_lines(text, old)
    return compare_text(old, text, NUMBERS_TOL, rel)


def compare_folder(golden: Path, new: Path, runs: dict[str, list[str]]) -> list[str]:
    return [d for run, names in runs.items() for name in names
            for d in compare_file(f"{run}/{name}", golden / run / name, new / run / name)]


@pytest.fixture(scope="module")
def now(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("golden-now")
    make_runs(root / "runs", tiny_llama)
    collect(root / "runs", tiny_llama, root / "now")
    return root / "now"


def test_run_folders_equal_the_pre_refactor_ones(now):
    runs = {**KEPT, "train": [*KEPT["train"], "files.json"]}
    assert compare_folder(GOLDEN, now, runs) == []


def run_posthoc(root: Path, scores: Path) -> Path:
    """The golden posthoc command on `scores` (no model involved); its folder, paths as <root>."""
    (root / "eval").mkdir(parents=True)
    shutil.copy(scores, root / "eval" / "scores.npz")
    from calibtune.cli import app

    res = CliRunner().invoke(app, posthoc_args(root))
    assert res.exit_code == 0, res.output
    for name in KEPT["posthoc"]:
        if not name.endswith(".npz"):
            path = root / "posthoc" / name
            path.write_text(path.read_text().replace(str(root), "<root>"))
    return root


def test_posthoc_on_the_golden_scores_rewrites_the_golden_folder(tmp_path):
    root = run_posthoc(tmp_path / "runs", GOLDEN / "eval" / "scores.npz")
    assert compare_folder(GOLDEN, root, {"posthoc": KEPT["posthoc"]}) == []


def perturbed_scores(path: Path, out: Path, size: float) -> Path:
    """The golden scores with every finite logit moved by ±`size` (seeded random signs; a
    shift common to a row would leave its probabilities unchanged)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    logits = arrays["logits"]
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=logits.shape)
    arrays["logits"] = np.where(np.isfinite(logits), logits + size * signs, logits).astype(
        logits.dtype)
    np.savez_compressed(out, **arrays)
    return out


@pytest.mark.parametrize("size", [1e-6, 1e-2])
def test_a_planted_perturbation_of_the_scores_passes_at_1e6_and_fails_at_1e2(tmp_path, size):
    """The tolerant path itself: another CPU's 1e-6 passes, a real change of 1e-2 is caught in
    the scores and in every number derived from them, and nowhere else."""
    scores = perturbed_scores(GOLDEN / "eval" / "scores.npz", tmp_path / "scores.npz", size)
    direct = compare_file("eval/scores.npz", GOLDEN / "eval" / "scores.npz", scores)
    diffs = compare_folder(GOLDEN, run_posthoc(tmp_path / "runs", scores),
                           {"posthoc": KEPT["posthoc"]})
    if size < SCORES_TOL:
        assert direct == [] and diffs == []
    else:
        assert len(direct) == 1 and "logits differ by up to 0.01" in direct[0]
        failing = {d.split(":")[0] for d in diffs}
        assert {"posthoc/before_metrics.json", "posthoc/metrics.json", "posthoc/scores.npz",
                "posthoc/report.md"} <= failing, diffs
        assert "posthoc/config.yaml" not in failing


@pytest.mark.parametrize("old, new, caught", [
    ("| ECE | 0.380 [0.219, 0.489] |", "| ECE | 0.381 [0.219, 0.489] |", False),  # rounding
    ("| ECE | 0.380 [0.219, 0.489] |", "| ECE | 0.382 [0.219, 0.489] |", True),
    ("| ECE | 0.380 |", "| ECE | 0.380 | 0.1 |", True),
    ("| items | 30 |", "| items | 31 |", True),  # integers exactly
    ("overconfident by 0.278", "underconfident by 0.278", True),
    ("a\nb", "a", True),
])
def test_text_comparison_allows_one_printed_digit_and_nothing_else(old, new, caught):
    assert bool(compare_text(old, new, NUMBERS_TOL)) is caught


@pytest.mark.parametrize("new, caught", [
    ({"ece": 0.38 + 5e-5, "n": 30, "bins": [None, 1.0], "name": "x", "ok": True}, False),
    ({"ece": 0.38, "n": 30, "bins": [None, 1.0], "name": "x", "ok": True, "added": 1}, False),
    ({"ece": 0.38 + 2e-4, "n": 30, "bins": [None, 1.0], "name": "x", "ok": True}, True),
    ({"ece": 0.38, "n": 31, "bins": [None, 1.0], "name": "x", "ok": True}, True),
    ({"ece": 0.38, "n": 30, "bins": [0.0, 1.0], "name": "x", "ok": True}, True),
    ({"ece": 0.38, "n": 30, "bins": [None, 1.0, 1.0], "name": "x", "ok": True}, True),
    ({"ece": 0.38, "n": 30, "bins": [None, 1], "name": "x", "ok": True}, True),
    ({"ece": 0.38, "n": 30, "bins": [None, 1.0], "name": "y", "ok": True}, True),
    ({"ece": 0.38, "n": 30, "bins": [None, 1.0], "ok": True}, True),
    ({"ece": 0.38, "n": 30, "bins": [None, 1.0], "name": "x", "ok": False}, True),
])
def test_json_comparison_holds_structure_exactly_and_floats_to_tolerance(new, caught):
    old = {"ece": 0.38, "n": 30, "bins": [None, 1.0], "name": "x", "ok": True}
    assert bool(compare_json(old, new, NUMBERS_TOL)) is caught
