"""The lab's configuration: one dataclass of defaults, and presets (YAML, shipped) that list only what changes.

Defaults follow the paper's regime as closely as a laptop CPU allows: single pass over fresh
text, warmup + cosine decay, a model sized for the world. They are not tuned to show any
particular result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources

import yaml

from kentropy.errors import KentropyError

PRESETS = ("smoke", "quick", "paper")
PRESET_VERSION = 1


@dataclass
class LabConfig:
    # the world (the stand-in for Dolma) and its tokenizer
    world_seed: int = 0  # the world's facts; every other seed below is separate
    entities: int = 2000  # entities in the world (Zipf-popular)
    tokenizer_vocab: int = 2048  # byte-level BPE vocabulary
    tokenizer_docs: int = 3000  # documents the tokenizer is trained on (world + new domain)
    # the model: Llama-style SwiGLU
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    ffn: int = 344  # ~8/3 * hidden, as Llama
    # pretraining: single pass over fresh streamed text
    pretrain_seed: int = 0  # init, data order and the text stream
    pretrain_tokens: int = 1_500_000  # tokens seen in pretraining (steps * batch * seq_len)
    repeat: int = 1  # passes over the data: 1 = fresh text only (pretrain_tokens / repeat unique tokens)
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.05
    schedule: str = "cosine"  # after warmup: cosine decay to 0 (the paper's), or constant
    checkpoints: int = 8  # saved evenly over the schedule (plus the initialization, step 0)
    # measurement on held-out world text
    measure_docs: int = 200
    # continual knowledge learning (paper §4) on the new-domain corpus
    continual_domain: str = "new"  # "new" (PubMed stand-in) or "near" (C4 stand-in)
    continual_at: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.75, 1.0])  # fractions of pretraining
    continual_steps: int = 100
    continual_batch: int = 16
    continual_lr: float = 4e-4
    injection_rounds: int = 10  # an injection round every continual_steps / rounds steps
    knowledge_paraphrase: int = 14  # entries injected once per round (original, then paraphrases)
    knowledge_once: int = 12  # entries injected exactly once
    tasks_per_kind: int = 100  # rows of each downstream task (fact recall, relation inference, ...)
    seeds: list[int] = field(default_factory=lambda: [0])  # continual-learning seeds (data order)
    # resuscitation of the final checkpoint, then the same continual learning
    resuscitate_ratio: float = 0.5
    resuscitate_amplify: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0])
    # knowledge circuits (Ou et al. 2025) on the continual-learning checkpoints
    circuits: bool = True
    circuit_top_n: int = 100
    circuit_examples: int = 16
    # the regimes study: where does knowledge entropy decay?
    regimes: bool = False
    regime_tokens: int = 400_000  # pretraining tokens per regime run

    def __post_init__(self) -> None:
        positive = ["entities", "tokenizer_vocab", "tokenizer_docs", "hidden", "layers", "heads", "ffn", "pretrain_tokens",
                    "repeat", "seq_len", "batch_size", "checkpoints", "measure_docs", "continual_steps", "continual_batch",
                    "injection_rounds", "tasks_per_kind", "circuit_top_n", "circuit_examples", "regime_tokens"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise KentropyError(f"lab config: {name} must be positive, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise KentropyError(f"lab config: hidden {self.hidden} must be divisible by heads {self.heads}")
        if self.continual_domain not in ("new", "near"):
            raise KentropyError(f"lab config: continual_domain must be new or near, got {self.continual_domain!r}")
        if not self.continual_at or any(not 0 < f <= 1 for f in self.continual_at):
            raise KentropyError(f"lab config: continual_at must be fractions in (0, 1], got {self.continual_at}")
        if not self.seeds:
            raise KentropyError("lab config: seeds must list at least one seed")
        if self.continual_steps < self.injection_rounds:
            raise KentropyError("lab config: continual_steps must be at least injection_rounds")
        if self.pretrain_steps < self.checkpoints:
            raise KentropyError(f"lab config: {self.pretrain_steps} pretraining steps cannot hold {self.checkpoints} checkpoints")

    @property
    def pretrain_steps(self) -> int:
        return self.pretrain_tokens // (self.batch_size * self.seq_len)


def load_preset(name: str) -> LabConfig:
    """A shipped preset: LabConfig defaults overridden by `presets/lab-NAME.yaml`. Unknown keys are an error."""
    if name not in PRESETS:
        raise KentropyError(f"--preset {name}: choose one of {', '.join(PRESETS)}")
    path = resources.files("kentropy") / "presets" / f"lab-{name}.yaml"
    return config_from_yaml(path.read_text(), f"lab-{name}.yaml")


def config_from_yaml(text: str, source: str) -> LabConfig:
    data = yaml.safe_load(text) or {}
    if data.get("version") != PRESET_VERSION:
        raise KentropyError(f"{source}: version must be {PRESET_VERSION}")
    overrides = data.get("lab", {}) or {}
    known = {f.name for f in dataclasses.fields(LabConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise KentropyError(f"{source}: unknown lab key(s) {', '.join(unknown)}")
    return LabConfig(**overrides)
