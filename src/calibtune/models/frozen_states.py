"""Frozen-layer states on disk, shared by every run over the same frozen layers.

With `--lora-layers N`, the layers below the adapter are the untouched model's. A comparison
that scores the untouched model and then trains and scores adapters on the same items (as
`calibtune reproduce` does) computes the same frozen-layer output for each sequence again in
every step. `FrozenStateStore` keeps it in a folder, one file per sequence, under a fingerprint
of exactly what produced it: the frozen layers' and embeddings' weights (every byte), the
boundary layer, the model class and its configuration. Another model, another boundary or
weights changed by a merged adapter give another fingerprint, hence another sub-folder: a state
is never read for weights that did not produce it.

Files are written atomically (a temporary file, then a rename), so an interrupted run leaves
whole states or none; each file holds its sequence's key and is ignored if the key differs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT = 1  # how states are computed and stored: raise it when that changes

# Configuration fields that do not change what the frozen layers compute.
_VOLATILE = {"use_cache", "_name_or_path", "transformers_version", "architectures",
             "num_hidden_layers", "layer_types", "id2label", "label2id", "auto_map"}


def fingerprint(decoder: Any, start: int) -> str:
    """A digest of what layers [0, start) of `decoder` compute from token ids: the class,
    the configuration, the layer types below `start`, and every parameter and buffer of the
    embeddings, the rotary embedding and those layers (LoRA weights on them included), with
    the torch and transformers versions and the store's format (kernels and fixes change
    numbers).

    Computed afresh at every call on purpose: a memo keyed on tensors' version counters would
    miss edits made through `.data` (PEFT merges adapters that way), and a stale fingerprint
    would serve states of other weights. Hashing is a few seconds per install on a 1.5B model,
    under 1% of a reproduce run."""
    import transformers

    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{FORMAT}|{torch.__version__}|{transformers.__version__}".encode())
    config = {k: v for k, v in decoder.config.to_dict().items() if k not in _VOLATILE}
    types = getattr(decoder.config, "layer_types", None)
    digest.update(json.dumps([type(decoder).__name__, start, config,
                              list(types)[:start] if types else None],
                             sort_keys=True, default=str).encode())
    above = tuple(f"layers.{i}." for i in range(start, len(decoder.layers)))
    named = [*decoder.named_parameters(), *decoder.named_buffers()]
    for name, tensor in sorted(named, key=lambda nt: nt[0]):
        if name.startswith(above) or name.startswith("norm."):
            continue
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


class FrozenStateStore:
    """One folder of frozen-layer states: `get(key)` → the state or None, `put(key, state)`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.loaded = 0
        self.written = 0

    def _path(self, key: bytes) -> Path:
        return self.folder / f"{hashlib.blake2b(key, digest_size=16).hexdigest()}.safetensors"

    def get(self, key: bytes, device: Any = "cpu") -> torch.Tensor | None:
        from safetensors.torch import load_file

        path = self._path(key)
        if not path.exists():
            return None
        try:
            saved = load_file(str(path), device=str(device))
            stored_key, state = saved["key"].cpu().numpy().tobytes(), saved["state"]
        except Exception as err:  # a damaged file is a miss, not a failure: written again
            log.warning("frozen-layer state %s unreadable (%s): computing it again", path.name,
                        err)
            path.unlink(missing_ok=True)
            return None
        if stored_key != key:
            return None
        self.loaded += 1
        return state

    def put(self, key: bytes, state: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = self._path(key)
        if path.exists():
            return
        keep = {"state": state.detach().to("cpu").contiguous(),
                "key": torch.frombuffer(bytearray(key), dtype=torch.uint8)}
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        os.close(fd)
        try:
            save_file(keep, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.written += 1


def open_store(root: str | Path, decoder: Any, start: int) -> FrozenStateStore:
    """The store of `decoder`'s layers [0, start) under `root` (one sub-folder per
    fingerprint)."""
    return FrozenStateStore(Path(root) / f"start{start}-{fingerprint(decoder, start)}")
