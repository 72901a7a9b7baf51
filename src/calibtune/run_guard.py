"""Run folders are never silently replaced, and never written by two processes at once.

`RunFolder(out, config, command=..., resume=..., overwrite=...)` is a claim on a run folder,
taken before a command loads anything:
- a folder that holds files is refused with one line naming it and what it holds, unless
  `overwrite` (a calibtune run folder only) or `resume`;
- `resume` needs the same configuration: the saved config.yaml is compared field by field and
  the fields that differ are named (`ignore`: fields that do not change the results);
- a lock file beside the folder (`.NAME.lock`: pid, host, command) refuses a second writer; a
  lock whose process is gone (same host) is stale and taken over with a one-line warning;
- `open()`, called just before the first write, clears an overwritten folder by renaming it
  aside in one step and then deleting the copy (a crash leaves the old run or the new one,
  never a mix), creates the folder and writes config.yaml.
A run that fails with a `CalibtuneError` before it wrote more than config.yaml leaves no folder.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import CalibtuneError, ConfigError, RunFolderError
from .integrity import atomic_write_text
from .interrupts import finish_first

log = logging.getLogger(__name__)
CONFIG = "config.yaml"
# Entries that make a folder a calibtune run (what --overwrite may clear).
RUN_MARKERS = {CONFIG, ".partial", "checkpoints", "scores.npz", "metrics.json", "steps"}
DESCRIBED = ("model", "data", "method", "loss", "scores", "source", "seed")


def write_config(folder: str | Path, config: dict) -> None:
    atomic_write_text(Path(folder) / CONFIG, yaml.safe_dump(config, sort_keys=True))


def read_config(folder: Path) -> dict | None:
    """The folder's config.yaml as a mapping; None when absent; {} when unreadable."""
    path = folder / CONFIG
    if not path.exists():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(folder: Path) -> str:
    """What a folder holds, in a few words: 'a run (model m, data d): config.yaml, …'."""
    entries = sorted(folder.iterdir(), key=lambda p: (p.name not in RUN_MARKERS, p.name))
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    saved = read_config(folder)
    if saved is None and not RUN_MARKERS & {p.name for p in folder.iterdir()}:
        return f"files that are not a calibtune run ({shown})"
    facts = ", ".join(f"{k} {saved[k]}" for k in DESCRIBED if (saved or {}).get(k) is not None)
    return f"a run ({facts}: {shown})" if facts else f"a run ({shown})"


# config.yaml keys renamed since a run could have been saved: old name → current field name
RENAMED_KEYS = {"bins": "n_bins"}


def config_differences(saved: dict, new: dict, ignore: Iterable[str] = ()) -> list[str]:
    """'field: saved → new' for every field both configurations have and set differently (a
    folder saved under an old key name is read under the current one)."""
    saved = {RENAMED_KEYS.get(k, k) if RENAMED_KEYS.get(k, k) not in saved else k: v
             for k, v in saved.items()}
    new = yaml.safe_load(yaml.safe_dump(new))  # the types a saved file reads back as
    keys = sorted((set(saved) & set(new)) - set(ignore))
    return [f"{k}: {saved[k]!r} → {new[k]!r}" for k in keys if saved[k] != new[k]]


def _alive(owner: dict) -> bool:
    """Whether a lock's owner may still run (a process on another host cannot be checked)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class RunLock:
    """`.NAME.lock` beside a folder, created exclusively; holds the owner's pid and host."""

    def __init__(self, folder: str | Path, command: str) -> None:
        self.folder = Path(folder)
        resolved = self.folder.resolve()
        self.path = resolved.parent / f".{resolved.name}.lock"
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.held = False

    def owner(self) -> dict | None:
        """The lock's content (None if it cannot be read, e.g. being written this instant)."""
        for _ in range(3):
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                return data if isinstance(data, dict) else None
            except FileNotFoundError:
                return {}
            except (OSError, ValueError):
                time.sleep(0.05)
        return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner()
                if owner == {}:
                    continue  # released meanwhile
                if owner is not None and _alive(owner):
                    raise RunFolderError(
                        f"{self.folder} is being written by another calibtune process (pid "
                        f"{owner.get('pid')} on {owner.get('host')}, {owner.get('command')}, "
                        f"since {owner.get('started')}); wait for it or choose another --out "
                        f"(if that process is gone, delete {self.path})")
                self._take_over(owner)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.info, f)
            self.held = True
            return
        raise RunFolderError(f"{self.folder}: could not take the lock {self.path}")

    def _take_over(self, owner: dict | None) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if self._read(aside) != owner:  # a fresh lock taken meanwhile: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "an unknown process"
        log.warning("%s: taking over a stale lock (%s is no longer running)", self.folder, who)

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held and (self.owner() or {}).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False


class RunFolder:
    """A claim on the run folder `path` for one command (see the module docstring).

    `config` (the run's settings) is compared on `resume` and written by `open()`; None for a
    command that keeps its own. `claim=False` (a step inside a command that already holds the
    outer folder, e.g. reproduce) skips the lock and the checks. `resume_hint` says how this
    command continues a run, for a command without `--resume`.
    """

    def __init__(self, path: str | Path, config: dict | None, *, command: str,
                 resume: bool = False, overwrite: bool = False, ignore: Iterable[str] = ("out",),
                 claim: bool = True,
                 resume_hint: str = "pass --resume to continue that run") -> None:
        self.path, self.config, self.command = Path(path), config, command
        self.resume_hint = resume_hint
        self.resume, self.overwrite, self.ignore, self.claim = resume, overwrite, set(ignore), claim
        self.lock = RunLock(self.path, command)
        self._replace = self._opened = self._fresh = False

    def __enter__(self) -> RunFolder:
        if self.resume and self.overwrite:
            raise ConfigError(f"--resume continues the run in {self.path} and --overwrite "
                              "replaces it: give one of them")
        if not self.claim:
            return self
        self.lock.acquire()
        try:
            self.check()
        except BaseException:
            self.lock.release()
            raise
        return self

    def check(self) -> None:
        """Refuse a folder holding another run (unless overwrite/resume) or other settings."""
        for leftover in self.path.parent.glob(f".{self.path.name}.replaced-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # an overwrite that crashed midway
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path} is a file, not a folder; choose another --out")
        if not any(self.path.iterdir()):
            return
        held = describe(self.path)
        if held.startswith("files that are not"):
            raise RunFolderError(f"{self.path} holds {held}; calibtune writes only into a new "
                                 "folder or its own run folder: choose another --out")
        if self.overwrite:
            self._replace = True
            return
        if not self.resume:
            raise RunFolderError(f"{self.path} already holds {held}: {self.resume_hint}; pass "
                                 "--overwrite to replace it, or choose another --out")
        saved = read_config(self.path)
        if saved == {}:
            raise RunFolderError(f"{self.path / CONFIG} cannot be read, so --resume cannot "
                                 "check the settings; pass --overwrite to replace the run")
        if saved and self.config is not None:
            diff = config_differences(saved, self.config, self.ignore)
            if diff:
                raise RunFolderError(f"{self.path} holds a run with other settings ("
                                     f"{'; '.join(diff)}): resume it with the same settings, "
                                     "or pass --overwrite to replace it")

    def open(self, write_config_now: bool = True) -> Path:
        """The folder, ready for the first write (cleared first when overwriting)."""
        if self._opened:
            return self.path
        with finish_first():  # a signal here would leave half a folder
            existed = self.path.exists() and any(self.path.iterdir())
            if self._replace:
                aside = self.path.parent / f".{self.path.name}.replaced-{os.getpid()}"
                os.rename(self.path, aside)
                shutil.rmtree(aside, ignore_errors=True)
                log.info("replaced the run in %s", self.path)
            self._fresh = self._replace or not existed
            self.path.mkdir(parents=True, exist_ok=True)
            if self.config is not None and write_config_now:
                write_config(self.path, self.config)
        self._opened = True
        return self.path

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            if isinstance(exc, CalibtuneError) and self._fresh and self.path.is_dir() and \
                    {p.name for p in self.path.iterdir()} <= {CONFIG, "fewshot.json"}:
                shutil.rmtree(self.path, ignore_errors=True)  # a failed run leaves nothing
        finally:
            if self.claim:
                self.lock.release()
        return False
