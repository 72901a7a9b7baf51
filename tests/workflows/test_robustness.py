"""Bad input, interruptions, integrity and fuzzing: each protection fails a test when removed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.data import load_items
from calibtune.errors import ConfigError, DataError, IntegrityError
from calibtune.integrity import verify_sha256
from calibtune.scores import OptionScores

from conftest import items_to_rows, make_items, write_jsonl

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
EXPECTED = json.loads((BAD / "expected.json").read_text())
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_input_corpus(name, tiny_llama, tmp_path):
    exp = EXPECTED[name]
    out = tmp_path / "out"
    res = runner.invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(BAD / name),
                              "--out", str(out), "--n-boot", "0"])
    if "ok" in exp:
        assert res.exit_code == 0, res.output
        assert json.loads((out / "metrics.json").read_text())["n"] == exp["ok"]
        return
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert "\n" not in text and "Traceback" not in text
    assert text.startswith("error: ")
    assert str(BAD / name) in text
    if exp["row"] is not None:
        assert f"row {exp['row']}" in text
    if exp["field"] is not None:
        assert f"field '{exp['field']}'" in text
    assert exp["match"] in text
    assert not out.exists()  # nothing written


def test_skip_invalid_rejects_too_long_prompts(tiny_llama, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["eval", "--model", str(tiny_llama), "--data",
                              str(BAD / "prompt_longer_than_context.jsonl"), "--out", str(out),
                              "--n-boot", "0", "--skip-invalid"])
    assert res.exit_code == 0, res.output
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["row"], r["field"]) for r in rejected] == [(2, "question")]
    assert json.loads((out / "metrics.json").read_text())["n"] == 1


def test_gpu_out_of_memory_retries_with_smaller_batches(tiny_llama, monkeypatch):
    from calibtune.models import load_model
    from calibtune.scoring import LetterScorer

    model, tok = load_model(str(tiny_llama), device="cpu")
    items = make_items(9)
    ref = LetterScorer(model, tok, batch_size=1, progress=False).score(items)
    real = LetterScorer._forward
    sizes = []

    def flaky(self, seqs, *args):
        sizes.append(len(seqs))
        if len(seqs) > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(self, seqs, *args)

    monkeypatch.setattr(LetterScorer, "_forward", flaky)
    got = LetterScorer(model, tok, batch_size=8, progress=False).score(items)
    np.testing.assert_allclose(got.logits, ref.logits, atol=1e-5)
    assert sizes[0] == 8 and max(sizes[1:]) <= 4


SLOW_EVAL = """
import sys, time
from calibtune.scoring import LetterScorer
real = LetterScorer._forward
def slow(self, *a, **k):
    time.sleep(0.05)
    return real(self, *a, **k)
LetterScorer._forward = slow
from calibtune.cli import main
sys.argv = ["calibtune"] + sys.argv[1:]
main()
"""


def test_eval_resume_after_sigkill_gives_the_same_scores(tiny_llama, tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "d.jsonl", items_to_rows(make_items(120, k=[4, 3, 5])))
    args = ["eval", "--model", str(tiny_llama), "--data", str(data), "--n-boot", "0",
            "--batch-size", "2", "--chunk-size", "20"]
    whole = runner.invoke(app, args + ["--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    out = tmp_path / "killed"
    # the same thread count as this process: the resumed scores must be bit-equal to `whole`
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EVAL, *args, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / ".partial" / "chunk-00001.npy").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "scores.npz").exists()
    done = sorted(p.name for p in (out / ".partial").glob("chunk-*.npy"))
    assert 2 <= len(done) < 6
    from calibtune.scoring import LetterScorer

    scored = []
    real = LetterScorer.iter_batches

    def counting(self, items, *a, **k):
        scored.extend(it.id for it in items)
        return real(self, items, *a, **k)

    monkeypatch.setattr(LetterScorer, "iter_batches", counting)
    resumed = runner.invoke(app, args + ["--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len(scored) == 120 - 20 * len(done)  # saved chunks are reused, not rescored
    a = OptionScores.load(tmp_path / "whole" / "scores.npz")
    b = OptionScores.load(out / "scores.npz")
    np.testing.assert_array_equal(a.logits, b.logits)
    assert (a.ids == b.ids).all()
    assert (tmp_path / "whole" / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()


def test_resume_ignores_chunks_of_another_run(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", items_to_rows(make_items(10)))
    out = tmp_path / "o"
    (out / ".partial").mkdir(parents=True)
    (out / ".partial" / "fingerprint.txt").write_text("another run")
    np.save(out / ".partial" / "chunk-00000.npy", np.full((10, 4), 7.0))
    res = runner.invoke(app, ["eval", "--model", str(tiny_llama), "--data", str(data),
                              "--out", str(out), "--n-boot", "0", "--resume"])
    assert res.exit_code == 0, res.output
    assert not (OptionScores.load(out / "scores.npz").logits == 7.0).all()


# ---- integrity -------------------------------------------------------------------------------

def test_sha256_mismatch_is_detected(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"weights")
    import hashlib

    verify_sha256(f, hashlib.sha256(b"weights").hexdigest(), "x")
    f.write_bytes(b"weightz")
    with pytest.raises(IntegrityError, match="sha256"):
        verify_sha256(f, hashlib.sha256(b"weights").hexdigest(), "x")


def test_builtin_files_are_checked_against_pinned_digests(monkeypatch, tmp_path):
    from calibtune.data import builtin
    from calibtune import models

    monkeypatch.setattr(builtin, "MMLU_SHA256", "0" * 64)
    with pytest.raises(IntegrityError, match="MMLU"):
        builtin.load_dataset("mmlu")
    monkeypatch.setenv("CALIBTUNE_CACHE", str(tmp_path))
    spec = models.BUILTIN_MODELS["smollm2-135m-instruct"]
    monkeypatch.setitem(models.BUILTIN_MODELS, "smollm2-135m-instruct",
                        models.BuiltinModel(spec.name, spec.description, "0" * 64, spec.locate))
    with pytest.raises(IntegrityError, match="smollm2"):
        models.builtin_model_folder("smollm2-135m-instruct")
    assert not [p for p in (tmp_path / "models").rglob("*") if p.is_file()]  # nothing cached


def test_remote_code_is_not_run_unless_asked(tiny_llama, tmp_path):
    import shutil

    from calibtune.models import load_model

    folder = tmp_path / "custom"
    shutil.copytree(tiny_llama, folder)
    marker = tmp_path / "executed"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                                    "from transformers import LlamaConfig as EvilConfig\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(cfg))
    model, _ = load_model(str(folder), device="cpu")  # the folder's code is ignored, not run
    assert type(model).__module__.startswith("transformers.models.llama")
    assert not marker.exists()


def test_yaml_is_loaded_safely(tmp_path):
    from calibtune.config import load_yaml

    marker = tmp_path / "pwned"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(cfg)
    assert not marker.exists()


def test_scores_are_loaded_without_pickle(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, logits=np.zeros((1, 2)), labels=np.zeros(1, int), mask=np.ones((1, 2), bool),
             ids=np.array([{"a": 1}], dtype=object))
    from calibtune.errors import CalibtuneError

    with pytest.raises(CalibtuneError, match="unreadable"):
        OptionScores.load(path)


# ---- fuzzing ---------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=15)
rows = st.fixed_dictionaries({}, optional={"id": json_values, "question": json_values,
                                           "options": json_values, "answer": json_values})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(rows, min_size=1, max_size=4))
def test_fuzz_jsonl_rows_give_items_or_data_errors(tmp_path, raw_rows):
    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in raw_rows))
    try:
        result = load_items(path, skip_invalid=True)
    except DataError:
        return
    for item in result.items:
        assert 2 <= item.n_options <= 26 and 0 <= item.answer < item.n_options


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([".jsonl", ".csv"]))
def test_fuzz_raw_bytes_never_crash_the_loader(tmp_path, data, suffix):
    path = tmp_path / f"f{suffix}"
    path.write_bytes(data)
    try:
        result = load_items(path, skip_invalid=True)
    except DataError as err:  # one line that names the file
        assert str(path) in str(err) and "\n" not in str(err)
        return
    for item in result.items:
        assert 2 <= item.n_options <= 26 and 0 <= item.answer < item.n_options
