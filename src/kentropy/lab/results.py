"""Typed results of the lab's stages, as the recipes hand them to the report.

Stages cache their results as JSON (`lab/cache.py`); these dataclasses are what the core recipe
makes of them, so that the report reads named fields instead of a long list of positional
arguments. An optional study reads the finished core (`Context`) and adds a `Section`: its
markdown and its entry in results.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import LabConfig
from kentropy.lab.labdir import LabDir


@dataclass
class StepCheckpoint:
    """A pretraining checkpoint: an HF model directory after `step` optimizer steps (0: the initialization)."""

    step: int
    path: str


@dataclass
class Pretraining:
    checkpoints: list[StepCheckpoint]  # the initialization first, then every saved step in order
    steps: int
    loss: list[tuple[int, float]]  # (step, training loss)

    @classmethod
    def from_json(cls, d: dict) -> "Pretraining":
        return cls([StepCheckpoint(**c) for c in d["checkpoints"]], d["steps"], [tuple(x) for x in d["loss"]])

    @property
    def final(self) -> StepCheckpoint:
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
class SeedRun:
    """One pretraining seed of the core study (its unit): the run, the entropy of every checkpoint, and the
    continual runs from its starting checkpoints and from its resuscitated final checkpoint."""

    seed: int
    pretraining: Pretraining
    entropy: list[dict]  # `measure` results of every pretraining checkpoint, with "step"
    starts: list[StepCheckpoint]  # the checkpoints continual learning starts from
    continual: dict[tuple[int, int], ContinualRun]  # (start step, continual seed) -> run
    resuscitated: dict[float, Resuscitated]  # amplify -> resuscitation and its runs
    pretrain: Done  # its pretraining stage (a later study's runs from its checkpoints share its cache key)


@dataclass
class LabRun:
    """Everything the report reads, from one lab directory's stages."""

    cfg: LabConfig
    preset: str
    dir: LabDir
    world: dict  # the world stage's result: tasks, knowledge, plan, the world's summary
    seeds: dict[int, SeedRun]  # pretraining seed -> its runs, in the config's order
    continual_config: dict  # the TrainConfig of the continual runs (schedule, warmup, ...), as saved
    regime: dict  # the pretraining beside the paper's: tokens_per_parameter, cumulative_weight_decay (`studies.core.core_regime`)

    # the first pretraining seed's runs: what a study of one model (circuits, interventions) reads
    @property
    def first(self) -> SeedRun:
        return next(iter(self.seeds.values()))

    @property
    def pretraining(self) -> Pretraining:
        return self.first.pretraining

    @property
    def entropy(self) -> list[dict]:
        return self.first.entropy

    @property
    def starts(self) -> list[StepCheckpoint]:
        return self.first.starts

    @property
    def continual(self) -> dict[tuple[int, int], ContinualRun]:
        return self.first.continual

    @property
    def resuscitated(self) -> dict[float, Resuscitated]:
        return self.first.resuscitated


@dataclass
class Context:
    """What an optional study may use: the stage cache, the core's finished stages by name
    (world, tokenizer, corpora, and the first pretraining seed's pretrain and measure), the core's typed
    results, the device."""

    stages: Stages
    done: dict[str, Done]
    run: LabRun
    device: str
