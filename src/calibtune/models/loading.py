"""Load a causal LM and its tokenizer: a built-in model, a local folder, or a GGUF file.

Models are never fetched from a hub. `load_model` returns a `LoadedModel`, which the scoring and
training calls take as it is (and which unpacks as ``model, tokenizer``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelError
from .builtin import BUILTIN_MODELS, builtin_model_folder, gguf_folder

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    """A model (eval mode) with its tokenizer and the name it was loaded by."""

    model: Any
    tokenizer: Any
    name: str
    adapter: str | None = None

    def __iter__(self) -> Iterator[Any]:
        """``model, tokenizer = load_model(...)`` keeps working."""
        return iter((self.model, self.tokenizer))


def resolve_model(spec: str) -> Path:
    """Folder to load for a built-in name, a local HF folder, or a `.gguf` file."""
    if spec in BUILTIN_MODELS:
        return builtin_model_folder(spec)
    path = Path(spec)
    if path.is_file() and path.suffix == ".gguf":
        return gguf_folder(path)
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


def load_model(spec: str, *, adapter: str | None = None, base_adapter: str | None = None,
               dtype: str = "float32", device: str | None = None,
               trust_remote_code: bool = False, load_in_4bit: bool = False) -> LoadedModel:
    """The model and its tokenizer in eval mode, on `device` (CUDA when available by default).

    `base_adapter` is merged into the weights (the model a later stage starts from, e.g. a
    `calibtune align` adapter before CFT); `adapter` is then attached as a PEFT adapter.
    `load_in_4bit` quantises the frozen weights to NF4 for QLoRA training (the output head and
    embeddings stay in `dtype`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ModelError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    folder = resolve_model(spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if base_adapter and load_in_4bit:
        raise ModelError("--base-adapter cannot be merged into 4-bit weights: drop --load-in-4bit")
    quant = quantization_config(load_in_4bit, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            **({"quantization_config": quant, "device_map": device} if quant else {}))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model from {folder}: {err}") from None
    if base_adapter:
        model = _attach_adapter(model, base_adapter).merge_and_unload()
    if adapter:
        model = _attach_adapter(model, adapter)
    if quant is None:  # a quantised model is placed by device_map and cannot be moved
        model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, spec, adapter)


def _attach_adapter(model: Any, adapter: str) -> Any:
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").exists():
        raise ModelError(f"{adapter} holds no adapter_config.json: not a PEFT adapter folder")
    return PeftModel.from_pretrained(model, adapter)
