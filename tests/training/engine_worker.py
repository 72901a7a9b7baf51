"""Run by test_distributed.py under `accelerate launch`: RCFT on 2 CPU processes (gloo), with
DDP, FSDP2 or DeepSpeed ZeRO-3.

accelerate enables FSDP and DeepSpeed only on accelerator devices; on CPU processes it silently
falls back to DDP. So when the environment asks for FSDP (as `accelerate launch --config_file
configs/accelerate/fsdp.yaml` sets it), this worker makes the CPU state take that FSDP plugin
(torch's FSDP2 runs on gloo); for DeepSpeed it lets the Trainer ask for a non-CPU device, which
DeepSpeed's CPU accelerator (DS_ACCELERATOR=cpu, gloo) then provides. The Trainer shards the
model exactly as it would on GPUs.
"""
import json
import os
import sys

from accelerate import state as accelerate_state
from accelerate.utils import DistributedType

from calibtune.training import finetune as finetune_module
from calibtune.training import trainer as trainer_module
from calibtune.workflows import train as run_module
from calibtune.workflows.config import TrainRunConfig

original_init = accelerate_state.AcceleratorState.__init__


def fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        accelerate_state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP


accelerate_state.AcceleratorState.__init__ = fsdp_on_cpu
original_args = finetune_module.training_arguments


def deepspeed_on_cpu(cfg, folder, save=True):
    args = original_args(cfg, folder, save)
    args.use_cpu = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true"
    return args


finetune_module.training_arguments = deepspeed_on_cpu

# How the output head's weight is held between forward calls: a DTensor shard under FSDP, an
# empty placeholder under ZeRO-3, the whole matrix under DDP.
head_kinds = []
original_loss = trainer_module.CalibTrainer.compute_loss


def recording_compute_loss(self, model, inputs, *args, **kwargs):
    head = self.accelerator.unwrap_model(model).get_output_embeddings().weight
    kind = type(head).__name__
    if hasattr(head, "ds_id"):
        kind = f"zero3-{tuple(head.ds_shape)}-holds-{head.numel()}"
    head_kinds.append(kind)
    return original_loss(self, model, inputs, *args, **kwargs)


trainer_module.CalibTrainer.compute_loss = recording_compute_loss
model, data, out, scoring = sys.argv[1:5]
cfg = TrainRunConfig(model=model, data=f"{data}/train.jsonl", split=None,
                  eval_data=f"{data}/eval.jsonl", eval_split=None, eval_limit=None,
                  method="rcft", scoring=scoring, max_steps=4, estep_every_steps=2, batch_size=2,
                  lora_r=4, lora_alpha=8, learning_rate=5e-3, save_steps=100, eval_before=True,
                  out=out)
result = run_module.run_training(cfg)
rank = int(os.environ.get("RANK", "0"))
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"world": int(os.environ.get("WORLD_SIZE", "1")), "head_kinds": head_kinds,
               "after": result.metrics_after}, f)
