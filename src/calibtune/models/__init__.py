"""Loading causal LMs: local folders, GGUF files and built-in models with pinned digests."""
from .builtin import (BUILTIN_MODELS, DEFAULT_MODEL, BuiltinModel, builtin_model_folder, cache_dir,
                      convert_gguf, gguf_folder)
from .loading import DTYPES, LoadedModel, load_model, resolve_model

__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "DTYPES", "BuiltinModel", "LoadedModel",
           "builtin_model_folder", "cache_dir", "convert_gguf", "gguf_folder", "load_model",
           "resolve_model"]
