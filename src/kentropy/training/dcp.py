"""Checkpoints of a sharded (FSDP) run: the resumable state as a Distributed Checkpoint (DCP),
beside the full HF model gathered on rank 0, all in one atomically written directory.

    step-000400/
      config.json, model.safetensors, tokenizer files   the HF model (what measure, probe... read)
      trainer_state.pt                                  steps done, RNG: what the loop needs to go on
      dcp/                                              model + optimizer, one file per saving rank

DCP stores every tensor with its global shape and each rank's piece, so a run saved by N
processes loads into M (resharding on load), or into one unsharded model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from kentropy.runtime.distributed import barrier, rank_world
from kentropy.io import write_dir_atomic
from kentropy.training.rundir import TRAINER_STATE

DCP_DIR = "dcp"


def write_dir_atomic_all(path: str | Path, write: Callable[[Path], None]) -> Path:
    """`write_dir_atomic` with every rank writing into the same temporary directory.

    Rank 0 makes the directory and tells the others its name; the directory is put in place
    once every rank's `write(tmp)` has returned. Collective: every rank must call it.
    """
    rank, world = rank_world()
    if world == 1:
        return write_dir_atomic(path, write)

    def shared(tmp: Path) -> None:
        box = [str(tmp)]
        torch.distributed.broadcast_object_list(box, src=0)
        write(tmp)
        barrier()  # every rank's part is on disk before the rename

    if rank == 0:
        write_dir_atomic(path, shared)
        barrier()
        return Path(path)
    box = [None]
    torch.distributed.broadcast_object_list(box, src=0)
    write(Path(box[0]))
    barrier()
    barrier()  # wait for the rename: the directory is in place for everyone after this call
    return Path(path)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU, on rank 0 (an empty dict on the others). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer, tokenizer, trainer_state: dict) -> Path:
    """Write the HF model (gathered on rank 0), `trainer_state` (rank 0's) and the sharded DCP state.

    Works for a sharded or a plain model; collective across ranks.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    rank, _ = rank_world()

    def write(d: Path) -> None:
        model_sd, optim_sd = get_state_dict(model, opt)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(d / DCP_DIR))
        full = full_state_dict(model)
        # a tied weight (GPT-2's head = embeddings) is saved once, under its first name, as save_pretrained does
        tied = set(dict(model.named_parameters(remove_duplicate=False))) - set(dict(model.named_parameters()))
        full = {k: v for k, v in full.items() if k not in tied}
        if rank == 0:
            model.save_pretrained(d, state_dict=full)
            tokenizer.save_pretrained(d)
            torch.save(trainer_state, d / TRAINER_STATE)

    barrier()  # a rank that wrote last step's metrics is not behind
    return write_dir_atomic_all(path, write)


def load(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Load model and optimizer from `path`'s DCP state into (sharded or plain) `model` and `opt`,
    whatever the number of processes that saved it; returns the trainer state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)  # the target layout: this run's shards
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(Path(path) / DCP_DIR))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return torch.load(Path(path) / TRAINER_STATE, weights_only=True)
