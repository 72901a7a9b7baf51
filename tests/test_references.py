"""User-visible text names only files a user has, and cites nothing a user cannot see.

What a user reads: the string literals and docstrings of the package (help(), --help, error
messages, printed lines, reports), configs/*.yaml (their descriptions reach report.html),
README.md and docs/*.md. Every file name there must be a file of the repository or the installed
package, a file calibtune itself writes or reads in a run folder, or a file of another project
listed in EXTERNAL with whose it is. No user-visible text, nor a script, benchmark or test of the
repository, may cite the team's internal notes or its tracker's issue numbers.
"""
from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "calibtune"

# Files of other projects that calibtune's text names, each with whose it is.
EXTERNAL = {
    "train/Custom_Trainer.py": "the reference code's RCFT trainer (docs/method.md §0)",
    "utils/not_max_target_confidence_new.py": "the reference code's non-max targets",
    "trainer_state.json": "transformers' checkpoint state, in calibtune's checkpoints",
    "results_<date>.json": "lm-evaluation-harness's results file",
    "run.yaml": "an example name for the user's own --config file",
}
# Names that one page keeps on purpose for files that no longer exist.
HISTORICAL = {
    "docs/architecture.md": {"scoring.py", "heads.py", "models.py", "evaluate.py", "runs.py"},
}

FILE_REF = re.compile(r"(?<![\w./-])([\w.*<>{}/-]*[\w*>}]\.(?:md|py|ya?ml|json|html))\b")
MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
FORBIDDEN = {
    "an internal note": re.compile(r"METHOD\.md|DESIGN\.md|ASSETS\.md|\.\./shared|\bshared/hooks"),
    "an issue number": re.compile(r"\b[Ii]ssues?\s*#?\d+|\(#\d+\)|(?<![\w&#])#\d{1,4}\b|\bPR\s*#?\d+"),
}
OUTPUT_NAME = re.compile(r"[\w.-]+\.(?:md|py|ya?ml|json|jsonl|html|npz|csv|png|svg|txt)")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def python_strings(path: Path) -> list[tuple[int, str, bool]]:
    """(line, text, is_docstring) of every string literal of a module, f-string parts included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = docstring_nodes(tree)
    return [(node.lineno, node.value, id(node) in docs) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def user_visible() -> list[tuple[Path, int, str]]:
    """(file, line, text) of everything a user of calibtune reads."""
    out = [(p, line, text) for p in package_modules() for line, text, _ in python_strings(p)]
    for path in [*sorted((ROOT / "configs").glob("*.yaml")), ROOT / "README.md",
                 *sorted((ROOT / "docs").glob("*.md"))]:
        out += [(path, i, line) for i, line in
                enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
    return out


def repository_text() -> list[tuple[Path, int, str]]:
    """User-visible text, plus whole files of scripts, benchmarks, tests and results notes."""
    out = user_visible()
    files = [*ROOT.glob("bench/**/*.py"), *ROOT.glob("experiments/**/*.py"),
             *ROOT.glob("experiments/**/*.md"), *ROOT.glob("tests/**/*.py")]
    for path in sorted(set(files)):
        if path.resolve() == Path(__file__).resolve():
            continue
        out += [(path, i, line) for i, line in
                enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
    return out


def written_names() -> set[str]:
    """File names the package itself writes or reads in run folders: the string literals of its
    code (docstrings aside) that are a bare file name, such as "metrics.json"."""
    names = set()
    for path in package_modules():
        names |= {text for _, text, is_doc in python_strings(path)
                  if not is_doc and OUTPUT_NAME.fullmatch(text)}
    return names


def repository_names() -> set[str]:
    """The name of every file of the repository (virtual environments and run folders aside)."""
    skip = {".git", ".venv", "runs", "__pycache__", "node_modules"}
    names = set()
    for _, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip]
        names.update(files)
    return names


def resolves(token: str, where: Path, written: set[str], names: set[str]) -> bool:
    token = token.removeprefix("./")
    name = token.rsplit("/", 1)[-1]
    if name in written or token in EXTERNAL or name in EXTERNAL:
        return True
    if name in HISTORICAL.get(rel(where), set()):
        return True
    if "/" not in token:
        return name in names
    bases = [ROOT, where.parent, PACKAGE, ROOT / "src"]
    if "*" in token:
        return any(next(base.glob(token), None) is not None for base in bases)
    return any((base / token.lstrip("/")).exists() for base in bases)


def findings() -> list[tuple[str, str]]:
    """(file, "line: what is wrong") for every reference that fails."""
    written, names = written_names(), repository_names()
    bad = []
    for path, line, text in user_visible():
        for m in FILE_REF.finditer(text):
            if not resolves(m.group(1), path, written, names):
                at = line + text.count("\n", 0, m.start())
                bad.append((rel(path), f"{at}: names {m.group(1)!r}, which is not a file here"))
        if path.suffix == ".md":
            for m in MD_LINK.finditer(text):
                target = m.group(1)
                if "://" not in target and not target.startswith("mailto:") \
                        and not (path.parent / target).exists():
                    bad.append((rel(path), f"{line}: links {target!r}, which does not exist"))
    for path, line, text in repository_text():
        for what, pattern in FORBIDDEN.items():
            for m in pattern.finditer(text):
                at = line + text.count("\n", 0, m.start())
                bad.append((rel(path), f"{at}: cites {what} ({m.group(0)!r})"))
    return bad


def test_user_visible_text_names_only_files_a_user_has():
    bad = [f"{path}:{msg}" for path, msg in findings()]
    assert not bad, "\n".join(bad)


def test_written_names_are_what_the_code_uses():
    """The allowed run-folder names come from the code: they hold what a run folder holds, and
    the only Markdown names among them are reports calibtune writes, never a document."""
    written = written_names()
    assert {"metrics.json", "report.md", "report.html", "config.yaml", "scores.npz",
            "diagnosis.md", "diagnosis.json", "train_log.json"} <= written
    markdown = {name for name in written if name.endswith(".md")}
    assert markdown <= {"report.md", "diagnosis.md", "compare.md", "table.md"}, markdown


@pytest.mark.parametrize("planted, expected", [
    ("see docs/nowhere.md for the proof", "'docs/nowhere.md'"),
    ("a missing_helper.py module", "'missing_helper.py'"),
    ("the note METHOD.md §6 says so", "an internal note"),
    ("read ../shared/notes.txt", "an internal note"),
    ("as decided in issue 13", "an issue number"),
    ("fixed (#19)", "an issue number"),
    ("writes metrics.json and reads docs/here.md", None),
])
def test_a_planted_bad_reference_is_caught(tmp_path, monkeypatch, planted, expected):
    """Each kind of bad reference, planted in a docstring of a package module, is found; a good
    one is not."""
    package = tmp_path / "src" / "calibtune"
    package.mkdir(parents=True)
    (package / "writer.py").write_text(f'"""{planted}."""\nOUT = "metrics.json"\n',
                                       encoding="utf-8")
    for name in ("configs", "docs"):
        (tmp_path / name).mkdir()
    (tmp_path / "docs" / "here.md").write_text("# here\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("# calibtune\n", encoding="utf-8")
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "ROOT", tmp_path)
    monkeypatch.setattr(this, "PACKAGE", package)
    msgs = [msg for _, msg in findings()]
    if expected is None:
        assert msgs == []
    else:
        assert any(expected in msg for msg in msgs), msgs
