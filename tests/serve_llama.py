"""`python tests/serve_llama.py ARGS…`: llama-cpp-python's OpenAI-compatible server (ARGS as for
`python -m llama_cpp.server`) with llama.cpp's extra weight buffer types turned off.

Why: with them on (the default), a native build on a CPU with AMX (e.g. Sapphire Rapids) runs the
output head through ggml's AMX matmul, which crashes (SIGSEGV) as soon as a batch asks for more
than one row of logits, i.e. whenever log-probabilities are requested (`logits_all`). Without
them llama.cpp uses its plain CPU kernels on the same weights; only speed differs.
"""
import runpy

import llama_cpp.llama_cpp as native

_default_params = native.llama_model_default_params


def _params():
    params = _default_params()
    params.use_extra_bufts = False
    return params


native.llama_model_default_params = _params
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
