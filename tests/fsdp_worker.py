"""Run by test_distributed.py under torchrun: RCFT on 2 CPU processes (gloo), DDP or FSDP2.

accelerate enables FSDP only on accelerator devices; on CPU processes it silently falls back to
DDP. When the environment asks for FSDP (as `accelerate launch --config_file
configs/accelerate/fsdp.yaml` sets it), this worker makes the CPU state take that FSDP plugin,
so the Trainer shards the model exactly as it would on GPUs (torch's FSDP2 runs on gloo).
"""
import json
import os
import sys

from accelerate import state as accelerate_state
from accelerate.utils import DistributedType

from calibtune.train import trainer as trainer_module
from calibtune.train.config import TrainConfig
from calibtune.train.run import run_training

original_init = accelerate_state.AcceleratorState.__init__


def fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        accelerate_state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP


accelerate_state.AcceleratorState.__init__ = fsdp_on_cpu

# What the output head's weight is between forward calls: a DTensor shard under FSDP.
head_types = []
original_loss = trainer_module.CalibTrainer.compute_loss


def recording_compute_loss(self, model, inputs, *args, **kwargs):
    head = self.accelerator.unwrap_model(model).get_output_embeddings().weight
    head_types.append(type(head).__name__)
    return original_loss(self, model, inputs, *args, **kwargs)


trainer_module.CalibTrainer.compute_loss = recording_compute_loss
model, data, out, scoring = sys.argv[1:5]
cfg = TrainConfig(model=model, data=f"{data}/train.jsonl", split=None,
                  eval_data=f"{data}/eval.jsonl", eval_split=None, eval_limit=None,
                  method="rcft", scoring=scoring, max_steps=4, estep_every_steps=2, batch_size=2,
                  lora_r=4, lora_alpha=8, learning_rate=5e-3, save_steps=100, eval_before=True,
                  out=out)
result = run_training(cfg)
rank = int(os.environ.get("RANK", "0"))
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"world": int(os.environ.get("WORLD_SIZE", "1")), "head_types": head_types,
               "after": result.metrics_after}, f)
