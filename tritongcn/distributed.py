"""Running under `torchrun`: one process per device, chains sharded between them.

Chains are placed by their index in the whole bank, so a sharded run draws the same noise for each chain
as a single process would (see `tritongcn.chains`). torch.distributed uses gloo on the CPU and NCCL on
CUDA devices.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, total: int) -> tuple:
        """(first chain, number of chains) of this process's share of `total` chains, in rank order."""
        first = total * self.rank // self.size
        return first, total * (self.rank + 1) // self.size - first


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: torch.device) -> World:
    """The process group torchrun set up (initialised on first call), or a world of one process."""
    if not launched_by_torchrun():
        return World()
    if device.type == "cuda" and device.index is not None:
        # Triton launches on the current device, not the tensors': without this every rank's kernels would
        # go to GPU 0.
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def local_device(device: str) -> str:
    """Under torchrun each process takes the CUDA device of its local rank."""
    if device == "cuda" and launched_by_torchrun():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def all_reduce_sum(tensors, world: World) -> None:
    """Sum tensors (in place) over the processes: the weight gradient of a sharded learner."""
    if world.size == 1:
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def gather_objects(obj, world: World) -> list:
    """`obj` of every process, in rank order (on every process)."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def finish(world: World) -> None:
    """Leave the process group together: a process that tears down its connections while a peer is still
    reading the last collective makes that peer abort."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
