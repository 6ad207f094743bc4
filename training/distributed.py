"""Data-parallel training under `torchrun` (DistributedDataParallel): NCCL on GPUs, gloo
on CPU. Without torchrun's environment everything is a single process and a no-op.

    torchrun --standalone --nproc_per_node 8 -m purifier.cli train CONFIG

Each rank takes every world_size-th index of the global batch, so the global batch size
(`train.batch_size`) and the data order are those of a single-process run. DDP averages
gradients across ranks; rank 0 alone writes checkpoints, logs and weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class Distributed:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(device)
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(device, rank, world)

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module to call for gradient-synchronised training (itself when alone)."""
        if not self.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        return indices[self.rank :: self.world_size]

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (e.g. one rank ran out of time):
        ranks must leave the loop together, or the others wait forever in all-reduce."""
        if not self.enabled:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
