"""The layout of a training run directory: one place for every path in it.

    RUN/config.json       the resolved TrainConfig
    RUN/plan.json         the injection plan used (exactly; a resume reads it back)
    RUN/inputs.json       each path flag typed and resolved, and sha256 of the input files (--data, --knowledge,
                          --plan, --replay): a resume checks them
    RUN/metrics.jsonl     one line per optimizer step (step -1: the starting checkpoint)
    RUN/before.json       P and D of the starting checkpoint
    RUN/summary.json      P, D, A, F before and after
    RUN/checkpoints/step-NNNNNN   an HF model directory after N optimizer steps (+ trainer_state.pt)
"""

from __future__ import annotations

import re
from pathlib import Path

_STEP = re.compile(r"^step-(\d{6,})$")
TRAINER_STATE = "trainer_state.pt"  # in a checkpoint: what the loop needs to go on (steps done, optimizer, RNG)


class RunDir:
    """Paths of one run directory (nothing is created here)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.plan = self.root / "plan.json"
        self.inputs = self.root / "inputs.json"
        self.metrics = self.root / "metrics.jsonl"
        self.before = self.root / "before.json"
        self.summary = self.root / "summary.json"
        self.checkpoints = self.root / "checkpoints"

    def checkpoint(self, steps_done: int) -> Path:
        """The checkpoint after `steps_done` optimizer steps."""
        return self.checkpoints / f"step-{steps_done:06d}"

    def saved_checkpoints(self) -> list[tuple[int, Path]]:
        """(steps done, path) of every complete HF checkpoint, in step order."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir()
                 if (m := _STEP.match(p.name)) and (p / "config.json").is_file()]
        return sorted(found)

    def last_checkpoint(self) -> Path | None:
        """The latest checkpoint a run can resume from (it has its trainer state)."""
        done = [p for _, p in self.saved_checkpoints() if (p / TRAINER_STATE).is_file()]
        return done[-1] if done else None
