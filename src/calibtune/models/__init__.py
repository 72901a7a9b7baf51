"""Loading causal LMs: local folders, GGUF files and built-in models with pinned digests."""
from .loading import (BUILTIN_MODELS, DEFAULT_MODEL, BuiltinModel, builtin_model_folder, cache_dir,
                      convert_gguf, load_model, resolve_model)

__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "BuiltinModel", "builtin_model_folder", "cache_dir",
           "convert_gguf", "load_model", "resolve_model"]
