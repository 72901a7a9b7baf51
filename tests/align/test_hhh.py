"""hhh_alignment from the bigbench sdist, tested on a small synthetic archive of the same layout
(nothing is downloaded): only the four task.json members come out, unsafe members and wrong
digests are refused, pip is called as documented, pairs are built from target_scores."""
import hashlib
import io
import json
import subprocess
import sys
import tarfile

import pytest

from calibtune.align import hhh
from calibtune.errors import CalibtuneError, ConfigError, DataError, IntegrityError

from conftest import build_tokenizer

ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks"


def task_json(subtask, n=2):
    examples = [{"input": f"{subtask} question {i} ?",
                 "target_scores": {f"good answer {i}": 1, f"bad answer {i}": 0} if i % 2 == 0
                 else {f"bad answer {i}": 0, f"good answer {i}": 1}} for i in range(n)]
    return json.dumps({"name": subtask, "example_input_prefix": "\nHuman: ",
                       "example_output_prefix": "\nAssistant:", "examples": examples}).encode()


def add(tar, name, data=b"", kind=tarfile.REGTYPE, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, target
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_sdist(path, extra=()):
    """An sdist with bigbench's layout: 4 hhh subtasks, the parent task.json, another task."""
    contents = {s: task_json(s, n=2 + k) for k, s in enumerate(hhh.HHH_SUBTASKS)}
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "bigbench-1.0.0/setup.py", b"raise SystemExit('never run')\n")
        add(tar, f"{ROOT}/hhh_alignment/task.json", b'{"subtasks": []}')
        add(tar, f"{ROOT}/arithmetic/task.json", b"{}")
        for s, data in contents.items():
            add(tar, f"{ROOT}/hhh_alignment/{s}", kind=tarfile.DIRTYPE)
            add(tar, f"{ROOT}/hhh_alignment/{s}/task.json", data)
            add(tar, f"{ROOT}/hhh_alignment/{s}/README.md", b"readme")
        for name, data, kind in extra:
            add(tar, name, data, kind, target="/etc/passwd")
    return path, {s: hashlib.sha256(d).hexdigest() for s, d in contents.items()}


def test_only_the_hhh_task_files_are_extracted(tmp_path):
    sdist, digests = make_sdist(tmp_path / "bb.tar.gz")
    paths = hhh.extract_hhh(sdist, tmp_path / "out", expected=digests)
    assert sorted(paths) == sorted(hhh.HHH_SUBTASKS)
    written = sorted(p.relative_to(tmp_path / "out").as_posix()
                     for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == [f"{s}/task.json" for s in sorted(hhh.HHH_SUBTASKS)]
    for s, p in paths.items():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == digests[s]


def test_a_wrong_digest_is_refused_and_nothing_written(tmp_path):
    sdist, digests = make_sdist(tmp_path / "bb.tar.gz")
    with pytest.raises(IntegrityError, match="helpful/task.json has sha256 .*, expected 0+"):
        hhh.extract_hhh(sdist, tmp_path / "out", expected=digests | {"helpful": "0" * 64})
    assert not (tmp_path / "out").exists()
    # and against the pinned digests of the real task files
    with pytest.raises(IntegrityError, match="expected 4720acbc"):
        hhh.extract_hhh(sdist, tmp_path / "out")


@pytest.mark.parametrize("name,kind", [
    ("../evil/hhh_alignment/harmless/task.json", tarfile.REGTYPE),
    ("/abs/hhh_alignment/harmless/task.json", tarfile.REGTYPE),
    (f"{ROOT}/../../hhh_alignment/harmless/task.json", tarfile.REGTYPE),
    (f"{ROOT}/hhh_alignment/extra/task.json", tarfile.SYMTYPE)])
def test_unsafe_members_are_refused(name, kind, tmp_path):
    sdist, digests = make_sdist(tmp_path / "bb.tar.gz", extra=[(name, b"{}", kind)])
    with pytest.raises(IntegrityError, match="refusing archive member"):
        hhh.extract_hhh(sdist, tmp_path / "out", expected=None)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()


def test_unsafe_members_outside_the_task_are_never_touched(tmp_path):
    sdist, digests = make_sdist(tmp_path / "bb.tar.gz",
                                extra=[("../escape.txt", b"x", tarfile.REGTYPE)])
    hhh.extract_hhh(sdist, tmp_path / "out", expected=digests)
    assert not (tmp_path / "escape.txt").exists()


def test_a_broken_or_incomplete_archive_is_an_integrity_error(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(IntegrityError, match="unreadable archive"):
        hhh.extract_hhh(bad, tmp_path / "out")
    partial = tmp_path / "partial.tar.gz"
    with tarfile.open(partial, "w:gz") as tar:
        add(tar, f"{ROOT}/hhh_alignment/harmless/task.json", task_json("harmless"))
    with pytest.raises(IntegrityError, match="no hhh_alignment task.json for helpful, honest, "
                                             "other"):
        hhh.extract_hhh(partial, tmp_path / "out")


def test_examples_become_pairs_with_the_preferred_response_chosen(tmp_path):
    sdist, digests = make_sdist(tmp_path / "bb.tar.gz")
    paths = hhh.extract_hhh(sdist, tmp_path / "out", expected=digests)
    examples = hhh.parse_hhh_task(paths["honest"])
    assert [e.index for e in examples] == [1, 2, 3, 4] and examples[0].subtask == "honest"
    pairs = hhh.hhh_pairs(examples)
    for i, p in enumerate(pairs):  # the preferred response is listed first or second
        assert p.prompt == f"Human: honest question {i} ?\nAssistant:"
        assert (p.chosen, p.rejected) == (f" good answer {i}", f" bad answer {i}")
        assert p.id == f"hhh-honest-{i + 1}" and not p.chat
    tok = build_tokenizer()
    chat = hhh.hhh_pairs(examples, "chat", tok)
    assert chat[0].prompt == tok.apply_chat_template(
        [{"role": "user", "content": "honest question 0 ?"}], tokenize=False,
        add_generation_prompt=True)
    assert chat[0].chosen == "good answer 0" and chat[0].chat


@pytest.mark.parametrize("example,field,match", [
    ({"target_scores": {"a": 1, "b": 0}}, "input", "missing or empty input"),
    ({"input": "q", "target_scores": {"a": 1, "b": 0, "c": 0}}, "target_scores", "2 responses"),
    ({"input": "q", "target_scores": {"a": 1, "b": 1}}, "target_scores", "one response 1"),
    ({"input": "q", "target_scores": ["a", "b"]}, "target_scores", "2 responses, got list")])
def test_malformed_examples_name_file_index_and_field(example, field, match, tmp_path):
    path = tmp_path / "harmless" / "task.json"
    path.parent.mkdir()
    good = {"input": "q", "target_scores": {"a": 1, "b": 0}}
    path.write_text(json.dumps({"examples": [good, example]}))
    with pytest.raises(DataError, match=match) as err:
        hhh.parse_hhh_task(path)
    assert (err.value.row, err.value.field) == (2, field) and "\n" not in str(err.value)


class FakePip:
    """Stands in for `python -m pip download`: records commands, 'downloads' a local file."""

    def __init__(self, sdist, refuse_first=False):
        self.sdist, self.refuse_first, self.calls = sdist, refuse_first, []

    def __call__(self, cmd):
        self.calls.append(cmd)
        if self.refuse_first and len(self.calls) == 1:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Distributions from PyPI "
                                               "cannot declare direct URL dependencies.\n")
        dest = cmd[cmd.index("-d") + 1]
        (__import__("pathlib").Path(dest) / hhh.SDIST_NAME).write_bytes(self.sdist.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "Saved", "")


def test_fetch_runs_pip_download_once_and_checks_the_digest(tmp_path, capsys):
    sdist, _ = make_sdist(tmp_path / "bb.tar.gz")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    pip = FakePip(sdist)
    got = hhh.fetch_sdist(tmp_path / "cache", expected_sha256=digest, run=pip)
    assert got == tmp_path / "cache" / hhh.SDIST_NAME and got.exists()
    assert pip.calls[0][:3] == [sys.executable, "-m", "pip"]
    assert pip.calls[0][3:] == ["download", "--no-deps", "--no-binary", ":all:", "bigbench==1.0.0",
                                "-d", pip.calls[0][-1]]
    assert "downloading bigbench==1.0.0" in capsys.readouterr().err
    hhh.fetch_sdist(tmp_path / "cache", expected_sha256=digest, run=pip)
    assert len(pip.calls) == 1  # cached
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [hhh.SDIST_NAME]


def test_fetch_retries_without_pips_direct_url_check(tmp_path):
    sdist, _ = make_sdist(tmp_path / "bb.tar.gz")
    pip = FakePip(sdist, refuse_first=True)
    hhh.fetch_sdist(tmp_path / "cache", expected_sha256=hashlib.sha256(sdist.read_bytes())
                    .hexdigest(), run=pip)
    assert len(pip.calls) == 2 and pip.calls[1][1] == "-c"
    assert "check_pypi_direct_references" in pip.calls[1][2]
    assert pip.calls[1][3:] == pip.calls[0][3:]  # the same pip download arguments


def test_fetch_refuses_a_download_with_the_wrong_digest(tmp_path):
    sdist, _ = make_sdist(tmp_path / "bb.tar.gz")
    with pytest.raises(IntegrityError, match="not the pinned bigbench==1.0.0"):
        hhh.fetch_sdist(tmp_path / "cache", run=FakePip(sdist))  # the pinned real digest
    assert list((tmp_path / "cache").iterdir()) == []  # nothing kept


def test_fetch_failure_says_what_to_do(tmp_path):
    def failing(cmd):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")

    with pytest.raises(CalibtuneError, match="CALIBTUNE_BIGBENCH_SDIST"):
        hhh.fetch_sdist(tmp_path / "cache", run=failing)


def test_an_sdist_given_by_environment_skips_pip(tmp_path, monkeypatch):
    sdist, _ = make_sdist(tmp_path / "bb.tar.gz")
    monkeypatch.setenv(hhh.SDIST_ENV, str(sdist))
    got = hhh.fetch_sdist(tmp_path / "cache", run=None,
                          expected_sha256=hashlib.sha256(sdist.read_bytes()).hexdigest())
    assert got == sdist
    with pytest.raises(IntegrityError):
        hhh.fetch_sdist(tmp_path / "cache", run=None)
    monkeypatch.setenv(hhh.SDIST_ENV, str(tmp_path / "missing.tar.gz"))
    with pytest.raises(ConfigError, match="no such file"):
        hhh.fetch_sdist(tmp_path / "cache", run=None)


def test_load_hhh_end_to_end_in_the_calibtune_cache(tmp_path, monkeypatch):
    sdist, digests = make_sdist(tmp_path / "bb.tar.gz")
    monkeypatch.setenv("CALIBTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hhh, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    monkeypatch.setattr(hhh, "HHH_TASK_SHA256", digests)
    pip = FakePip(sdist)
    pairs = hhh.load_hhh(run=pip)
    assert len(pairs) == 2 + 3 + 4 + 5 and len(pip.calls) == 1
    assert (tmp_path / "cache" / "bigbench" / "hhh_alignment" / "other" / "task.json").exists()
    assert [p.id for p in hhh.load_hhh(subtasks=["helpful"], run=pip)] == \
        ["hhh-helpful-1", "hhh-helpful-2", "hhh-helpful-3"]
    assert len(pip.calls) == 1  # extracted files are reused
    # a corrupted extracted file is rebuilt from the cached sdist, without pip
    (tmp_path / "cache" / "bigbench" / "hhh_alignment" / "other" / "task.json").write_text("{}")
    assert len(hhh.load_hhh(run=pip)) == 14 and len(pip.calls) == 1
    with pytest.raises(ConfigError, match="unknown hhh_alignment subtask"):
        hhh.load_hhh(subtasks=["funny"], run=pip)


def test_pinned_constants_are_consistent():
    assert set(hhh.HHH_TASK_SHA256) == set(hhh.HHH_SUBTASKS) == set(hhh.HHH_EXAMPLES)
    assert sum(hhh.HHH_EXAMPLES.values()) == 221
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in [hhh.SDIST_SHA256,
                                                           *hhh.HHH_TASK_SHA256.values()])
