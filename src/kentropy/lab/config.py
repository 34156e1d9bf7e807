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
from kentropy.knowledge.generate import MIN_FACTS

PRESETS = ("smoke", "quick", "decay", "paper")
PRESET_VERSION = 1
SCHEDULES = ("cosine", "constant", "wsd")  # kentropy train's


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
    # pretraining: single pass over fresh streamed text, OLMo's schedule (kentropy train's)
    pretrain_seed: int = 0  # init, data order and the text stream
    pretrain_tokens: int = 1_500_000  # tokens seen in pretraining (steps * batch * seq_len)
    repeat: int = 1  # passes over the data: 1 = fresh text only (pretrain_tokens / repeat unique tokens)
    seq_len: int = 128  # pretraining rows (and measurement documents, truncated)
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.1  # on weight matrices only (not embeddings, norms, biases), as OLMo
    warmup: float = 0.05  # fraction of steps of linear warmup from 0.1 x lr
    schedule: str = "cosine"  # after warmup: cosine to min_lr_ratio x lr (OLMo's), constant, or wsd
    min_lr_ratio: float = 0.1  # final lr / lr for cosine and wsd (OLMo's alpha_f)
    checkpoints: int = 8  # saved evenly over the schedule (plus the initialization, step 0)
    # measurement on held-out world text
    measure_docs: int = 200
    # continual knowledge learning (paper §4) on the new-domain corpus, the official protocol
    continual_domain: str = "new"  # "new" (PubMed stand-in) or "near" (C4 stand-in)
    continual_at: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.75, 1.0])  # fractions of pretraining
    continual_steps: int = 100
    continual_batch: int = 16  # rows per step; a round fills (paraphrase + once / rounds) of them (paper: 76 of 128)
    continual_seq_len: int = 384  # rows long enough for every passage + eos (paper: ~500-token passages, 1024-token rows)
    continual_lr: float = 4e-4
    injection_rounds: int = 10  # round r in step continual_steps / rounds x r - 1
    knowledge_paraphrase: int = 9  # entries injected once per round (original, then paraphrases)
    knowledge_once: int = 10  # entries injected exactly once
    knowledge_facts: int | None = 8  # facts per passage, the probes' among them (~230 tokens, ~60% of a row); null: all (~500)
    tasks_per_kind: int = 100  # rows of each downstream task (fact recall, relation inference, ...)
    seeds: list[int] = field(default_factory=lambda: [0])  # continual-learning seeds (data order)
    # resuscitation of the final checkpoint, then the same continual learning
    resuscitate_ratio: float = 0.5
    resuscitate_amplify: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0])
    # knowledge circuits (Ou et al. 2025) on the continual-learning checkpoints
    circuits: bool = True
    # the decay study (lab/decay.py): tiny models trained into the paper's regime; a preset's `decay:` section
    decay: dict | None = None
    circuit_top_n: int = 100
    circuit_examples: int = 16

    def __post_init__(self) -> None:
        positive = ["entities", "tokenizer_vocab", "tokenizer_docs", "hidden", "layers", "heads", "ffn", "pretrain_tokens",
                    "repeat", "seq_len", "batch_size", "checkpoints", "measure_docs", "continual_steps", "continual_batch",
                    "continual_seq_len", "injection_rounds", "tasks_per_kind", "circuit_top_n", "circuit_examples"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise KentropyError(f"lab config: {name} must be positive, got {getattr(self, name)}")
        for name in ("lr", "continual_lr"):
            if not 0 < getattr(self, name) < float("inf"):
                raise KentropyError(f"lab config: {name} must be a positive number, got {getattr(self, name)}")
        if not 0 <= self.weight_decay < float("inf"):
            raise KentropyError(f"lab config: weight_decay must be non-negative, got {self.weight_decay}")
        if not 0 <= self.warmup < 1:
            raise KentropyError(f"lab config: warmup must be in [0, 1), got {self.warmup}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise KentropyError(f"lab config: min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.schedule not in SCHEDULES:
            raise KentropyError(f"lab config: schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.hidden % self.heads:
            raise KentropyError(f"lab config: hidden {self.hidden} must be divisible by heads {self.heads}")
        if self.continual_domain not in ("new", "near"):
            raise KentropyError(f"lab config: continual_domain must be new or near, got {self.continual_domain!r}")
        if not self.continual_at or any(not 0 < f <= 1 for f in self.continual_at):
            raise KentropyError(f"lab config: continual_at must be fractions in (0, 1], got {self.continual_at}")
        if not self.seeds:
            raise KentropyError("lab config: seeds must list at least one seed")
        if self.continual_steps % self.injection_rounds:
            raise KentropyError(f"lab config: continual_steps {self.continual_steps} must be a multiple of injection_rounds "
                                f"{self.injection_rounds} (round r in step interval x r - 1, the last on the final step)")
        if self.knowledge_paraphrase < 0 or self.knowledge_once < 0 or self.knowledge_paraphrase + self.knowledge_once == 0:
            raise KentropyError("lab config: knowledge_paraphrase and knowledge_once must be non-negative, not both 0")
        if self.knowledge_facts is not None and self.knowledge_facts < MIN_FACTS:
            raise KentropyError(f"lab config: knowledge_facts must be at least {MIN_FACTS}, got {self.knowledge_facts}")
        if self.injected_rows > self.continual_batch:
            raise KentropyError(f"lab config: a round injects {self.injected_rows} passages, more than continual_batch "
                                f"{self.continual_batch} rows")
        if self.pretrain_steps < self.checkpoints:
            raise KentropyError(f"lab config: {self.pretrain_steps} pretraining steps cannot hold {self.checkpoints} checkpoints")

    @property
    def injected_rows(self) -> int:
        """Rows of a continual batch that the largest round fills, one passage each (paper: 70 + 6 = 76 of 128)."""
        return self.knowledge_paraphrase + -(-self.knowledge_once // self.injection_rounds)

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
    unknown = sorted(set(data) - {"version", "lab", "decay"})
    if unknown:
        raise KentropyError(f"{source}: unknown section(s) {', '.join(unknown)} (expected version, lab, decay)")
    overrides = data.get("lab", {}) or {}
    known = {f.name for f in dataclasses.fields(LabConfig)} - {"decay"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise KentropyError(f"{source}: unknown lab key(s) {', '.join(unknown)}")
    decay = None
    if "decay" in data:
        from kentropy.lab.decay import decay_config

        decay_config(data["decay"], f"{source}: decay")  # every key and the regime it promises, checked here
        decay = dict(data["decay"] or {})
    return LabConfig(**overrides, decay=decay)
