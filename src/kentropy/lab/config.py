"""Every lab config, typed: the core study (`LabConfig`), the decay study (`DecayConfig` of `Arm`s), the
named seed offsets, and the shipped presets (YAML) that list only what changes from the defaults.

Defaults follow the paper's regime as closely as a laptop CPU allows: single pass over fresh
text, warmup + cosine decay, a model sized for the world. They are not tuned to show any
particular result.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources

import yaml

from kentropy.errors import KentropyError
from kentropy.knowledge.generate import MIN_FACTS
from kentropy.lab import regime
from kentropy.train import SCHEDULES

PRESETS = ("smoke", "quick", "decay", "paper")
PRESET_VERSION = 1


class SeedOffset:
    """Offsets added to `world_seed` for the text streams that must stay apart from the pretraining
    stream (seed = world_seed; every pretraining seed reads it, in its own order) and from each other."""

    TOKENIZER = 10_000  # the tokenizer's training text (+ world_seed)
    HELD_OUT = 20_000  # held-out measuring documents (+ world_seed)
    CONTINUAL = 30_000  # the continual-learning corpus (+ world_seed)


# FFN layouts of the lab's models (lab/architectures.py builds them) and initializations
ARCHS = ("swiglu", "reglu", "gelu", "relu")
GATED = ("swiglu", "reglu")
INITS = ("hf", "mitchell")


def ffn_dim(arch: str, gated_ffn: int) -> int:
    """The inner dimension m: `gated_ffn` for gated FFNs, 1.5 x for plain ones (equal parameters)."""
    return gated_ffn if arch in GATED else (3 * gated_ffn) // 2


@dataclass
class Arm:
    """One pretraining configuration of the decay study. The reference arm's fields are the defaults; arms override some."""

    arch: str = "swiglu"  # FFN: swiglu, reglu (gated ReLU), gelu or relu (plain FFN, 1.5x inner dim)
    init: str = "hf"  # hf (normal 0.02) or mitchell (OLMo's)
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    ffn: int = 86  # gated inner dim (~8/3 hidden, as Llama)
    tokens_per_parameter: float = 1000.0  # training tokens / non-embedding parameters
    unique_fraction: float = 1.0  # unique text / training tokens: 1 = one pass over fresh text; 1/8 = 8 epochs
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # OLMo's alpha_f
    warmup: float = 0.02
    schedule: str = "cosine"  # cosine (OLMo's), constant or wsd (warmup-stable-decay): kentropy train's
    decay_fraction: float = 0.2  # wsd: the last fraction of steps, linear to min lr
    weight_decay: float = 0.8  # reference: sum lr_t x wd ~16 and 1/(lr wd) = 3.4% of the run, both as OLMo-1B

    def check(self, where: str) -> None:
        for name in ("hidden", "layers", "heads", "ffn", "batch_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise KentropyError(f"{where}: {name} must be positive, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise KentropyError(f"{where}: hidden {self.hidden} must be divisible by heads {self.heads}")
        if self.arch not in ARCHS:
            raise KentropyError(f"{where}: arch {self.arch!r}: choose {', '.join(ARCHS)}")
        if self.init not in INITS:
            raise KentropyError(f"{where}: init {self.init!r}: choose {', '.join(INITS)}")
        if self.schedule not in SCHEDULES:
            raise KentropyError(f"{where}: schedule {self.schedule!r}: choose {', '.join(SCHEDULES)}")
        if not (self.tokens_per_parameter > 0 and math.isfinite(self.tokens_per_parameter)):
            raise KentropyError(f"{where}: tokens_per_parameter must be positive, got {self.tokens_per_parameter}")
        if not 0 < self.unique_fraction <= 1:
            raise KentropyError(f"{where}: unique_fraction must be in (0, 1], got {self.unique_fraction}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.weight_decay < 0 or not math.isfinite(self.weight_decay):
            raise KentropyError(f"{where}: lr must be positive and weight_decay non-negative")
        if not 0 <= self.warmup < 1 or not 0 <= self.min_lr_ratio <= 1 or not 0 < self.decay_fraction < 1:
            raise KentropyError(f"{where}: warmup in [0, 1), min_lr_ratio in [0, 1], decay_fraction in (0, 1)")

    @property
    def ffn_dim(self) -> int:
        return ffn_dim(self.arch, self.ffn)

    def non_embedding_parameters(self) -> int:
        """Per layer: attention 4 d^2 (q, k, v, o without biases), FFN 3 d m (gated) or 2 d m (plain), and
        the norms (RMSNorm d each, LayerNorm1P 2d each); plus the final norm."""
        gated = self.arch in GATED
        norm = self.hidden if gated else 2 * self.hidden
        per_layer = 4 * self.hidden**2 + (3 if gated else 2) * self.hidden * self.ffn_dim + 2 * norm
        return self.layers * per_layer + norm

    def steps(self) -> int:
        return max(1, math.ceil(self.tokens_per_parameter * self.non_embedding_parameters() / (self.batch_size * self.seq_len)))


@dataclass
class DecayConfig:
    """The decay study: a reference arm, the arms that change one factor each, and how to measure."""

    reference: Arm = field(default_factory=Arm)
    arms: dict[str, dict] = field(default_factory=dict)  # name -> overrides of the reference
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # pretraining seeds (init and data order) per arm
    reference_seeds: list[int] | None = None  # the reference arm's seeds (default: seeds)
    checkpoints: int = 14  # log-spaced checkpoints per run (plus the initialization)
    measure_docs: int = 256  # documents per measuring series
    bootstrap: int = 1000  # bootstrap resamples of the measuring documents
    tokenizer_vocab: int = 512  # the study's own byte-level BPE (small: the LM head would dominate tiny models)
    workers: int = 2  # runs trained side by side, one thread each (tiny models use one core better than two)
    compile: bool = True  # torch.compile the training step
    loop_arms: int = 1  # decaying arms to continue training from (the largest falls first)
    loop_checkpoints: int = 4  # starting checkpoints per arm, from the entropy's peak to the end
    min_reference_tokens_per_parameter: float = 1000.0  # the regime the study promises (checked)
    min_tokens_per_parameter: float = 300.0
    min_cumulative_weight_decay: float = 5.0

    def all_arms(self, where: str = "decay config") -> dict[str, Arm]:
        out = {"reference": self.reference}
        for name, over in self.arms.items():
            if name == "reference":
                raise KentropyError(f"{where}: arm name 'reference' is taken by the reference arm")
            known = {f.name for f in dataclasses.fields(Arm)}
            unknown = sorted(set(over) - known)
            if unknown:
                raise KentropyError(f"{where}: arms.{name}: unknown key(s) {', '.join(unknown)}")
            out[name] = dataclasses.replace(self.reference, **over)
        return out

    def seeds_of(self, name: str) -> list[int]:
        return list(self.reference_seeds or self.seeds) if name == "reference" else list(self.seeds)

    def check(self, where: str = "decay config") -> None:
        if not self.seeds or (self.reference_seeds is not None and not self.reference_seeds):
            raise KentropyError(f"{where}: seeds must list at least one seed")
        if self.checkpoints < 12:
            raise KentropyError(f"{where}: checkpoints must be at least 12, got {self.checkpoints}")
        if self.measure_docs < 2 or self.bootstrap < 100:
            raise KentropyError(f"{where}: measure_docs must be >= 2 and bootstrap >= 100")
        for name, arm in self.all_arms(where).items():
            arm.check(f"{where}: arm {name}")
            r = regime.regime(arm)
            need = self.min_reference_tokens_per_parameter if name == "reference" else self.min_tokens_per_parameter
            if r["tokens_per_parameter"] < need:
                raise KentropyError(f"{where}: arm {name}: {r['tokens_per_parameter']:.0f} tokens per parameter, "
                                    f"below the study's {need:.0f}")
            if arm.weight_decay > 0 and r["cumulative_weight_decay"] < self.min_cumulative_weight_decay:
                raise KentropyError(f"{where}: arm {name}: cumulative weight decay {r['cumulative_weight_decay']:.2f} "
                                    f"< {self.min_cumulative_weight_decay} (raise weight_decay, lr or tokens)")
            if arm.steps() < self.checkpoints:
                raise KentropyError(f"{where}: arm {name}: {arm.steps()} steps cannot hold {self.checkpoints} checkpoints")


def decay_config(data: dict | None, where: str = "decay") -> DecayConfig:
    """A DecayConfig from a preset's `decay:` mapping, checked (every key, and the regime it promises)."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(DecayConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise KentropyError(f"{where}: unknown key(s) {', '.join(unknown)}")
    ref = data.pop("reference", {}) or {}
    unknown = sorted(set(ref) - {f.name for f in dataclasses.fields(Arm)})
    if unknown:
        raise KentropyError(f"{where}: reference: unknown key(s) {', '.join(unknown)}")
    cfg = DecayConfig(reference=Arm(**ref), **data)
    cfg.check(where)
    return cfg


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
    pretrain_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # the study's units: one model each (init, data order)
    pretrain_tokens: int = 600_000  # tokens seen in pretraining per seed (steps * batch * seq_len)
    repeat: int = 1  # passes over the data: 1 = fresh text only (pretrain_tokens / repeat unique tokens)
    seq_len: int = 384  # pretraining rows (and measurement documents, truncated): as long as the continual rows
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.1  # on weight matrices only (not embeddings, norms, biases), as OLMo
    warmup: float = 0.05  # fraction of steps of linear warmup from 0.1 x lr
    schedule: str = "cosine"  # after warmup: cosine to min_lr_ratio x lr (OLMo's), constant, or wsd
    min_lr_ratio: float = 0.1  # final lr / lr for cosine and wsd (OLMo's alpha_f)
    checkpoints: int = 8  # saved evenly over the schedule (plus the initialization, step 0, and the decay contrast's steps)
    decay_sesoi: float = 0.005  # finding 1's smallest effect of interest, KL nats per layer (OLMo-1B's fall: <= 0.03)
    # measurement on held-out world text
    measure_docs: int = 128
    # continual knowledge learning (paper §4) on the new-domain corpus, the official protocol
    continual_domain: str = "new"  # "new" (PubMed stand-in) or "near" (C4 stand-in)
    continual_at: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])  # fractions of pretraining (per seed)
    continual_steps: int = 30  # quick: 3 seeds x 4 runs in the budget (paper: 1,600)
    continual_batch: int = 16  # rows per step; a round fills (paraphrase + once / rounds) of them (paper: 76 of 128)
    continual_seq_len: int = 384  # rows long enough for every passage + eos, at most seq_len (paper: ~500-token passages, 1024-token rows)
    continual_lr: float | None = None  # peak lr; null: the pretraining peak lr (the paper continued OLMo-1B at its own peak, 4e-4)
    injection_rounds: int = 5  # round r in step continual_steps / rounds x r - 1
    knowledge_paraphrase: int = 9  # entries injected once per round (original, then paraphrases)
    knowledge_once: int = 10  # entries injected exactly once
    knowledge_facts: int | None = 8  # facts per passage, the probes' among them (~230 tokens, ~60% of a row); null: all (~500)
    tasks_per_kind: int = 100  # rows of each downstream task (fact recall, relation inference, ...)
    seeds: list[int] = field(default_factory=lambda: [0])  # continual-learning seeds (data order), per pretraining seed
    # resuscitation of each seed's final checkpoint, then the same continual learning (judged only where H rose)
    resuscitate_ratio: float = 0.5
    resuscitate_amplify: list[float] = field(default_factory=lambda: [2.0])
    # knowledge circuits (Ou et al. 2025) on the continual-learning checkpoints
    circuits: bool = True
    circuit_top_n: int = 100
    circuit_examples: int = 16
    # the decay study (lab/studies/decay.py): tiny models trained into the paper's regime; a preset's `decay:` section
    decay: DecayConfig | None = None

    def __post_init__(self) -> None:
        if self.continual_lr is None:
            self.continual_lr = self.lr
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
        if not self.pretrain_seeds or len(set(self.pretrain_seeds)) != len(self.pretrain_seeds):
            raise KentropyError(f"lab config: pretrain_seeds must list at least one seed, each once, got {self.pretrain_seeds}")
        if self.continual_seq_len > self.seq_len:
            raise KentropyError(f"lab config: continual_seq_len {self.continual_seq_len} is longer than seq_len {self.seq_len}, "
                                f"the positions the model was pretrained on")
        if not 0 < self.decay_sesoi < float("inf"):
            raise KentropyError(f"lab config: decay_sesoi must be a positive number, got {self.decay_sesoi}")
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


def config_json(cfg: LabConfig) -> dict:
    """The resolved config as JSON-ready data (the decay study's section, if any, nested)."""
    return dataclasses.asdict(cfg)


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
    decay = decay_config(data["decay"], f"{source}: decay") if "decay" in data else None
    return LabConfig(**overrides, decay=decay)
