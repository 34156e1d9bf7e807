"""Process groups under torchrun: one place for rank, world size, barrier and the local device.

`init()` runs once per command (gloo on CPU, nccl on CUDA, one GPU per local rank); without
torchrun (WORLD_SIZE unset or 1) everything here is a no-op and the rank is 0 of 1.
"""

from __future__ import annotations

import os

import torch


def init() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend)


def rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    if rank_world()[1] > 1:
        torch.distributed.barrier()
