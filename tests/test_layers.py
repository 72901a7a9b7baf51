"""The package's layering: one dependency direction, no import cycle, a light public import.

    errors, defaults ← config ← options, integrity, packaged, interrupts ← run_guard ← data,
        metrics ← theory ← option_scores ← models, report, interop ← scoring, inspect ← calibrators,
        training ← align ← workflows ← cli ← __main__

A module imports only from lower layers or from its own package; imports inside functions
count too. `calibtune/__init__.py` (the public API) is exempt: it loads heavy names lazily.
"""
import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import calibtune

SRC = Path(calibtune.__file__).parent
LAYERS = {
    "errors": 0, "defaults": 0, "config": 1, "options": 1.2, "integrity": 1, "packaged": 1, "interrupts": 1,
    "run_guard": 1.5,  # run-folder claims: lock, overwrite, resume checks (uses integrity)
    "data": 2, "metrics": 2,
    "theory": 2.5,  # bounds and the regime diagnosis (docs/theory.md): pure NumPy on metrics
    "option_scores": 3, "scores": 3.1,  # scores: the old name of option_scores, an alias
    "models": 4, "report": 4, "interop": 4,  # interop: other harnesses' outputs → OptionScores
    "scoring": 5,
    "inspect": 5,  # Inspect scorer and metrics (optional inspect_ai) on interop and metrics
    "calibrators": 6, "training": 6,
    "align": 6.5,  # DPO / IPO; --calibration-weight reuses training's ECE term and E-step
    "workflows": 7,
    "cli": 8, "__main__": 9,
}


def module_names() -> list[str]:
    return ["calibtune"] + [m.name for m in pkgutil.walk_packages([str(SRC)], "calibtune.")]


def module_path(name: str) -> Path:
    parts = name.split(".")[1:]
    folder = SRC.joinpath(*parts)
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def imports_of(name: str) -> set[str]:
    """calibtune modules `name` imports, at the top or inside functions."""
    path = module_path(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    known = set(module_names())
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("calibtune")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("calibtune"):
                target = node.module
            else:
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            found |= subs or {target}
    return found & known


def component(name: str) -> str:
    return name.split(".")[1] if "." in name else "calibtune"


def test_every_module_imports():
    for name in module_names():
        if name != "calibtune.__main__":
            importlib.import_module(name)


def test_every_module_has_a_layer():
    unknown = {component(n) for n in module_names()} - {"calibtune"} - set(LAYERS)
    assert not unknown, f"give {sorted(unknown)} a layer in LAYERS (docs/architecture.md)"


@pytest.mark.parametrize("name", [n for n in module_names() if n != "calibtune"])
def test_imports_go_down_the_layers(name):
    mine = component(name)
    for target in imports_of(name):
        other = component(target)
        assert other == mine or LAYERS[other] < LAYERS[mine], \
            f"{name} (layer {LAYERS[mine]}) imports {target} (layer {LAYERS.get(other)})"


def test_the_rules_the_issue_names():
    edges = {n: {component(t) for t in imports_of(n)} for n in module_names()}
    for name, targets in edges.items():
        if component(name) in ("data", "metrics"):
            assert not targets & {"scoring", "training", "workflows", "cli", "models"}, name
        if component(name) == "scoring":
            assert not targets & {"training", "workflows", "cli", "calibrators"}, name
        if component(name) in ("training", "calibrators"):
            assert not targets & {"workflows", "cli"}, name


def test_no_import_cycle():
    graph = {n: imports_of(n) - {"calibtune"} for n in module_names()}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_public_api_and_cli_start_without_torch():
    code = ("import sys, calibtune, calibtune.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC.parent), "PATH": ""}, check=True)
    assert out.stdout.strip() == "[]"
