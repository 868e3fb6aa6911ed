"""Which process this is, among the ones `accelerate launch` or `torchrun` started.

A single process needs nothing. Several (WORLD_SIZE > 1, or MPI's sizes) join one process group
through accelerate's PartialState, which gives rank, local rank and a barrier. The barrier only
waits at the start (config written) and the end (all samples done); its timeout is long because
one process may finish its share hours before another. If a process dies, torchrun's agent stops
the others, so nobody waits forever.

`accelerate launch --cpu --num_processes N` starts one process unless it is given an MPI
hostfile; for N CPU processes on one machine use `accelerate launch --multi_gpu --num_processes N`
(it runs torch.distributed.run, which also works with no GPU) or `torchrun --nproc-per-node N`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flowtui.engine.errors import FlowtuiError

BARRIER_TIMEOUT = timedelta(days=7)
_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    _state: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """The deterministic split: sample i belongs to process i mod world. It does not depend
        on what any process finished before, so every process decides alone, identically."""
        return index % self.world == self.rank

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()

    def device_for(self, device: str) -> str:
        """The device this process should load the model on: with several processes per
        machine and --device auto, one GPU each; with one per machine, `auto` keeps
        device_map="auto" (a model too large for one GPU spreads over the machine's GPUs)."""
        if device != "auto" or self.local_world <= 1:
            return device
        import torch

        if torch.cuda.is_available() and self.local_rank < torch.cuda.device_count():
            return f"cuda:{self.local_rank}"
        return device


def world_size_from_env() -> int:
    for name in _WORLD_VARS:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def from_env(device: str = "auto") -> Dist:
    """This process's place; joins the process group when there are several."""
    world = world_size_from_env()
    if world <= 1:
        if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and \
                os.environ.get("MASTER_ADDR"):
            # accelerate's simple launcher sets MASTER_ADDR only when asked for more than one
            # process, then starts one: say so rather than run N times slower than expected.
            print("flowtui: warning: `accelerate launch --cpu` started one process (it needs an "
                  "MPI hostfile for more); for N CPU processes use `accelerate launch "
                  "--multi_gpu --num_processes N` or `torchrun --nproc-per-node N`",
                  file=sys.stderr)
        return Dist()
    import torch
    from accelerate import PartialState

    # On CPU the group must be told so: PartialState() alone would see no GPU and believe it
    # is alone, and every process would then run every sample.
    cpu = device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)
    if state.num_processes != world:
        raise FlowtuiError(f"started as one of {world} processes, but the process group has "
                           f"{state.num_processes}; launch with accelerate launch or torchrun")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or max(
        1, world // int(os.environ.get("NUM_MACHINES", os.environ.get("NNODES", "1")) or 1))
    return Dist(state.process_index, state.num_processes, state.local_process_index,
                local_world, state)
