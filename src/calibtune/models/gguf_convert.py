"""GGUF → safetensors, one tensor at a time, so converting never holds the whole fp32 model.

transformers' own GGUF load (``from_pretrained(gguf_file=...)``) de-quantises every tensor into a
state dict and then copies it into the model: two fp32 copies at once (14.4 GB peak for a 1.5B
model). Here each tensor is de-quantised with the `gguf` package from the memory-mapped file,
renamed and fixed up by transformers' own tables (its GGUF config reader, tensor-name map and
per-architecture tensor processors, so the weights are the ones its loader gives), and written
into a safetensors shard of at most `SHARD_BYTES`; the peak is one shard plus one tensor's
de-quantisation. Architectures this cannot reproduce exactly raise `Unsupported`, and the caller
falls back to transformers' whole-model load.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SHARD_BYTES = 512 * 2**20


class Unsupported(Exception):
    """This GGUF needs transformers' whole-model loader (new-style or mixture-of-experts archs)."""


def _packed_path(arch: str) -> bool:
    """Whether transformers loads `arch` through its packed-weights GGUF path (5.2x and later)."""
    try:
        from transformers.integrations.gguf.utils import is_gguf_arch_supported
    except ImportError:  # an older transformers: every architecture takes the legacy loader
        return False
    return is_gguf_arch_supported(arch)


def _legacy_processor(gguf: Path, reader: Any) -> Any:
    """transformers' tensor processor for the file's architecture (llama: q/k un-permutation,
    gemma2/3: norm −1, ...), or `Unsupported` where its loader takes another route."""
    from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                          load_gguf_checkpoint, read_field)

    arch = read_field(reader, "general.architecture")[0]
    if _packed_path(arch):
        raise Unsupported(f"architecture {arch} is loaded by transformers' packed GGUF path")
    processor_class = TENSOR_PROCESSORS.get(arch, TensorProcessor)
    if processor_class.perform_fallback_tensor_mapping is not TensorProcessor.perform_fallback_tensor_mapping:
        raise Unsupported(f"architecture {arch} merges expert tensors across the file")
    parsed = load_gguf_checkpoint(str(gguf), return_tensors=False)["config"]
    return processor_class(config=parsed)


def _plan_shards(tensors: list[tuple[Any, str]], limit: int) -> list[list[tuple[Any, str]]]:
    """Consecutive groups of (GGUF tensor, HF name) of at most `limit` fp32 bytes each (a larger
    tensor gets a shard of its own)."""
    shards: list[list[tuple[Any, str]]] = [[]]
    size = 0
    for item in tensors:
        nbytes = int(item[0].n_elements) * 4
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += nbytes
    return shards


def convert_streamed(gguf: Path, out: Path, shard_bytes: int = SHARD_BYTES) -> None:
    """Write the fp32 safetensors model folder of `gguf` (config, generation config, weights;
    not the tokenizer) into the existing empty folder `out`."""
    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    reader = GGUFReader(gguf)  # memory-mapped: a tensor's bytes are read when it is de-quantised
    processor = _legacy_processor(gguf, reader)
    with torch.device("meta"):  # names and shapes only, no memory
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    names = get_gguf_hf_weights_map(skeleton, processor)
    mapped = [(t, names[t.name]) for t in reader.tensors if t.name in names]
    expected = set(skeleton.state_dict())
    if getattr(config, "tie_word_embeddings", False):
        expected.discard(_tied_head(skeleton))
    missing = expected - {hf for _, hf in mapped}
    if missing:
        raise Unsupported(f"no GGUF tensor maps to {sorted(missing)[:3]}")
    shards = _plan_shards(mapped, shard_bytes)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, start=1):
        file = "model.safetensors" if len(shards) == 1 else \
            f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for tensor, hf_name in shard:
            result = processor.process(weights=dequantize(tensor.data, tensor.tensor_type),
                                       name=tensor.name)
            if result.name != tensor.name:
                raise Unsupported(f"the tensor processor renames {tensor.name}")
            tensors[hf_name] = torch.from_numpy(np.copy(result.weights)).to(torch.float32)
            weight_map[hf_name] = file
            total += tensors[hf_name].numel() * 4
        save_file(tensors, out / file, metadata={"format": "pt"})
        del tensors
    if len(shards) > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    config.architectures = [type(skeleton).__name__]
    config.dtype = torch.float32
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    log.info("converted %s tensor by tensor into %d shard(s)", gguf.name, len(shards))


def _tied_head(model: Any) -> str:
    head = model.get_output_embeddings()
    return next(f"{name}.weight" for name, module in model.named_modules() if module is head)
