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
from kentropy.lab.judge.plan import AMPLIFY_GRID, AnalysisPlan, Pilot, check_pilot_seeds, contrast_steps, pilot_from_dict, plan_from_dict
from kentropy.training.config import SCHEDULES

PRESETS = ("smoke", "quick", "decay", "paper", "interventions", "ladder")
PRESET_VERSION = 1


class SeedOffset:
    """Offsets added to `world_seed` for the text streams that must stay apart from the pretraining
    stream (seed = world_seed; every pretraining seed reads it, in its own order) and from each other."""

    TOKENIZER = 10_000  # the tokenizer's training text (+ world_seed)
    HELD_OUT = 20_000  # held-out measuring documents (+ world_seed)
    CONTINUAL = 30_000  # the continual-learning corpus (+ world_seed)


# The lab's model families (lab/architectures.py builds them): FFN x norm, and initializations
ARCHS = ("swiglu", "gelu")  # gated SwiGLU (OLMo, Llama) or a plain GELU FFN (GPT-2 / Pythia style)
GATED = ("swiglu",)  # the gated FFNs: c = act(gate(x)) * up(x), which Algorithm 1 scales exactly through up
NORMS = ("layernorm", "rmsnorm")  # LayerNorm (OLMo's non-parametric; Nemotron's LayerNorm1P with gelu) or RMSNorm
INITS = ("hf", "mitchell")
FAMILIES = {("swiglu", "layernorm"): "olmo", ("swiglu", "rmsnorm"): "llama", ("gelu", "rmsnorm"): "arcee",
            ("gelu", "layernorm"): "nemotron"}
# what each family's norm is beyond its (norm, FFN) cell, for the report
FAMILY_NOTES = {
    "olmo": "non-parametric LayerNorm (no gain, no bias), as OLMo-1B",
    "llama": "RMSNorm with a trained gain (d per norm)",
    "arcee": "RMSNorm with a trained gain (d per norm)",
    "nemotron": "LayerNorm1P with a trained gain and bias (2d per norm; the gain starts at 1 as OLMo's)",
}


NORM_PARAMETERS = {"olmo": 0, "llama": 1, "arcee": 1, "nemotron": 2}  # trained parameters per norm, in units of d


def family(arch: str, norm: str) -> str:
    """The HF family of a (FFN, norm) cell: olmo, llama, arcee or nemotron."""
    return FAMILIES[(arch, norm)]


@dataclass
class Arm:
    """One pretraining configuration of the decay study. The reference arm's fields are the defaults
    (OLMo-1B's block: SwiGLU, non-parametric LayerNorm, mitchell init, tied embeddings); arms override some."""

    arch: str = "swiglu"  # FFN: swiglu (gated) or gelu (plain), at the same inner dimension m = ffn
    norm: str = "layernorm"  # layernorm (OLMo's; Nemotron's LayerNorm1P with gelu) or rmsnorm (Llama's, Arcee's)
    init: str = "mitchell"  # mitchell (OLMo's) or hf (normal 0.02)
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    ffn: int = 86  # inner dim m (~8/3 hidden, as Llama)
    tokens_per_parameter: float = 1000.0  # training tokens / non-embedding parameters
    unique_fraction: float = 1.0  # unique text / training tokens: 1 = one pass over fresh text; 1/8 = 8 epochs
    world_fraction: float = 1.0  # entities of the arm's world / the lab's (fewer facts, fresh text: spare capacity)
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
        if self.norm not in NORMS:
            raise KentropyError(f"{where}: norm {self.norm!r}: choose {', '.join(NORMS)}")
        if self.init not in INITS:
            raise KentropyError(f"{where}: init {self.init!r}: choose {', '.join(INITS)}")
        if self.schedule not in SCHEDULES:
            raise KentropyError(f"{where}: schedule {self.schedule!r}: choose {', '.join(SCHEDULES)}")
        if not (self.tokens_per_parameter > 0 and math.isfinite(self.tokens_per_parameter)):
            raise KentropyError(f"{where}: tokens_per_parameter must be positive, got {self.tokens_per_parameter}")
        if not 0 < self.unique_fraction <= 1:
            raise KentropyError(f"{where}: unique_fraction must be in (0, 1], got {self.unique_fraction}")
        if not 0 < self.world_fraction <= 1:
            raise KentropyError(f"{where}: world_fraction must be in (0, 1], got {self.world_fraction}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.weight_decay < 0 or not math.isfinite(self.weight_decay):
            raise KentropyError(f"{where}: lr must be positive and weight_decay non-negative")
        if not 0 <= self.warmup < 1 or not 0 <= self.min_lr_ratio <= 1 or not 0 < self.decay_fraction < 1:
            raise KentropyError(f"{where}: warmup in [0, 1), min_lr_ratio in [0, 1], decay_fraction in (0, 1)")

    @property
    def family(self) -> str:
        return family(self.arch, self.norm)

    @property
    def ffn_dim(self) -> int:
        """m: the same for gated and plain FFNs."""
        return self.ffn

    def non_embedding_parameters(self) -> int:
        """Per layer: attention 4 d^2 (q, k, v, o without biases), FFN 3 d m (gated) or 2 d m (plain), and
        two norms (0, d or 2d each: NORM_PARAMETERS); plus the final norm."""
        norm = NORM_PARAMETERS[self.family] * self.hidden
        per_layer = 4 * self.hidden**2 + (3 if self.arch == "swiglu" else 2) * self.hidden * self.ffn_dim + 2 * norm
        return self.layers * per_layer + norm

    def steps(self) -> int:
        return max(1, math.ceil(self.tokens_per_parameter * self.non_embedding_parameters() / (self.batch_size * self.seq_len)))


def arm_changes(reference: Arm, arm: Arm) -> dict:
    """What an arm changes from the reference, derived from the configs: every field that differs, and what
    follows from them (the HF family and its norm, m, non-embedding parameters, steps)."""
    ref, mine = dataclasses.asdict(reference), dataclasses.asdict(arm)
    out = {"fields": {k: {"reference": ref[k], "arm": v} for k, v in mine.items() if ref[k] != v}, "derived": {}}
    derived = {"family": (reference.family, arm.family), "norm block": (FAMILY_NOTES[reference.family], FAMILY_NOTES[arm.family]),
               "ffn_dim": (reference.ffn_dim, arm.ffn_dim),
               "non_embedding_parameters": (reference.non_embedding_parameters(), arm.non_embedding_parameters()),
               "steps": (reference.steps(), arm.steps())}
    out["derived"] = {k: {"reference": a, "arm": b} for k, (a, b) in derived.items() if a != b}
    return out


def changes_text(changes: dict) -> str:
    """`key: reference -> arm` for every changed field, then the derived differences in brackets."""
    f = ", ".join(f"{k} {v['reference']} -> {v['arm']}" for k, v in changes["fields"].items())
    d = "; ".join(f"{k} {v['reference']} -> {v['arm']}" for k, v in changes["derived"].items())
    return (f or "-") + (f" [{d}]" if d else "")


@dataclass
class DecayConfig:
    """The decay study: a reference arm, the arms that change one factor each, and how to measure."""

    reference: Arm = field(default_factory=Arm)
    arms: dict[str, dict] = field(default_factory=dict)  # name -> overrides of the reference
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # pretraining seeds (init and data order) per arm
    reference_seeds: list[int] | None = None  # the reference arm's seeds (default: seeds)
    plan: dict = field(default_factory=lambda: {  # the preregistered analysis plan (lab/judge/plan.py), fixed before any run
        "contrasts": [{"name": "end vs half", "from": 0.5, "to": 1.0}, {"name": "end vs quarter", "from": 0.25, "to": 1.0}],
        "primary": "end vs half", "sesoi": 0.01, "alpha": 0.05, "correction": "holm", "unit": "seed"})
    # what was changed after a run's results were seen, each in words (when, from which run, what, why): printed with the
    # plan, stored in results.json and listed in the report under the plan. The plan itself is never changed this way.
    deviations: list[str] = field(default_factory=list)
    early_checkpoints: int = 6  # log-spaced from a quarter of the warmup to half the run (the early collapse)
    late_checkpoints: int = 9  # linearly spaced over the second half (plus every contrast's steps, exactly)
    tokens_per_second: float = 120_000.0  # one run's training speed on one thread, for the plan's time estimate
    measure_docs: int = 256  # documents per measuring series
    bootstrap: int = 1000  # bootstrap resamples of the measuring documents
    tokenizer_vocab: int = 512  # the study's own byte-level BPE (small: the LM head would dominate tiny models)
    workers: int = 2  # runs trained side by side, one thread each (tiny models use one core better than two)
    compile: bool = True  # torch.compile the training step
    # closing the loop (lab/studies/loop.py): continual learning from the reference arm's checkpoints of every seed
    # starting points, fractions of pretraining (the study saves a checkpoint exactly at each)
    loop_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    loop_arms: list[str] = field(default_factory=list)  # other arms whose final checkpoints also start (other H at the same step)
    loop_lr: float | None = None  # continual lr; null: the arm's pretraining peak lr (the paper continued OLMo-1B at its own)
    loop_knowledge_facts: int = 7  # facts per injected passage (fewer: shorter passages, to fit the arm's pretraining rows)
    loop_tasks_per_kind: int = 100  # downstream rows per task of the loop's F (more rows: a smaller standard error of F)
    # resuscitation's p (Algorithm 1) on the reference's final checkpoints: the preregistered grid, at least 1, 1.5 and 2
    loop_amplify: list[float] = field(default_factory=lambda: list(AMPLIFY_GRID))
    # the power gate's pilot (`judge.plan.pilot_from_dict`): the between-seed standard deviations a pilot of this design
    # measured per finding (its results.json's `decay_study.pilot_estimates`), fixed before the main runs; null: no pilot,
    # so the power of findings 2 and 3 is unknown and they read `not measurable`
    pilot: dict | None = None
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
        self.check_loop(where)
        if not self.seeds or (self.reference_seeds is not None and not self.reference_seeds):
            raise KentropyError(f"{where}: seeds must list at least one seed")
        check_pilot_seeds(self.pilot_plan(where), set(self.seeds) | set(self.reference_seeds or []), f"{where}: seeds")
        self.analysis_plan(where)
        if not isinstance(self.deviations, list) or any(not isinstance(d, str) or not d.strip() for d in self.deviations):
            raise KentropyError(f"{where}: deviations must list non-empty strings")
        if self.early_checkpoints < 0 or self.late_checkpoints < 2:
            raise KentropyError(f"{where}: early_checkpoints must be >= 0 and late_checkpoints >= 2")
        if not self.tokens_per_second > 0:
            raise KentropyError(f"{where}: tokens_per_second must be positive, got {self.tokens_per_second}")
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
            try:
                contrast_steps(self.analysis_plan(where), arm.steps())
            except KentropyError as e:
                raise KentropyError(f"{where}: arm {name}: {e}") from None

    def analysis_plan(self, where: str = "decay config") -> AnalysisPlan:
        """The preregistered plan, parsed and checked (`plan_from_dict`)."""
        return plan_from_dict(self.plan, f"{where}: plan")

    def pilot_plan(self, where: str = "decay config") -> Pilot | None:
        """The power gate's pilot, parsed and checked (`pilot_from_dict`)."""
        return pilot_from_dict(self.pilot, f"{where}: pilot")

    def check_loop(self, where: str) -> None:
        """The loop's fields: fractions in (0, 1], known arm names, a positive lr, facts and task rows, amplify > 0."""
        if not self.loop_fractions or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1
                                          for f in self.loop_fractions):
            raise KentropyError(f"{where}: loop_fractions must be fractions of training in (0, 1], got {self.loop_fractions}")
        unknown = [a for a in self.loop_arms if a == "reference" or a not in self.arms]
        if unknown:
            raise KentropyError(f"{where}: loop_arms: {unknown[0]!r} is not one of the study's other arms")
        if self.loop_lr is not None and not 0 < self.loop_lr < math.inf:
            raise KentropyError(f"{where}: loop_lr must be a positive number or null, got {self.loop_lr}")
        if self.loop_knowledge_facts < MIN_FACTS or self.loop_tasks_per_kind < 1:
            raise KentropyError(f"{where}: loop_knowledge_facts must be >= {MIN_FACTS} and loop_tasks_per_kind positive")
        if any(not 0 < p < math.inf for p in self.loop_amplify):
            raise KentropyError(f"{where}: loop_amplify must list finite numbers > 0, got {self.loop_amplify}")
        missing = [p for p in AMPLIFY_GRID if p not in self.loop_amplify]
        if missing:
            raise KentropyError(f"{where}: loop_amplify must hold the grid {', '.join(f'{p:g}' for p in AMPLIFY_GRID)} at least "
                                f"(Algorithm 1 over a preregistered grid of p); missing {', '.join(f'{p:g}' for p in missing)}")


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
class InterventionsConfig:
    """The plasticity interventions compared in the lab (a preset's `interventions:` section), each method's
    parameters fixed here, before any run. Algorithm 1's ratio is the lab's `resuscitate_ratio`."""

    amplify: float = 2.0  # Algorithm 1's P (one of the core's resuscitate_amplify: its runs are reused)
    # ReDo (Sokar et al. 2023): τ-dormant when s_i = E|h_i| / mean_k E|h_k| <= τ; they recycle at τ = 0.1 (τ = 0 is
    # plain dead ReLUs, which a SwiGLU's |coefficient| almost never reaches); also continual ReDo's τ
    redo_threshold: float = 0.1
    # shrink and perturb (Ash & Adams 2020, θ <- λθ + σε, ε ~ N(0, initializer_range²)): their warm-start experiments
    # close the generalization gap with λ in 0.3-0.6 and σ in 0.01-0.1; λ = 0.6, the mildest shrink of that range, since
    # here the model continues on a small corpus rather than retraining from scratch, and σ = 0.1 (noise at a tenth of
    # the init's scale)
    shrink: float = 0.6
    perturb: float = 0.1
    replay_fraction: float = 0.25  # rehearsal: share of every continual batch's rows replayed from the world's stream
    recycle_every: int = 10  # continual ReDo (Dohare et al. 2024): every this many continual steps (once per injection round in quick)
    seed: int = 0  # the draws of the edits (ReDo's re-initialisation, shrink-perturb's ε)
    # a finished decay-study lab directory whose `decayed` arms also start every method (`kentropy lab --decay-lab`);
    # null: the decay study of this lab, if it runs one
    decay_lab: str | None = None

    def check(self, where: str, lab: "LabConfig") -> None:
        if self.amplify not in lab.resuscitate_amplify:
            raise KentropyError(f"{where}: amplify {self.amplify} must be one of the lab's resuscitate_amplify {lab.resuscitate_amplify}")
        if not 0 <= self.redo_threshold < 1:  # s_i averages 1 in every layer: τ >= 1 could recycle a whole layer
            raise KentropyError(f"{where}: redo_threshold must be in [0, 1), got {self.redo_threshold}")
        if not 0 < self.shrink <= 1:
            raise KentropyError(f"{where}: shrink must be in (0, 1], got {self.shrink}")
        if not 0 <= self.perturb < float("inf"):
            raise KentropyError(f"{where}: perturb must be a finite number >= 0, got {self.perturb}")
        if not 0 < self.replay_fraction < 1:
            raise KentropyError(f"{where}: replay_fraction must be in (0, 1), got {self.replay_fraction}")
        if round(self.replay_fraction * lab.continual_batch) + lab.injected_rows > lab.continual_batch:
            raise KentropyError(f"{where}: replay_fraction {self.replay_fraction} leaves fewer than the {lab.injected_rows} "
                                f"injected rows of continual_batch {lab.continual_batch}")
        if round(self.replay_fraction * lab.continual_batch) == 0:
            raise KentropyError(f"{where}: replay_fraction {self.replay_fraction} rounds to 0 of continual_batch {lab.continual_batch} rows")
        if not 0 < self.recycle_every < lab.continual_steps:
            raise KentropyError(f"{where}: recycle_every must be in [1, continual_steps {lab.continual_steps}), got {self.recycle_every}")
        if self.seed < 0:
            raise KentropyError(f"{where}: seed must be >= 0, got {self.seed}")


def interventions_config(data: dict | None, lab: "LabConfig", where: str = "interventions") -> InterventionsConfig:
    """An InterventionsConfig from a preset's `interventions:` mapping, checked against the lab it runs in."""
    data = dict(data or {})
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(InterventionsConfig)})
    if unknown:
        raise KentropyError(f"{where}: unknown key(s) {', '.join(unknown)}")
    cfg = InterventionsConfig(**data)
    cfg.check(where, lab)
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
    # torch.compile the pretraining step (the lean loop): for quick's model over a whole 195-step run, 44 s compiled
    # against 50 s eager and 46 s for kentropy train (measured here, compilation included)
    compile: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.1  # on weight matrices only (not embeddings, norms, biases), as OLMo
    warmup: float = 0.05  # fraction of steps of linear warmup from 0.1 x lr
    schedule: str = "cosine"  # after warmup: cosine to min_lr_ratio x lr (OLMo's), constant, or wsd
    min_lr_ratio: float = 0.1  # final lr / lr for cosine and wsd (OLMo's alpha_f)
    checkpoints: int = 8  # saved evenly over the schedule (plus the initialization, step 0, and the decay contrast's steps)
    decay_sesoi: float = 0.005  # finding 1's smallest effect of interest, KL nats per layer (OLMo-1B's fall: <= 0.03)
    # the gates (lab/judge/gates.py), fixed before any run: the head band of the knowledge gate (the most-written
    # fraction of the world's entities, whose rows are scored apart), and the power gate's pilot (`judge.plan.Pilot`:
    # the between-seed standard deviations a pilot of this design measured, its results.json's `pilot_estimates`;
    # null: no pilot, so the power of findings 2 and 3 is unknown and they read `not measurable`)
    head_band: float = 0.1
    pilot: dict | None = None
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
    # plasticity interventions compared from the final checkpoint (lab/studies/interventions.py); a preset's `interventions:` section
    interventions: InterventionsConfig | None = None
    # the scale ladder (lab/studies/ladder.py): OLMo's block at growing widths, one GPU; a preset's `ladder:` section
    ladder: LadderConfig | None = None

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
        if not 0 < self.head_band <= 1:
            raise KentropyError(f"lab config: head_band must be a fraction of the entities in (0, 1], got {self.head_band}")
        check_pilot_seeds(self.pilot_plan(), self.pretrain_seeds, "lab config: pretrain_seeds")
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

    def pilot_plan(self) -> Pilot | None:
        """The power gate's pilot, parsed and checked (`pilot_from_dict`)."""
        return pilot_from_dict(self.pilot, "lab config: pilot")

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
    unknown = sorted(set(data) - {"version", "lab", "decay", "interventions", "ladder"})
    if unknown:
        raise KentropyError(f"{source}: unknown section(s) {', '.join(unknown)} (expected version, lab, decay, interventions, ladder)")
    overrides = data.get("lab", {}) or {}
    known = {f.name for f in dataclasses.fields(LabConfig)} - {"decay", "interventions", "ladder"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise KentropyError(f"{source}: unknown lab key(s) {', '.join(unknown)}")
    decay = decay_config(data["decay"], f"{source}: decay") if "decay" in data else None
    ladder = ladder_config(data["ladder"], f"{source}: ladder") if "ladder" in data else None
    lab = LabConfig(**overrides, decay=decay, ladder=ladder)
    if "interventions" in data:
        lab.interventions = interventions_config(data["interventions"], lab, f"{source}: interventions")
    return lab


# ---- the scale ladder ----------------------------------------------------------------------
@dataclass
class LadderConfig:
    """The scale ladder: OLMo's block (the decay study's reference) at `layers` layers and growing widths,
    each width's seeds stacked into one run, the same tokens per non-embedding parameter and the same
    cumulative weight decay (sum over steps of lr_t x wd) at every width, the decay study's preregistered contrasts."""

    widths: list[int] = field(default_factory=lambda: [64, 128, 256])  # d; m = round(ffn_ratio d), heads = d / head_dim
    seeds: list[int] = field(default_factory=lambda: [3, 2, 1])  # pretraining seeds per width (0 … n − 1), stacked
    layers: int = 4
    head_dim: int = 32
    ffn_ratio: float = 8 / 3
    tokens_per_parameter: float = 150.0  # training tokens / non-embedding parameters, at every width
    cumulative_weight_decay: float = 4.0  # sum lr_t x wd at every width: wd = this / sum lr_t (the schedule's)
    lr: float = 3e-3
    warmup: float = 0.02
    min_lr_ratio: float = 0.1
    batch_size: int = 64
    seq_len: int = 256
    unique_fraction: float = 0.125  # unique text / the widest width's training tokens (text repeats beyond it)
    tokenizer_vocab: int = 1024
    measure_docs: int = 256  # rows of the run's first batches each checkpoint is measured on ('seen', the paper's choice)
    early_checkpoints: int = 4
    late_checkpoints: int = 5
    plan: dict = field(default_factory=lambda: {
        "contrasts": [{"name": "end vs half", "from": 0.5, "to": 1.0}, {"name": "end vs quarter", "from": 0.25, "to": 1.0}],
        "primary": "end vs half", "sesoi": 0.01, "alpha": 0.05, "correction": "holm", "unit": "seed"})

    def arm(self, width: int) -> Arm:
        """The width's run as a decay-study arm (OLMo's block; weight decay set for the common sum lr_t x wd)."""
        arm = Arm(hidden=width, layers=self.layers, heads=width // self.head_dim, ffn=round(self.ffn_ratio * width),
                  tokens_per_parameter=self.tokens_per_parameter, unique_fraction=1.0, batch_size=self.batch_size,
                  seq_len=self.seq_len, lr=self.lr, warmup=self.warmup, min_lr_ratio=self.min_lr_ratio, weight_decay=1.0)
        return dataclasses.replace(arm, weight_decay=self.cumulative_weight_decay / regime.regime(arm)["cumulative_weight_decay"])

    def check(self, where: str = "ladder config") -> None:
        if not self.widths or len(self.seeds) != len(self.widths) or any(n < 1 for n in self.seeds):
            raise KentropyError(f"{where}: widths and seeds must be equally long lists (seeds: a positive count per width)")
        for w in self.widths:
            if w <= 0 or w % self.head_dim:
                raise KentropyError(f"{where}: width {w} must be a positive multiple of head_dim {self.head_dim}")
        if not self.cumulative_weight_decay > 0 or not 0 < self.unique_fraction <= 1 or self.measure_docs < 2:
            raise KentropyError(f"{where}: cumulative_weight_decay > 0, unique_fraction in (0, 1], measure_docs >= 2")
        plan = plan_from_dict(self.plan, f"{where}: plan")
        for w in self.widths:
            arm = self.arm(w)
            arm.check(f"{where}: width {w}")
            try:
                contrast_steps(plan, arm.steps())
            except KentropyError as e:
                raise KentropyError(f"{where}: width {w}: {e}") from None

    def analysis_plan(self) -> AnalysisPlan:
        return plan_from_dict(self.plan, "ladder config: plan")


def ladder_config(data: dict | None, where: str = "ladder") -> LadderConfig:
    """A LadderConfig from a preset's `ladder:` mapping, checked."""
    data = dict(data or {})
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(LadderConfig)})
    if unknown:
        raise KentropyError(f"{where}: unknown key(s) {', '.join(unknown)}")
    cfg = LadderConfig(**data)
    cfg.check(where)
    return cfg
