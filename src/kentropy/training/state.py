"""A run's resumable state: each checkpoint holds the model, and beside it the optimizer, the random
generators' states (`kentropy.runtime.rng`) and the steps done, so that a resumed run continues
exactly as an uninterrupted one.

    RUN/checkpoints/step-NNNNNN/            an HF model directory (what measure, probe, evaluate read)
    RUN/checkpoints/step-NNNNNN/trainer_state.pt   {"steps_done", "optimizer", RNG states}
    (--fsdp: the optimizer and the model's shards in step-NNNNNN/dcp instead, see `dcp.py`)
"""

from __future__ import annotations

from pathlib import Path

import torch

from kentropy.errors import KentropyError
from kentropy.io import write_dir_atomic
from kentropy.runtime import rng
from kentropy.training import dcp
from kentropy.training.rundir import TRAINER_STATE, RunDir


def save_checkpoint(run: RunDir, steps_done: int, model, tok, opt) -> Path:
    """An HF model directory plus trainer_state.pt (optimizer, RNG, steps done), written atomically."""

    def write(d: Path) -> None:
        model.save_pretrained(d)
        tok.save_pretrained(d)
        torch.save({"steps_done": steps_done, "optimizer": opt.state_dict(), **rng.state()}, d / TRAINER_STATE)

    return write_dir_atomic(run.checkpoint(steps_done), write)


def save_sharded_checkpoint(run: RunDir, steps_done: int, model, tok, opt) -> Path:
    """--fsdp: the HF model gathered on rank 0, and model + optimizer as a sharded DCP checkpoint (every rank)."""
    return dcp.save(run.checkpoint(steps_done), model, opt, tok, {"steps_done": steps_done, **rng.state()})


def load_trainer_state(path: Path, model, opt, sharded_checkpoint: bool) -> int:
    """Restore optimizer (and for a sharded checkpoint the model, resharded to this run) and RNG; steps done."""
    if sharded_checkpoint:
        state = dcp.load(path, model, opt)
    else:
        try:
            state = torch.load(path / TRAINER_STATE, weights_only=True)
        except Exception as e:  # a truncated or foreign file: the checkpoint dir is named, not a pickle traceback
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise KentropyError(f"--resume: {path / TRAINER_STATE}: unreadable ({first}); "
                                f"delete {path} to resume from the one before") from None
        opt.load_state_dict(state["optimizer"])
    rng.restore(state)
    return int(state["steps_done"])
