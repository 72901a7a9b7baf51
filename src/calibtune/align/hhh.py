"""BIG-bench's `hhh_alignment` task as preference pairs (221 helpful / honest / harmless items).

The task ships in the `bigbench==1.0.0` source distribution on PyPI (no wheel; 358,249,635 B).
On first use calibtune downloads the sdist into its cache folder with pip, checks its pinned
sha256, streams through the archive and writes out only the four
``bigbench/benchmark_tasks/hhh_alignment/<subtask>/task.json`` members (each checked against
its own pinned sha256). Nothing of the archive is executed or installed by calibtune; note that
`pip download` of an sdist prepares its metadata, which runs the package's build backend in
pip's isolated build environment.

pip 26 refuses to download `bigbench==1.0.0` ("Distributions from PyPI cannot declare direct
URL dependencies": its metadata names a `bleurt @ file://...` dependency). Only downloading is
needed, never installing, so when pip fails with that message calibtune runs pip again with
that one check switched off, inside the pip subprocess (`_PIP_WITHOUT_DIRECT_URL_CHECK`); the
file is still verified against the pinned digest. Setting `CALIBTUNE_BIGBENCH_SDIST` to a
downloaded copy skips pip altogether.

Each example holds an `input` and `target_scores` with two responses scored 1 (preferred) and 0.
A pair is built per example: chosen = the response scored 1, rejected = the other. The prompt
follows the task's own prefixes (``example_input_prefix`` "\\nHuman: ", ``example_output_prefix``
"\\nAssistant:"), with the leading newline dropped: ``Human: <input>\\nAssistant:``, and each
response follows after one space. With the chat prompt style the input is the user message of
the tokenizer's chat template (generation prompt added) and the response follows directly.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

from ..errors import CalibtuneError, ConfigError, DataError, IntegrityError
from ..integrity import atomic_write, sha256_file
from .pairs import PreferencePair

log = logging.getLogger(__name__)

BIGBENCH_REQUIREMENT = "bigbench==1.0.0"
SDIST_NAME = "bigbench-1.0.0.tar.gz"
SDIST_BYTES = 358_249_635
#: sha256 of bigbench-1.0.0.tar.gz as pip downloaded it from PyPI (pip itself checked it against
#: the digest PyPI's index publishes for the file).
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
HHH_SUBTASKS = ("harmless", "helpful", "honest", "other")
#: sha256 of each bigbench/benchmark_tasks/hhh_alignment/<subtask>/task.json in that sdist.
HHH_TASK_SHA256 = {
    "harmless": "4720acbc916cc18413e48c6bb55c19af73400436a6304c7e110b8bb40f8952a1",
    "helpful": "1bd2a58d9bb17b26af4806e8302374cea60671dc387fbfc2c5aa5c23e0901628",
    "honest": "69ba96e5bff121327ad1366e3772b7b45c50e96e7f995b2cef62c350380f1b14",
    "other": "4d6b041d79e5bf2705a9f81994efb95274179faaba9270f6dc83bd0cd17c227e",
}
HHH_EXAMPLES = {"harmless": 58, "helpful": 59, "honest": 61, "other": 43}  # 221 in all
SDIST_ENV = "CALIBTUNE_BIGBENCH_SDIST"

_DIRECT_URL_ERROR = "cannot declare direct URL dependencies"
# Runs pip's own command line with its PyPI direct-URL-dependency check (an install-time
# safeguard) replaced by a no-op; everything else, hash checks included, is pip's.
_PIP_WITHOUT_DIRECT_URL_CHECK = (
    "import sys\n"
    "try:\n"
    "    import pip._internal.operations.prepare as prepare\n"
    "    prepare.check_pypi_direct_references = lambda *args, **kwargs: None\n"
    "except (ImportError, AttributeError):\n"
    "    pass\n"
    "from pip._internal.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n")

Runner = Callable[[list[str]], "subprocess.CompletedProcess"]


def hhh_cache_dir(cache: str | Path | None = None) -> Path:
    """<calibtune cache>/bigbench (the sdist) — `$CALIBTUNE_CACHE` as for built-in models."""
    from ..models.builtin import cache_dir

    folder = Path(cache) if cache is not None else cache_dir() / "bigbench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def pip_download_command(dest: Path, *, without_direct_url_check: bool = False) -> list[str]:
    args = ["download", "--no-deps", "--no-binary", ":all:", BIGBENCH_REQUIREMENT,
            "-d", str(dest)]
    if without_direct_url_check:
        return [sys.executable, "-c", _PIP_WITHOUT_DIRECT_URL_CHECK, *args]
    return [sys.executable, "-m", "pip", *args]


def fetch_sdist(cache: str | Path | None = None, *, expected_sha256: str = SDIST_SHA256,
                run: Runner = _run) -> Path:
    """The verified bigbench sdist: `$CALIBTUNE_BIGBENCH_SDIST`, the cached copy, or a fresh
    `pip download` into the cache (once; 342 MiB)."""
    if os.environ.get(SDIST_ENV):
        path = Path(os.environ[SDIST_ENV])
        if not path.is_file():
            raise ConfigError(f"{SDIST_ENV}={path}: no such file")
        _verify(path, expected_sha256)
        return path
    folder = hhh_cache_dir(cache)
    target = folder / SDIST_NAME
    if target.exists():
        if sha256_file(target) == expected_sha256:
            return target
        log.warning("cached %s does not match its pinned sha256; downloading it again", target)
        target.unlink()
    tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=folder))
    try:
        print(f"calibtune: downloading {BIGBENCH_REQUIREMENT} (source, {SDIST_BYTES / 2**20:.0f} "
              f"MiB, once) with pip into {folder} for the hhh_alignment task ...",
              file=sys.stderr, flush=True)
        done = run(pip_download_command(tmp))
        if done.returncode != 0 and _DIRECT_URL_ERROR in (done.stderr or "") + (done.stdout or ""):
            log.info("pip refuses bigbench's direct-URL dependency; downloading without that "
                     "install-time check")
            done = run(pip_download_command(tmp, without_direct_url_check=True))
        got = tmp / SDIST_NAME
        if done.returncode != 0 or not got.exists():
            tail = ((done.stderr or "") + (done.stdout or "")).strip().splitlines()[-1:] or ["?"]
            raise CalibtuneError(f"pip could not download {BIGBENCH_REQUIREMENT} (exit "
                                 f"{done.returncode}: {tail[0]}); download {SDIST_NAME} from "
                                 f"PyPI yourself and set {SDIST_ENV} to its path")
        _verify(got, expected_sha256)
        os.replace(got, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _verify(path: Path, expected: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise IntegrityError(f"{path} has sha256 {got}, expected {expected}: not the pinned "
                             f"{BIGBENCH_REQUIREMENT} source distribution")


def _subtask_of(name: str) -> str | None:
    """The subtask of a `*/hhh_alignment/<subtask>/task.json` member, else None; an unsafe
    member path (absolute, or with '..') that would match is refused."""
    parts = PurePosixPath(name).parts
    if len(parts) < 3 or parts[-1] != "task.json" or parts[-3] != "hhh_alignment":
        return None
    if name.startswith("/") or PurePosixPath(name).is_absolute() or ".." in parts \
            or "\\" in name or ":" in parts[0]:
        raise IntegrityError(f"refusing archive member {name!r}: absolute path or '..'")
    return parts[-2]


def extract_hhh(sdist: str | Path, dest: str | Path, *,
                expected: dict[str, str] | None = HHH_TASK_SHA256) -> dict[str, Path]:
    """Stream through `sdist` and write only its hhh_alignment subtask task.json files to
    ``dest/<subtask>/task.json`` (each checked against `expected`, when given)."""
    dest = Path(dest)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(sdist, mode="r|gz") as archive:
            for member in archive:
                subtask = _subtask_of(member.name)
                if subtask is None:
                    continue
                if not member.isfile():
                    raise IntegrityError(f"refusing archive member {member.name!r}: not a "
                                         "regular file")
                if subtask in found:
                    raise IntegrityError(f"archive holds {member.name!r} twice")
                if expected is not None and subtask not in expected:
                    raise IntegrityError(f"unexpected hhh_alignment subtask {subtask!r} in "
                                         f"{sdist}")
                handle = archive.extractfile(member)
                found[subtask] = handle.read() if handle else b""
    except (tarfile.TarError, OSError, EOFError) as err:
        raise IntegrityError(f"{sdist}: unreadable archive ({err})") from None
    wanted = set(expected) if expected is not None else set(found)
    if not found or wanted - set(found):
        raise IntegrityError(f"{sdist}: no hhh_alignment task.json for "
                             f"{', '.join(sorted(wanted - set(found))) or 'any subtask'}")
    for subtask, data in sorted(found.items()):  # every digest checked before any write
        digest = hashlib.sha256(data).hexdigest()
        if expected is not None and digest != expected[subtask]:
            raise IntegrityError(f"{sdist}: hhh_alignment/{subtask}/task.json has sha256 "
                                 f"{digest}, expected {expected[subtask]}")
    paths = {}
    for subtask, data in sorted(found.items()):
        path = dest / subtask / "task.json"
        atomic_write(path, lambda p, data=data: p.write_bytes(data))
        paths[subtask] = path
    return paths


def hhh_task_files(cache: str | Path | None = None, *, run: Runner = _run) -> dict[str, Path]:
    """The four verified task.json files, extracting (and fetching) on first use."""
    folder = hhh_cache_dir(cache) / "hhh_alignment"
    paths = {s: folder / s / "task.json" for s in HHH_SUBTASKS}
    if all(p.exists() and sha256_file(p) == HHH_TASK_SHA256[s] for s, p in paths.items()):
        return paths
    # the pinned digests are read here, at call time (not bound as defaults)
    sdist = fetch_sdist(cache, expected_sha256=SDIST_SHA256, run=run)
    return extract_hhh(sdist, folder, expected=HHH_TASK_SHA256)


@dataclass(frozen=True)
class HHHExample:
    subtask: str
    index: int  # 1-based position in the subtask's examples
    input: str
    chosen: str
    rejected: str
    file: str = ""


def parse_hhh_task(path: str | Path, subtask: str | None = None) -> list[HHHExample]:
    """The examples of one task.json; a malformed example fails naming the file, its 1-based
    index among the examples and the field."""
    path = Path(path)
    subtask = subtask or path.parent.name
    try:
        task = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"unreadable task file ({err})", file=str(path)) from None
    if not isinstance(task, dict) or not isinstance(task.get("examples"), list):
        raise DataError("no 'examples' list", file=str(path), field="examples")
    out = []
    for k, ex in enumerate(task["examples"], start=1):
        where = {"file": str(path), "row": k}
        if not isinstance(ex, dict):
            raise DataError("example is not an object", **where)
        text = ex.get("input")
        if not isinstance(text, str) or not text.strip():
            raise DataError("missing or empty input", field="input", **where)
        scores = ex.get("target_scores")
        if not isinstance(scores, dict) or len(scores) != 2:
            raise DataError(f"target_scores must hold 2 responses, got "
                            f"{len(scores) if isinstance(scores, dict) else type(scores).__name__}",
                            field="target_scores", **where)
        chosen = [r for r, s in scores.items() if s == 1]
        rejected = [r for r, s in scores.items() if s == 0]
        if len(chosen) != 1 or len(rejected) != 1:
            raise DataError(f"target_scores must score one response 1 and the other 0, got "
                            f"{sorted(scores.values())}", field="target_scores", **where)
        if not chosen[0].strip() or not rejected[0].strip():
            raise DataError("empty response", field="target_scores", **where)
        out.append(HHHExample(subtask, k, text, chosen[0], rejected[0], str(path)))
    return out


def hhh_prompt(example: HHHExample, style: str = "plain", tokenizer: Any = None
               ) -> tuple[str, str, str, bool]:
    """(prompt, chosen, rejected, chat) of an example in the given prompt style."""
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError("prompt style 'chat' needs a tokenizer with a chat template")
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": example.input.strip()}],
                                               tokenize=False, add_generation_prompt=True)
        return prompt, example.chosen.strip(), example.rejected.strip(), True
    return (f"Human: {example.input.strip()}\nAssistant:", " " + example.chosen.strip(),
            " " + example.rejected.strip(), False)


def hhh_pairs(examples: Sequence[HHHExample], style: str = "plain", tokenizer: Any = None
              ) -> list[PreferencePair]:
    """One pair per example: chosen = the response scored 1, rejected = the one scored 0."""
    pairs = []
    for ex in examples:
        prompt, chosen, rejected, chat = hhh_prompt(ex, style, tokenizer)
        pairs.append(PreferencePair(id=f"hhh-{ex.subtask}-{ex.index}", prompt=prompt,
                                    chosen=chosen, rejected=rejected, chat=chat,
                                    meta={"source": "hhh_alignment", "subtask": ex.subtask,
                                          "file": ex.file or None, "row": ex.index}))
    return pairs


def load_hhh(style: str = "plain", tokenizer: Any = None, *, subtasks: Sequence[str] | None = None,
             cache: str | Path | None = None, run: Runner = _run) -> list[PreferencePair]:
    """hhh_alignment as preference pairs (all 221, or those of `subtasks`), fetching once."""
    subtasks = list(subtasks or HHH_SUBTASKS)
    unknown = sorted(set(subtasks) - set(HHH_SUBTASKS))
    if unknown:
        raise ConfigError(f"unknown hhh_alignment subtask(s) {', '.join(unknown)}; "
                          f"choose from {', '.join(HHH_SUBTASKS)}")
    files = hhh_task_files(cache, run=run)
    examples = [ex for s in subtasks for ex in parse_hhh_task(files[s], s)]
    return hhh_pairs(examples, style, tokenizer)
