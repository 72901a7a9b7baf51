"""`--device-map`: a placement that offloads the output head to the CPU beside GPUs is refused
(calibtune's head hook reads the head's weights outside its forward, where accelerate keeps
offloaded weights on `meta`); the rule is checked on placements, as no GPU runs the tests."""
from calibtune.models.loading import head_offloaded


def test_an_offloaded_head_is_detected_from_the_placement():
    assert head_offloaded({"model.embed_tokens": 0, "model.layers.0": 0, "lm_head": "cpu"},
                          "lm_head")
    assert head_offloaded({"model": 0, "lm_head": "disk"}, "lm_head")
    assert not head_offloaded({"model": 0, "model.layers.9": "cpu", "lm_head": 0}, "lm_head")
    assert not head_offloaded({"": "cpu"}, "lm_head")  # all on the CPU: nothing offloaded
    assert not head_offloaded({"model": "cpu", "lm_head": "cpu"}, "lm_head")
    assert head_offloaded({"model.layers": 0, "": "cpu"}, "lm_head")  # the root's device
    assert not head_offloaded({}, "lm_head")
