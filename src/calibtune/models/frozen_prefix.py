"""Compute the frozen bottom layers once per sequence: the cache behind `--lora-layers`.

With the adapter on the top N decoder layers only, the layers below it never change during a
run, so their output for a given sequence is the same at every epoch, every E-step and every
epoch check. `FrozenPrefixCache` wraps the decoder's forward: for each row it looks up the hidden
state entering the lowest adapted layer (keyed by the row's real tokens and their positions),
runs the frozen layers only for the rows it has not seen, and runs the adapted layers on the
assembled batch. Numbers equal the plain forward's up to float reassociation (the frozen layers
may have run in another batch); tested against it on llama, qwen2 and gemma3 layouts (gemma3's
layers alternate sliding and full attention, so the layer types travel with the layers).

The cache is only valid while the frozen layers stay frozen: `install` refuses a model with a
trainable parameter below `start`. A forward that reads or returns a KV cache (prefix sharing,
cloze scoring's shared contexts: the keys and values of every layer are needed) or that has no
`input_ids` goes through the plain forward untouched.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import ConfigError
from . import frozen_states
from .frozen_states import FrozenStateStore

log = logging.getLogger(__name__)


@dataclass
class CacheStats:
    """Rows served from the cache, rows run through the frozen layers, bytes held."""

    hits: int = 0
    misses: int = 0
    bytes: int = 0
    full: bool = False  # the byte budget was reached: later rows are computed, not kept


class FrozenPrefixCache:
    """The decoder's forward, with the output of layers [0, start) kept per sequence."""

    def __init__(self, decoder: Any, start: int, max_bytes: int,
                 store: FrozenStateStore | None = None) -> None:
        self.decoder, self.start, self.max_bytes, self.store = decoder, start, max_bytes, store
        self.layers = decoder.layers
        self.layer_types = getattr(decoder.config, "layer_types", None)
        self.entries: dict[bytes, torch.Tensor] = {}
        self.stats = CacheStats()
        self._plain = decoder.forward
        self._own_forward = "forward" in decoder.__dict__  # e.g. accelerate's device hook

    @contextmanager
    def _only(self, lo: int, hi: int) -> Iterator[None]:
        """The decoder runs layers [lo, hi) only; each keeps its own layer type (the decoder
        indexes `config.layer_types` by position in its list)."""
        config = self.decoder.config
        self.decoder.layers = torch.nn.ModuleList(list(self.layers)[lo:hi])
        if self.layer_types is not None:
            config.layer_types = list(self.layer_types)[lo:hi]
        try:
            yield
        finally:
            self.decoder.layers = self.layers
            if self.layer_types is not None:
                config.layer_types = self.layer_types

    @staticmethod
    def _keys(input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
              ) -> list[bytes]:
        """Each row's real tokens and their positions, as bytes (one copy to the host), and
        the autocast dtype the frozen layers would run in (bf16 training, fp32 scoring)."""
        device = input_ids.device.type
        precision = str(torch.get_autocast_dtype(device)).encode() \
            if torch.is_autocast_enabled(device) else b"off"
        ids, mask, positions = input_ids.cpu(), mask.cpu(), positions.cpu()
        return [ids[b][mask[b]].numpy().tobytes() + b"|" + positions[b][mask[b]].numpy().tobytes()
                + b"|" + precision for b in range(len(ids))]

    def _frozen_output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       position_ids: torch.Tensor) -> torch.Tensor:
        """The hidden state leaving layer start − 1, [B, T, d], for these rows."""
        captured: dict[str, torch.Tensor] = {}

        def keep(module, args, out):
            captured["h"] = out[0] if isinstance(out, tuple) else out

        hook = self.layers[self.start - 1].register_forward_hook(keep)
        try:
            with torch.no_grad(), self._only(0, self.start):
                self._plain(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids, use_cache=False)
        finally:
            hook.remove()
        return captured["h"]

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: Any = None,
                position_ids: torch.Tensor | None = None, past_key_values: Any = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: Any) -> Any:
        wants_cache = kwargs.get("use_cache")
        if wants_cache is None:
            wants_cache = getattr(self.decoder.config, "use_cache", False)
        plain = (input_ids is None or inputs_embeds is not None or past_key_values is not None
                 or kwargs.get("cache") is not None or wants_cache
                 or (attention_mask is not None and attention_mask.shape != input_ids.shape))
        if plain:
            if past_key_values is not None:  # the older name of transformers' `cache`
                kwargs["past_key_values"] = past_key_values
            return self._plain(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs)
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None \
            else attention_mask.bool()
        positions = position_ids if position_ids is not None else \
            torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        keys = self._keys(input_ids, mask, positions)
        states: list[torch.Tensor | None] = [self._lookup(k, input_ids.device) for k in keys]
        missing = [b for b, state in enumerate(states) if state is None]
        if missing:
            rows = torch.tensor(missing, device=input_ids.device)
            out = self._frozen_output(input_ids[rows], mask[rows].long(), positions[rows])
            for j, b in enumerate(missing):
                states[b] = out[j][mask[b]].detach()
                self._store(keys[b], states[b])
                self._put_on_disk(keys[b], states[b])
        self.stats.hits += len(keys) - len(missing)
        self.stats.misses += len(missing)
        hidden = torch.zeros(*input_ids.shape, states[0].shape[-1], dtype=states[0].dtype,
                             device=input_ids.device)
        for b, state in enumerate(states):
            hidden[b][mask[b]] = state
        with self._only(self.start, len(self.layers)):
            return self._plain(input_ids=None, attention_mask=attention_mask,
                               position_ids=position_ids, inputs_embeds=hidden,
                               **{**kwargs, "use_cache": False})

    def _put_on_disk(self, key: bytes, state: torch.Tensor) -> None:
        """Write a state to the store; a full or failing disk turns the store off (it only
        saves time), the run goes on."""
        if self.store is None:
            return
        try:
            self.store.put(key, state)
        except OSError as err:
            log.warning("frozen-layer states: writing to %s failed (%s); going on without the "
                        "disk", self.store.folder, err)
            self.store = None

    def _lookup(self, key: bytes, device: Any) -> torch.Tensor | None:
        """The state kept in memory, else the one on disk (then kept in memory too)."""
        state = self.entries.get(key)
        if state is None and self.store is not None:
            state = self.store.get(key, device)
            if state is not None:
                self._store(key, state)
        return state

    def _store(self, key: bytes, value: torch.Tensor) -> None:
        if key in self.entries:  # the same sequence twice in one batch
            return
        size = value.numel() * value.element_size()
        if self.stats.bytes + size > self.max_bytes:
            if not self.stats.full:
                log.info("frozen-layer cache full at %.0f MB: further sequences are computed, "
                         "not kept", self.stats.bytes / 2**20)
            self.stats.full = True
            return
        self.entries[key] = value
        self.stats.bytes += size


def install(model: Any, start: int, max_mb: float, store_root: str | Path | None = None
            ) -> FrozenPrefixCache:
    """Put a `FrozenPrefixCache` on `model`'s decoder (a transformers model, or one inside a
    PEFT wrapper); layers below `start` must have no trainable parameter. With `store_root`,
    states are also read from and written to disk there (`models.frozen_states`), shared
    with any other run over the same frozen weights."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = inner.get_decoder()
    if not 0 < start < len(decoder.layers):
        raise ConfigError(f"frozen-layer cache: start {start} is not inside the decoder's "
                          f"{len(decoder.layers)} layers")
    frozen = [*decoder.layers[:start].parameters(), *decoder.get_input_embeddings().parameters()]
    if any(p.requires_grad for p in frozen):
        raise ConfigError("frozen-layer cache: a layer below the adapted ones is trainable, so "
                          "its output would change during the run")
    store = None if store_root is None else frozen_states.open_store(store_root, decoder, start)
    cache = FrozenPrefixCache(decoder, start, int(max_mb * 2**20), store)
    decoder.forward = cache.forward
    return cache


def uninstall(cache: FrozenPrefixCache) -> None:
    """The decoder's own forward again; the kept states are dropped."""
    if cache.decoder.__dict__.get("forward") == cache.forward:
        if cache._own_forward:
            cache.decoder.forward = cache._plain
        else:
            del cache.decoder.forward
    cache.entries.clear()
