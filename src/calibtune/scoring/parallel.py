"""Data-parallel scoring: the processes of `accelerate launch`, seen from one of them.

Under `accelerate launch --num_processes N` each process holds the whole model and scores its
share of the items; rank 0 gathers the scores and alone writes the run folder. `Processes` is the
little a scorer needs from the group (rank, world, gather, broadcast), through accelerate's
`PartialState` (which sets up the process group: NCCL on GPUs, gloo on CPU processes). A plain
`python -m calibtune.cli eval` is a group of one, and touches no process group.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Processes:
    """This process's place in the group: rank `rank` of `world`, scoring on `device`."""

    rank: int = 0
    world: int = 1
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])  # accelerate flattens the per-rank lists

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (what rank 0 decided, every rank follows)."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def wait(self) -> None:
        if self.world > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def close(self) -> None:
        """Tear the process group down before the interpreter exits: left to exit-time
        destructors, gloo's threads can abort a rank ("terminate called without an active
        exception") after its work is done. Local to this rank: no collective, so a rank that
        failed can call it too."""
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()


def launched_processes() -> Processes:
    """The group this process was launched in (`accelerate launch` / `torchrun` set WORLD_SIZE);
    a group of one otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    # Without a GPU, accelerate sets up the group only when asked for CPU processes (gloo).
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes != world:
        raise ConfigError(f"launched as {world} processes, but accelerate set up a group of "
                          f"{state.num_processes} ({state.distributed_type})")
    device = "cpu" if state.device.type == "cpu" else str(state.device)
    return Processes(state.process_index, state.num_processes, device)
