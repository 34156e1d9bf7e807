"""Training curves where researchers look for them: TensorBoard or Weights & Biases (`train --report-to`).

    tracker = open_tracker("tensorboard", run_dir, config, first_step=0)   # RUN/tensorboard/
    tracker.log(record)          # a metrics.jsonl record -> train/loss, train/lr, probe/P, ...
    tracker.close()

What is logged, per optimizer step: train/loss, train/lr, train/grad_norm, train/tokens_per_s; at each
probe (every --eval-every steps, i.e. each injection round by default): probe/P and probe/P_<kind|group>;
with an EntropyMonitor attached: entropy/knowledge. The starting checkpoint's P and D are step 0.
Neither tracker is a dependency: `pip install 'kentropy[tensorboard]'` or `'kentropy[wandb]'`.
W&B runs offline (files in RUN/wandb) unless WANDB_MODE says otherwise.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kentropy.errors import KentropyError

TRACKERS = ("none", "tensorboard", "wandb")


def check_tracker(kind: str) -> None:
    """A known tracker whose package is installed; else one line naming the extra to install."""
    if kind not in TRACKERS:
        raise KentropyError(f"--report-to {kind}: choose {', '.join(TRACKERS)}")
    module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(kind)
    if module is None:
        return
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise KentropyError(f"--report-to {kind}: the {module} package is not installed (pip install 'kentropy[{kind}]')")


def scalars(record: dict) -> dict[str, float]:
    """The numbers of one metrics.jsonl record, named as the trackers show them."""
    out = {}
    for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
        if record.get(key) is not None:
            out[f"train/{key}"] = float(record[key])
    probes = record.get("probes") or {}
    if probes.get("overall") is not None:
        out["probe/P"] = float(probes["overall"])
    for kind in ("mem", "gen", "hard_gen"):
        if probes.get(kind) is not None:
            out[f"probe/P_{kind}"] = float(probes[kind])
    for group, g in (probes.get("groups") or {}).items():
        if isinstance(g, dict) and g.get("overall") is not None:
            out[f"probe/P_{group}"] = float(g["overall"])
    down = record.get("downstream") or {}
    if down.get("D") is not None:
        out["downstream/D"] = float(down["D"])
    if record.get("knowledge_entropy") is not None:
        out["entropy/knowledge"] = float(record["knowledge_entropy"])
    return out


def step_of(record: dict) -> int:
    """The tracker step of a record: optimizer steps done (the starting checkpoint's record is step 0)."""
    return 0 if record.get("event") == "before" else int(record["step"]) + 1


class TensorBoard:
    def __init__(self, run_dir: Path, first_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run's events from the redone steps on are dropped, so each step shows once
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=first_step or None)

    def log(self, record: dict) -> None:
        step = step_of(record)
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, run_dir: Path, config: dict):
        import wandb

        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]  # one W&B run per run directory
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "kentropy"), name=run_dir.name, id=run_id,
                              resume="allow", dir=str(run_dir), config=config,
                              mode=os.environ.get("WANDB_MODE", "offline"))

    def log(self, record: dict) -> None:
        self.run.log(scalars(record), step=step_of(record))

    def close(self) -> None:
        self.run.finish()


def open_tracker(kind: str, run_dir: str | Path, config: dict, first_step: int = 0):
    """The tracker `kind` writing beside the run (None for "none")."""
    check_tracker(kind)
    if kind == "tensorboard":
        return TensorBoard(Path(run_dir), first_step)
    if kind == "wandb":
        return WandB(Path(run_dir), config)
    return None
