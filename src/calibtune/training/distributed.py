"""Which multi-process engine runs a job, and how sharded ranks are kept in step.

Under DDP and ZeRO-2 every rank holds the whole model, so each may score any number of items.
Under FSDP and ZeRO-3 every forward call gathers parameters from all ranks: the ranks must make
the same number of forward calls, in the same order, or they wait on each other for ever.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import ConfigError


def rank_and_world() -> tuple[int, int]:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _deepspeed_zero() -> dict:
    """DeepSpeed's ZeRO settings as `accelerate launch` passes them: flags or a JSON file."""
    env = os.environ
    path = env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if path and Path(path).is_file():
        zero = json.loads(Path(path).read_text()).get("zero_optimization", {})
        return {"stage": str(zero.get("stage", "")),
                "save_whole": bool(zero.get("stage3_gather_16bit_weights_on_model_save"))}
    return {"stage": env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", ""),
            "save_whole": env.get("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "").lower()
            in ("1", "true")}


def sharding_engine() -> str | None:
    """"fsdp" or "zero3" when parameters are sharded across ranks (as `accelerate launch` sets
    the environment), else None."""
    env = os.environ
    if env.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "fsdp"
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true") and \
            _deepspeed_zero()["stage"] == "3":
        return "zero3"
    return None


def check_engine() -> None:
    """Refuse up front the sharded settings calibtune cannot serve: FSDP1 (untested; FSDP2 and
    ZeRO-3 are tested on CPU processes), and those under which the adapter could not be saved
    whole at the end."""
    env, engine = os.environ, sharding_engine()
    if engine == "fsdp":
        if env.get("FSDP_VERSION", "1") != "2":
            raise ConfigError("FSDP version 1 is not supported (calibtune is tested with FSDP2); "
                              "set fsdp_version: 2 (configs/accelerate/fsdp.yaml)")
        kind = env.get("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT").upper()
        if kind != "FULL_STATE_DICT":
            raise ConfigError(f"FSDP with state dict type {kind}: the adapter is saved whole, "
                              "so set fsdp_state_dict_type: FULL_STATE_DICT (configs/accelerate/"
                              "fsdp.yaml)")
    if engine == "zero3" and not _deepspeed_zero()["save_whole"]:
        raise ConfigError("DeepSpeed ZeRO-3 without zero3_save_16bit_model (stage3_gather_16bit_"
                          "weights_on_model_save): the adapter could not be saved whole; set it "
                          "to true (configs/accelerate/deepspeed_zero3.yaml)")


def lockstep_chunks(n_items: int, chunk_size: int, rank: int, world: int) -> list[list[int]]:
    """This rank's share of `n_items`, as chunks of at most `chunk_size` consecutive indices.

    Chunks are dealt round-robin; every rank gets the same number of chunks (a rank that runs
    short repeats its last one, whose scores are simply written twice), so when each chunk costs
    one batch, every rank makes the same number of forward calls.
    """
    chunk_size = max(1, chunk_size)
    chunks = [list(range(s, min(s + chunk_size, n_items))) for s in range(0, n_items, chunk_size)]
    per_rank = math.ceil(len(chunks) / world) if chunks else 0
    mine = chunks[rank::world]
    fallback = mine[-1] if mine else (chunks[0] if chunks else [])
    return mine + [fallback] * (per_rank - len(mine))
