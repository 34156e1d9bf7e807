"""Typed results of the lab's stages, as the recipe hands them to the report.

Stages cache their results as JSON (`Stages`); these dataclasses are what the recipe makes of
them, so that the report reads named fields instead of a long list of positional arguments.
An optional study (circuits today) adds a `Section`: its markdown and its entry in results.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kentropy.lab.config import LabConfig


@dataclass
class Checkpoint:
    """A pretraining checkpoint: an HF model directory after `step` optimizer steps (0: the initialization)."""

    step: int
    path: str


@dataclass
class Pretraining:
    checkpoints: list[Checkpoint]  # the initialization first, then every saved step in order
    steps: int
    loss: list[tuple[int, float]]  # (step, training loss)

    @classmethod
    def from_json(cls, d: dict) -> "Pretraining":
        return cls([Checkpoint(**c) for c in d["checkpoints"]], d["steps"], [tuple(x) for x in d["loss"]])

    @property
    def final(self) -> Checkpoint:
        return self.checkpoints[-1]


@dataclass
class ContinualRun:
    """One `kentropy train` run with injected knowledge: its summary holds P, D, A and F before and after."""

    label: str
    seed: int
    start: str  # the starting checkpoint's path
    summary: dict
    probe_curve: list  # (step, P overall) while training
    checkpoints: list[str]  # the run's saved checkpoints, in step order

    @property
    def A(self) -> float | None:
        return self.summary["A"]

    @property
    def F(self) -> float | None:
        return self.summary["F"]


@dataclass
class Resuscitated:
    """The final checkpoint after Algorithm 1 with amplification `amplify`, and its continual runs per seed."""

    amplify: float
    path: str
    report: dict  # what `resuscitate` did (entropy before and after, neurons scaled per layer)
    runs: dict[int, ContinualRun] = field(default_factory=dict)


@dataclass
class Section:
    """An optional study's part of the report: markdown (before the timings) and `results.json[key]`."""

    key: str
    markdown: str
    results: Any


@dataclass
class LabRun:
    """Everything the report reads, from one lab directory's stages."""

    cfg: LabConfig
    preset: str
    root: Path
    world: dict  # the world stage's result: tasks, knowledge, plan, the world's summary
    pretraining: Pretraining
    entropy: list[dict]  # `measure` results of every pretraining checkpoint, with "step"
    starts: list[Checkpoint]  # the checkpoints continual learning starts from
    continual: dict[tuple[int, int], ContinualRun]  # (start step, seed) -> run
    resuscitated: dict[float, Resuscitated]  # amplify -> resuscitation and its runs
    continual_config: dict  # the TrainConfig of the continual runs (schedule, warmup, ...), as saved
    timings: dict = field(default_factory=dict)

    @property
    def figures(self) -> Path:
        return self.root / "figures"
