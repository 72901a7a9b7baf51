"""Load a causal LM and its tokenizer: a built-in model, a local folder, or a GGUF file.

Models are never fetched from a hub. `load_model` returns a `LoadedModel`, which the scoring and
training calls take as it is (and which unpacks as ``model, tokenizer``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, ModelError
from .builtin import BUILTIN_MODELS, builtin_model_folder, gguf_folder

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
MEMORY_DEVICES = ("cpu", "mps", "xpu", "npu", "disk")


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


def parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """``"0=20GiB,cpu=60GiB"`` → ``{0: "20GiB", "cpu": "60GiB"}`` (accelerate's `max_memory`)."""
    if not text:
        return None
    limits: dict[int | str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"--max-memory: expected DEVICE=SIZE pairs separated by commas "
                              f"(e.g. 0=20GiB,cpu=60GiB), got {part.strip()!r}")
        if not key.isdigit() and key not in MEMORY_DEVICES:
            raise ConfigError(f"--max-memory: device {key!r} is neither a GPU index nor one of "
                              f"{', '.join(MEMORY_DEVICES)}")
        limits[int(key) if key.isdigit() else key] = value
    return limits


def load_model(spec: str, *, adapter: str | None = None, base_adapter: str | None = None,
               dtype: str = "float32", device: str | None = None, trust_remote_code: bool = False,
               load_in_4bit: bool = False, device_map: str | None = None,
               max_memory: str | dict | None = None) -> LoadedModel:
    """The model and its tokenizer in eval mode, on `device` (CUDA when available by default).

    `base_adapter` is merged into the weights (the model a later stage starts from, e.g. a
    `calibtune align` adapter before CFT); `adapter` is then attached as a PEFT adapter.
    `load_in_4bit` quantises the frozen weights to NF4 for QLoRA training (the output head and
    embeddings stay in `dtype`). `device_map="auto"` places a model larger than one device over
    the GPUs and the CPU (accelerate's big-model placement, within `max_memory`, e.g.
    ``"0=20GiB,cpu=60GiB"``) instead of moving it whole to `device`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ModelError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise ConfigError(f"--device-map must be one of {', '.join(DEVICE_MAPS)}, got "
                          f"{device_map!r}")
    limits = max_memory if isinstance(max_memory, dict) else parse_max_memory(max_memory)
    if limits and not device_map:
        raise ConfigError("--max-memory limits what --device-map auto places on each device; "
                          "give --device-map auto too")
    folder = resolve_model(spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if base_adapter and load_in_4bit:
        raise ModelError("--base-adapter cannot be merged into 4-bit weights: drop --load-in-4bit")
    quant = quantization_config(load_in_4bit, dtype)
    placement = {"device_map": device_map, "max_memory": limits} if device_map else \
        {"device_map": device} if quant else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            **({"quantization_config": quant} if quant else {}), **placement)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"cannot load model from {folder}: {err}") from None
    if device_map and "disk" in set(getattr(model, "hf_device_map", {}).values()):
        raise ModelError(f"--device-map {device_map} with --max-memory {max_memory} leaves no "
                         "room for some layers (they would go to disk); raise --max-memory")
    if device_map and head_offloaded(getattr(model, "hf_device_map", {}), _head_name(model)):
        raise ModelError(f"--device-map {device_map} with --max-memory {max_memory} puts the "
                         "output head off the GPUs (offloaded to the CPU), where calibtune cannot "
                         "read it; give the GPUs more room in --max-memory")
    if base_adapter:
        model = _attach_adapter(model, base_adapter).merge_and_unload()
    if adapter:
        model = _attach_adapter(model, adapter)
    if quant is None and not device_map:  # a placed model (device map, 4-bit) stays where it is
        model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, spec, adapter)


def head_offloaded(placement: dict, head: str) -> bool:
    """Whether accelerate's `placement` (module name → device) offloads the output head `head`:
    the head on "cpu"/"disk" while some module sits on a GPU. Offloaded weights are on `meta`
    outside the module's own forward, and calibtune's head hook reads them outside it."""
    gpu = any(isinstance(d, int) or str(d).startswith(("cuda", "xpu", "mps"))
              for d in placement.values())
    owners = [k for k in placement if k == "" or head == k or head.startswith(k + ".")]
    where = placement[max(owners, key=len)] if owners else None
    return gpu and where in ("cpu", "disk")


def _head_name(model: Any) -> str:
    head = model.get_output_embeddings()
    return next((name for name, module in model.named_modules() if module is head), "lm_head")


def _attach_adapter(model: Any, adapter: str) -> Any:
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").exists():
        raise ModelError(f"{adapter} holds no adapter_config.json: not a PEFT adapter folder")
    return PeftModel.from_pretrained(model, adapter)
