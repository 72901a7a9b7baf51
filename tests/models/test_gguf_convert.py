"""The tensor-by-tensor GGUF conversion gives transformers' own GGUF weights, architecture by
architecture (tiny synthetic GGUF files written here), and the real SmolLM2 file's scores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from calibtune.models.gguf_convert import _plan_shards, convert_streamed

ARCHS = {  # what each one exercises in transformers' loader
    "llama": dict(tie=True),     # q/k rows un-permuted; tied head
    "qwen2": dict(tie=False),    # q/k/v biases; untied lm_head; no permutation
    "gemma3": dict(tie=True),    # norm weights stored +1 (the loader subtracts 1); q/k norms
}


def hf_config(arch: str, tie: bool):
    from transformers import AutoConfig

    model_type = "gemma3_text" if arch == "gemma3" else arch
    extra = dict(head_dim=16, sliding_window=32, query_pre_attn_scalar=16) if arch == "gemma3" else {}
    return AutoConfig.for_model(model_type, vocab_size=64, hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0,
                                tie_word_embeddings=tie, **extra)


def write_gguf(path: Path, arch: str, tie: bool, seed: int = 0) -> Path:
    """A GGUF of a random tiny `arch` model: matrices Q8_0, vectors F32 (as llama.cpp stores them)."""
    import gguf
    from transformers import AutoModelForCausalLM

    config = hf_config(arch, tie)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(128)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(64)
    if arch == "gemma3":
        writer.add_key_length(16)
        writer.add_value_length(16)
        writer.add_sliding_window(32)
    for hf_name, tensor in model.state_dict().items():
        if tie and hf_name == "lm_head.weight":
            continue
        base, suffix = hf_name.rsplit(".", 1)
        data = tensor.detach().float().numpy() + np.float32(0.1 * torch.rand(()).item())
        if data.ndim == 2:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(f"{names.get_name(base)}.{suffix}", q,
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(f"{names.get_name(base)}.{suffix}", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("arch", ARCHS)
def test_streamed_conversion_gives_transformers_gguf_weights(tmp_path, arch):
    """Every tensor (after loading both) within 1e-6 of transformers' GGUF load, same names,
    same tying, same config, and the same logits; shards small enough to force several."""
    from transformers import AutoModelForCausalLM

    gguf = write_gguf(tmp_path / f"{arch}.gguf", arch, **ARCHS[arch])
    out = tmp_path / "out"
    out.mkdir()
    convert_streamed(gguf, out, shard_bytes=40_000)
    assert (out / "model.safetensors.index.json").exists()  # several shards were written
    new = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name,
                                               dtype=torch.float32).eval()
    ours, theirs = new.state_dict(), ref.state_dict()
    assert set(ours) == set(theirs)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=0, msg=name)
    tied = new.lm_head.weight.data_ptr() == new.get_input_embeddings().weight.data_ptr()
    assert tied == ARCHS[arch]["tie"] == ref.config.tie_word_embeddings
    skip = {"architectures", "dtype", "transformers_version", "_name_or_path", "quantization_config"}
    config = lambda m: {k: v for k, v in m.config.to_dict().items() if k not in skip}  # noqa: E731
    assert config(new) == config(ref)
    ids = torch.tensor([[1, 5, 9, 2, 33, 7]])
    with torch.no_grad():
        torch.testing.assert_close(new(ids).logits, ref(ids).logits, atol=1e-5, rtol=0)


def test_shard_plan_bounds_each_shard():
    class T:
        def __init__(self, n):
            self.n_elements = n

    plan = _plan_shards([(T(n), str(i)) for i, n in enumerate([10, 10, 30, 5, 5, 5])], limit=80)
    assert [[name for _, name in shard] for shard in plan] == [["0", "1"], ["2"], ["3", "4", "5"]]


@pytest.mark.slow
def test_real_smollm2_conversion_scores_like_transformers_gguf_load(tmp_path):
    """The embedded SmolLM2 GGUF: the converted folder's option scores on 4 MMLU items equal
    those of transformers' GGUF load to 1e-5."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from calibtune.data import load_dataset, sample_items
    from calibtune.models import BUILTIN_MODELS
    from calibtune.scoring import LetterScorer

    gguf = BUILTIN_MODELS["smollm2-135m-instruct"].locate()
    convert_streamed(gguf, tmp_path)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    items = sample_items(load_dataset("mmlu", "test").items, 4, seed=3)
    scores = []
    for model in (AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32),
                  AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                       dtype=torch.float32)):
        scores.append(LetterScorer(model.eval(), tok, prompt="chat", progress=False).score(items))
    np.testing.assert_allclose(scores[0].logits, scores[1].logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["qwen2moe", "lfm2"])
def test_architectures_loaded_another_way_are_left_to_transformers(tmp_path, arch):
    """Mixture-of-experts files (expert tensors merged across the file) and those of
    transformers' packed path are refused, so the caller takes transformers' whole load."""
    import gguf

    from calibtune.models.gguf_convert import Unsupported, _legacy_processor

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(Unsupported, match=arch):
        _legacy_processor(path, gguf.GGUFReader(path))


def test_convert_gguf_falls_back_to_the_whole_load_and_keeps_no_partial_shards(tmp_path,
                                                                               monkeypatch):
    from calibtune.models import builtin
    from calibtune.models.gguf_convert import Unsupported

    def streamed(gguf, out):
        (out / "model-00001-of-00002.safetensors").write_bytes(b"half")
        raise Unsupported("the tensor processor renames x")

    class Tokenizer:
        def save_pretrained(self, folder):
            (Path(folder) / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(builtin, "convert_streamed", streamed)
    monkeypatch.setattr(builtin, "_convert_whole",
                        lambda gguf, out: (out / "model.safetensors").write_bytes(b"whole"))
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: Tokenizer())
    out = builtin.convert_gguf(tmp_path / "m.gguf", tmp_path / "cache" / "m")
    assert sorted(p.name for p in out.iterdir()) == ["calibtune-manifest.json",
                                                     "model.safetensors", "tokenizer.json"]
    assert [p.name for p in out.parent.iterdir()] == ["m"]
