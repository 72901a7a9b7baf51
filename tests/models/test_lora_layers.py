"""`--lora-layers N`: adapters on the top N decoder layers only, and no backward pass below them."""
from __future__ import annotations

import pytest
import torch

from calibtune.errors import ConfigError
from calibtune.models import load_model
from calibtune.models.lora import decoder_layer_count, stop_backward_below_adapters, wrap_lora
from calibtune.training.config import TrainConfig
from conftest import build_model_folder


@pytest.fixture(scope="module")
def four_layer_llama(tmp_path_factory):
    from transformers import AutoConfig

    path = build_model_folder(tmp_path_factory.mktemp("four-layer"), "llama")
    config = AutoConfig.from_pretrained(path)
    config.num_hidden_layers = 4
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def adapted(model) -> dict[int, set[str]]:
    """{decoder layer index: the leaf names of its adapted modules}."""
    out: dict[int, set[str]] = {}
    for name, _ in model.named_parameters():
        if "lora_A" in name:
            parts = name.split(".")
            i = parts.index("layers")
            out.setdefault(int(parts[i + 1]), set()).add(parts[parts.index("lora_A") - 1])
    return out


def test_top_layers_get_every_linear_module_and_lower_ones_none(four_layer_llama):
    everywhere = adapted(wrap_lora(load_model(str(four_layer_llama), device="cpu").model,
                                   TrainConfig(lora_r=2, lora_alpha=4)))
    top = adapted(wrap_lora(load_model(str(four_layer_llama), device="cpu").model,
                            TrainConfig(lora_r=2, lora_alpha=4, lora_layers=2)))
    assert set(everywhere) == {0, 1, 2, 3}
    assert set(top) == {2, 3}
    assert top[3] == everywhere[3] == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj"}


def test_named_targets_are_narrowed_to_the_top_layers(four_layer_llama):
    model = wrap_lora(load_model(str(four_layer_llama), device="cpu").model,
                      TrainConfig(lora_r=2, lora_alpha=4, lora_layers=1, lora_targets="q_proj,v_proj"))
    assert adapted(model) == {3: {"q_proj", "v_proj"}}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_backward_pass_stops_below_the_lowest_adapted_layer(four_layer_llama, checkpointing):
    """The hidden state entering the lowest adapted layer carries no graph: autograd never
    visits the frozen layers under it (with and without gradient checkpointing)."""
    model = load_model(str(four_layer_llama), device="cpu").model
    model = wrap_lora(model, TrainConfig(lora_r=2, lora_alpha=4, lora_layers=2)).train()
    if checkpointing:  # as the Trainer does, then as our callback does
        model.activation_checkpointing_enable()
        stop_backward_below_adapters(model)
    ran: list[int] = []
    for i, layer in enumerate(model.base_model.model.model.layers):
        layer.register_full_backward_hook(lambda m, gi, go, i=i: ran.append(i))
    ids = torch.tensor([[2, 7, 9, 11, 5]])
    out = model(input_ids=ids, output_hidden_states=True)
    assert not out.hidden_states[2].requires_grad and out.hidden_states[3].requires_grad
    out.logits[0, -1].logsumexp(-1).backward()
    assert sorted(set(ran)) == [2, 3]


def test_too_many_layers_is_one_line_error(four_layer_llama):
    model = load_model(str(four_layer_llama), device="cpu").model
    assert decoder_layer_count(model) == 4
    with pytest.raises(ConfigError, match="--lora-layers 5 exceeds the model's 4 decoder layers"):
        wrap_lora(model, TrainConfig(lora_layers=5))
    with pytest.raises(ConfigError, match="--lora-layers must be >= 1"):
        TrainConfig(lora_layers=0)


def test_training_with_checkpointing_runs_backward_through_the_top_layers_only(tiny_llama):
    """Through `train()`: the Trainer turns checkpointing on (and transformers' input-gradient
    hook with it); the callback takes the hook off, so the first step's backward visits only
    the adapted top layer of the two."""
    from transformers import TrainerCallback

    from calibtune.training import train
    from conftest import make_items

    visited: list[int] = []

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0:
                for i, layer in enumerate(model.base_model.model.model.layers):
                    layer.register_full_backward_hook(lambda m, gi, go, i=i: visited.append(i))

    cfg = TrainConfig(method="cft", lora_r=2, lora_alpha=4, lora_layers=1, max_steps=1,
                      batch_size=2, gradient_checkpointing=True, warmup_ratio=0.0)
    train(load_model(str(tiny_llama), device="cpu"), make_items(4), cfg, callbacks=[Probe()])
    assert sorted(set(visited)) == [1]
