"""The decay study: does knowledge entropy decay once tiny models are trained into the paper's regime?

    kentropy lab --preset decay --out lab-decay/      # prints its plan, then runs (34 min measured on an idle 2-core CPU)

OLMo-1B saw ~2,600 tokens per parameter and a cumulative weight decay (sum over steps of
lr_t x wd) of ~16. This study pretrains tiny models into that regime (the reference arm
reaches >= 1,000 tokens per non-embedding parameter, every arm >= 300, every arm with weight
decay a cumulative decay >= 5) and changes one factor at a time from the reference: the FFN
activation, the initialization, the weight decay, the schedule, the width, the data
repetition. Every arm saves log-spaced checkpoints and measures knowledge, attention and
next-token entropy at each on two series: the rows of the first pretraining batches (which
every trained checkpoint has seen; the paper's measuring data) and held-out world text.

Verdicts are judged on trained checkpoints after warmup: the entropy's peak, and the change
from the peak to the end with a 95% paired bootstrap interval over measurement documents
(`kentropy.bootstrap`); with several seeds, also the interval over seeds.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kentropy.errors import KentropyError
from kentropy.lab.architectures import ARCHS, INITS, ffn_dim

SCHEDULES = ("cosine", "wsd")
# OLMo-1B's pretraining, for the regime table (allenai/OLMo-1B config: 739,328 steps of 4M tokens,
# lr 4e-4 cosine to 4e-5 after 2,000 warmup steps, wd 0.1; ~3.0T tokens over ~1.18B parameters)
OLMO_1B = {"tokens_per_parameter": 3.0e12 / 1.18e9, "steps": 739_328, "lr": 4e-4, "weight_decay": 0.1, "warmup_steps": 2000,
           "min_lr_ratio": 0.1}


@dataclass
class Arm:
    """One pretraining configuration. The reference arm's fields are the defaults; arms override some."""

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
    schedule: str = "cosine"  # cosine (OLMo's) or wsd (warmup-stable-decay)
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

    def non_embedding_parameters(self) -> int:
        """Per layer: attention 4 d^2 (q, k, v, o without biases), FFN 3 d m (gated) or 2 d m (plain), and
        the norms (RMSNorm d each, LayerNorm1P 2d each); plus the final norm."""
        m = ffn_dim(self.arch, self.ffn)
        gated = self.arch in ("swiglu", "reglu")
        norm = self.hidden if gated else 2 * self.hidden
        per_layer = 4 * self.hidden**2 + (3 if gated else 2) * self.hidden * m + 2 * norm
        return self.layers * per_layer + norm

    def steps(self) -> int:
        return max(1, math.ceil(self.tokens_per_parameter * self.non_embedding_parameters() / (self.batch_size * self.seq_len)))


@dataclass
class DecayConfig:
    """The study: a reference arm, the arms that change one factor each, and how to measure."""

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
            r = regime(arm)
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
    """A DecayConfig from a preset's `decay:` mapping; unknown keys are an error."""
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


# ---- the regime ----------------------------------------------------------------------------
def train_config(arm: Arm, **kw):
    from kentropy.train import TrainConfig

    return TrainConfig(model=kw.pop("model", "-"), data=kw.pop("data", "-"), out=kw.pop("out", "-"), steps=arm.steps(),
                       batch_size=arm.batch_size, micro_batch=arm.batch_size, seq_len=arm.seq_len, lr=arm.lr,
                       min_lr_ratio=arm.min_lr_ratio, warmup=arm.warmup, schedule=arm.schedule, decay_fraction=arm.decay_fraction,
                       weight_decay=arm.weight_decay, **kw)


def cumulative_weight_decay(lrs, weight_decay: float) -> float:
    """sum over optimizer steps of lr_t x wd: the total shrink AdamW's decoupled decay applies (log scale)."""
    return float(sum(lrs)) * weight_decay


def regime(arm: Arm) -> dict:
    """Where an arm sits next to OLMo-1B: tokens per non-embedding parameter, cumulative weight decay,
    AdamW's equilibrium time 1 / (lr x wd) in steps and as a share of the run, passes over the data."""
    from kentropy.train import lr_at

    cfg = train_config(arm)
    steps = arm.steps()
    tokens = steps * arm.batch_size * arm.seq_len
    n = arm.non_embedding_parameters()
    lrs = [lr_at(s, cfg) for s in range(steps)]
    eq = 1 / (arm.lr * arm.weight_decay) if arm.weight_decay > 0 else None
    return {"non_embedding_parameters": n, "steps": steps, "tokens": tokens, "tokens_per_parameter": tokens / n,
            "cumulative_weight_decay": cumulative_weight_decay(lrs, arm.weight_decay), "equilibrium_steps": eq,
            "equilibrium_share": eq / steps if eq else None, "epochs": 1 / arm.unique_fraction,
            "warmup_steps": round(arm.warmup * steps)}


def olmo_1b_regime() -> dict:
    """The same numbers for OLMo-1B's pretraining (OLMO_1B), from its schedule (`lr_at`, as for the arms)."""
    from kentropy.train import TrainConfig, lr_at

    o = OLMO_1B
    cfg = TrainConfig(model="-", data="-", out="-", steps=o["steps"], lr=o["lr"], warmup=o["warmup_steps"] / o["steps"],
                      min_lr_ratio=o["min_lr_ratio"], weight_decay=o["weight_decay"])
    eq = 1 / (o["lr"] * o["weight_decay"])
    return {"tokens_per_parameter": o["tokens_per_parameter"], "steps": o["steps"],
            "cumulative_weight_decay": cumulative_weight_decay((lr_at(s, cfg) for s in range(o["steps"])), o["weight_decay"]),
            "equilibrium_steps": eq, "equilibrium_share": eq / o["steps"], "epochs": 1.0}


def log_spaced_steps(steps: int, warmup_steps: int, n: int) -> list[int]:
    """n checkpoint step counts, log-spaced from a quarter of the warmup (or step 1) to the last step."""
    import numpy as np

    lo = max(1, warmup_steps // 4)
    out = sorted({int(round(x)) for x in np.geomspace(lo, steps, n)} | {steps})
    k = 2
    while len(out) < n and k < 100:  # rounding merged some: spread more points
        out = sorted({int(round(x)) for x in np.geomspace(lo, steps, n + k)} | {steps})
        k += 1
    return out


def plan_text(cfg: DecayConfig) -> str:
    """The study's plan, printed before it starts: every arm's regime and work."""
    o = olmo_1b_regime()
    lines = ["[lab] decay study plan (tokens per non-embedding parameter; cumulative weight decay = sum lr_t x wd):",
             f"[lab]   {'arm':<22} {'seeds':>5} {'params':>8} {'steps':>7} {'tokens':>11} {'tok/param':>9} {'sum lr*wd':>9} {'epochs':>6}",
             f"[lab]   {'OLMo-1B (paper)':<22} {'':>5} {'1.18e9':>8} {o['steps']:>7} {'3.0e12':>11} "
             f"{o['tokens_per_parameter']:>9.0f} {o['cumulative_weight_decay']:>9.2f} {1:>6.1f}"]
    total = 0
    for name, arm in cfg.all_arms().items():
        r = regime(arm)
        seeds = cfg.seeds_of(name)
        total += r["tokens"] * len(seeds)
        lines.append(f"[lab]   {name:<22} {len(seeds):>5} {r['non_embedding_parameters']:>8} {r['steps']:>7} {r['tokens']:>11,} "
                     f"{r['tokens_per_parameter']:>9.0f} {r['cumulative_weight_decay']:>9.2f} {r['epochs']:>6.1f}")
    lines.append(f"[lab]   total: {total:,} training tokens; {cfg.checkpoints} log-spaced checkpoints + init per run, "
                 f"{cfg.measure_docs} documents per series, {cfg.bootstrap} bootstrap resamples")
    return "\n".join(lines)


def print_plan(cfg: DecayConfig) -> None:
    print(plan_text(cfg), file=sys.stderr)


# ---- verdicts --------------------------------------------------------------------------------
def summarize_run(steps: list[int], draws: torch.Tensor, h: list[float], warmup_steps: int) -> dict:
    """One run's trajectory on one series: H per checkpoint with its 95% bootstrap interval, where it
    collapses and where it peaks, and the change from the peak to the end with its paired interval.

    Trained checkpoints only: after warmup. Early in training H first collapses (a fast dip while
    the lr warms up, in every run here and in the issue's probes) and then recovers; a decay is a
    fall from the peak that comes *after* that collapse, so where H recovers from its lowest
    post-warmup checkpoint in the first half of the run, the peak is taken from there onwards
    (a run that only falls after warmup has no collapse: its peak is taken over all of it).
    draws: [checkpoints, n_boot], resampled with the same documents at every checkpoint (paired)."""
    from kentropy.bootstrap import percentile_interval

    ci = [percentile_interval(draws[i]) for i in range(len(steps))]
    after = [i for i, s in enumerate(steps) if s >= max(warmup_steps, 1)]
    early = [i for i in after if steps[i] <= steps[-1] / 2] or after[:1]
    low = min(early, key=lambda i: h[i])
    collapse = low if any(h[i] > h[low] for i in after if i > low) else after[0]
    peak = max((i for i in after if i >= collapse), key=lambda i: h[i])
    end = len(steps) - 1
    change = h[end] - h[peak]
    change_ci = percentile_interval(draws[end] - draws[peak]) if peak != end else (0.0, 0.0)
    rise = h[peak] - h[collapse]  # the recovery from the collapse (0 where the run only falls after warmup)
    share = -change / rise if rise > 0 else (math.inf if change < 0 else 0.0)
    return {"steps": steps, "knowledge_entropy": h, "knowledge_entropy_ci": [list(c) for c in ci],
            "collapse_step": steps[collapse], "peak_step": steps[peak], "peak": h[peak], "end": h[end], "change": change,
            "change_ci": list(change_ci), "share_lost": share}


MIN_SHARE_LOST = 0.1  # a decay must undo at least this share of the recovery from the collapse: a trend, not a wiggle


def verdict(runs: list[dict]) -> str:
    """`held`: in every seed the entropy falls from its post-collapse peak to the end, with a 95% interval below 0,
    undoing at least MIN_SHARE_LOST of its climb from the collapse to the peak; `direction only`: it falls that
    much in every seed, but some interval reaches 0; `did not hold`: in some seed it ends at its peak, or falls
    by less than that share (a plateau with a wiggle at the end, however significant)."""
    if any(r["change"] >= 0 or r["share_lost"] < MIN_SHARE_LOST for r in runs):
        return "did not hold"
    if all(r["change_ci"][1] < 0 for r in runs):
        return "held"
    return "direction only"


def combine_seeds(runs: list[dict], draws: list[torch.Tensor]) -> dict:
    """The arm's trajectory: mean over seeds per checkpoint, its bootstrap interval (each seed's documents
    resampled independently, the draws averaged), and the t-interval over seeds when there are >= 2."""
    from kentropy.bootstrap import percentile_interval
    from kentropy.lab.analysis import mean_ci

    k = len(runs[0]["steps"])
    mean = [sum(r["knowledge_entropy"][i] for r in runs) / len(runs) for i in range(k)]
    avg = torch.stack(draws).mean(0)  # [checkpoints, n_boot]
    over_seeds = [mean_ci([r["knowledge_entropy"][i] for r in runs]) for i in range(k)]
    return {"knowledge_entropy": mean, "knowledge_entropy_ci": [list(percentile_interval(avg[i])) for i in range(k)],
            "knowledge_entropy_seed_ci": [[c["lo"], c["hi"]] for c in over_seeds]}


# ---- stages ----------------------------------------------------------------------------------
def tokenizer_stage(stages, lab, dcfg: DecayConfig):
    """The study's byte-level BPE, trained on world articles and new-domain text (as the lab's)."""
    from itertools import islice

    from kentropy.lab.corpora import new_domain_documents, stream_documents
    from kentropy.lab.world import build_world
    from kentropy.tokenizer import train_bpe

    conf = {"world_seed": lab.world_seed, "entities": lab.entities, "vocab": dcfg.tokenizer_vocab, "docs": lab.tokenizer_docs}

    def fn(d: Path) -> dict:
        from kentropy.io import write_dir_atomic

        world = build_world(lab.entities, lab.world_seed)
        docs = list(islice(stream_documents(world, seed=10_000 + lab.world_seed), lab.tokenizer_docs))
        docs += new_domain_documents(seed=10_000 + lab.world_seed, n_docs=max(1, lab.tokenizer_docs // 4))
        tok = train_bpe(docs, vocab_size=dcfg.tokenizer_vocab)
        write_dir_atomic(d / "tokenizer", tok.save_pretrained)
        return {"path": str(d / "tokenizer"), "vocab": len(tok)}

    return stages.run("decay-tokenizer", conf, fn)


def corpus_stage(stages, lab, dcfg: DecayConfig, tok_done, name: str = "decay-corpora"):
    """Pretraining text for every arm and held-out measuring documents. One fresh stream is written
    once; an arm reads a prefix of it holding f x its training tokens (f = unique_fraction: 1 is a
    single pass over fresh text, 1/16 is 16 passes over a small slice of the world's text)."""
    from itertools import islice

    from transformers import AutoTokenizer

    from kentropy.io import write_atomic, write_json
    from kentropy.lab.corpora import stream_documents
    from kentropy.lab.world import build_world

    need = {a: math.ceil(regime(arm)["tokens"] * arm.unique_fraction) + 2 * arm.seq_len for a, arm in dcfg.all_arms().items()}
    sizes = sorted(set(need.values()))
    conf = {"tokenizer": tok_done.hash, "world_seed": lab.world_seed, "entities": lab.entities, "pretrain_seed": lab.pretrain_seed,
            "sizes": sizes, "measure_docs": dcfg.measure_docs}

    def fn(d: Path) -> dict:
        tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
        world = build_world(lab.entities, lab.world_seed)
        lines: list[str] = []
        cum: list[int] = []  # tokens (+ eos) up to and including each document
        total = 0
        for doc in stream_documents(world, seed=lab.pretrain_seed):
            lines.append(doc)
            total += len(tok(doc, add_special_tokens=False)["input_ids"]) + 1
            cum.append(total)
            if total >= sizes[-1]:
                break
        files = {}
        for size in sizes:  # prefixes of the one stream
            n = next(i for i, c in enumerate(cum) if c >= size) + 1
            path = d / f"pretrain-{size}.txt"
            write_atomic(path, lambda tmp, n=n: tmp.write_text("".join(x + "\n" for x in lines[:n]), encoding="utf-8"))
            files[str(size)] = {"path": str(path), "docs": n, "tokens": cum[n - 1]}
        held = list(islice(stream_documents(world, seed=20_000 + lab.pretrain_seed), dcfg.measure_docs))
        write_json(d / "measure.json", held)
        return {"files": files, "arm_files": {a: files[str(s)]["path"] for a, s in need.items()}, "measure": str(d / "measure.json")}

    return stages.run(name, conf, fn)


def pretrain_arm_stage(stages, name: str, arm: Arm, seed: int, dcfg: DecayConfig, tok_done, corpora, device: str):
    """Pretrain one arm from its init with `kentropy train`, saving log-spaced checkpoints; keeps the
    rows of its first batches (the 'seen' measuring series)."""
    from transformers import AutoTokenizer

    from kentropy.io import write_dir_atomic
    from kentropy.lab.architectures import build_model
    from kentropy.rundir import RunDir
    from kentropy.train import fit, finish, setup

    r = regime(arm)
    saves = log_spaced_steps(r["steps"], r["warmup_steps"], dcfg.checkpoints)
    conf = {"arm": dataclasses.asdict(arm), "seed": seed, "tokenizer": tok_done.hash, "corpora": corpora.hash, "saves": saves,
            "measure_docs": dcfg.measure_docs}

    def fn(d: Path) -> dict:
        import json
        import time

        tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
        init = d / "init"
        if not (init / "config.json").is_file():
            model = build_model(arm.arch, arm.init, seed, vocab=len(tok), hidden=arm.hidden, layers=arm.layers, heads=arm.heads,
                                gated_ffn=arm.ffn, seq_len=arm.seq_len, tok=tok)
            write_dir_atomic(init, lambda tmp: (model.save_pretrained(tmp), tok.save_pretrained(tmp)))
        run = RunDir(d / "run")
        cfg = train_config(arm, model=str(init), data=corpora.result["arm_files"][name], out=str(run.root), eval_every=0,
                           save_every=0, save_at=saves, epochs=math.ceil(1 / arm.unique_fraction), seed=seed,
                           compile=dcfg.compile, device=device, resume=run.config.is_file())
        t0 = time.perf_counter()
        state = setup(cfg)
        first = d / "first_rows.safetensors"
        if not first.is_file():  # the rows of the first batches, in training order
            ids = state.rows[state.order[: dcfg.measure_docs]].contiguous()
            write_atomic_tensor(first, ids)
        fit(state, cfg)
        finish(state, cfg)
        seconds = time.perf_counter() - t0
        log = [json.loads(x) for x in run.metrics.read_text().splitlines() if x.strip()]
        log = [x for x in log if x.get("step", -1) >= 0]
        speeds = sorted(x["tokens_per_s"] for x in log[len(log) // 10:])  # past compilation
        ckpts = [{"step": 0, "path": str(init)}] + [{"step": s, "path": str(p)} for s, p in run.saved_checkpoints()]
        stride = max(1, len(log) // 400)
        return {"checkpoints": ckpts, "steps": r["steps"], "seconds": seconds, "tokens_per_s": speeds[len(speeds) // 2],
                "final_loss": log[-1]["loss"], "loss": [(x["step"], x["loss"]) for x in log[::stride]],
                "first_rows": str(first), "regime": r}

    return stages.run(f"decay-{slug(name)}-seed{seed}-pretrain", conf, fn)


def write_atomic_tensor(path: Path, ids) -> None:
    from safetensors.torch import save_file

    from kentropy.io import write_atomic

    write_atomic(path, lambda tmp: save_file({"ids": ids}, str(tmp)))


def measure_arm_stage(stages, name: str, arm: Arm, seed: int, dcfg: DecayConfig, pre, corpora, device: str):
    """Knowledge (with bootstrap intervals), attention and next-token entropy of every checkpoint of a run,
    on its first-batch rows ('seen') and on held-out world text ('held_out')."""
    import json

    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from kentropy.bootstrap import bootstrap_entropy, instance_coefficients, percentile_interval
    from kentropy.io import write_atomic
    from kentropy.measure import measure_ids, tokenize
    from kentropy.models import Checkpoint, load_model, pick_device

    conf = {"pretrain": pre.hash, "corpora": corpora.hash, "bootstrap": dcfg.bootstrap, "measure_docs": dcfg.measure_docs}

    def fn(d: Path) -> dict:
        ckpts = pre.result["checkpoints"]
        tok = AutoTokenizer.from_pretrained(ckpts[0]["path"])
        series = {"seen": load_file(pre.result["first_rows"])["ids"].tolist(),
                  "held_out": tokenize(tok, json.loads(Path(corpora.result["measure"]).read_text()), arm.seq_len)}
        out = {k: {"attention_entropy": [], "next_token_entropy": [], "knowledge_entropy_per_layer": [], "instances": []}
               for k in series}
        for c in ckpts:
            model = load_model(Checkpoint(c["path"]), device=pick_device(device), eager_attention=True)
            for k, ids in series.items():
                m = measure_ids(model, ids, tok.pad_token_id, metrics=("knowledge", "attention", "next-token"),
                                batch_size=64, name=c["path"], progress=False)
                out[k]["attention_entropy"].append(m.attention_entropy)
                out[k]["next_token_entropy"].append(m.next_token_entropy)
                out[k]["knowledge_entropy_per_layer"].append(m.knowledge_entropy_per_layer)
                out[k]["instances"].append(instance_coefficients(model, ids, tok.pad_token_id, batch_size=64))
            del model
        steps = [c["step"] for c in ckpts]
        result = {"steps": steps, "ffn_dim": ffn_dim(arm.arch, arm.ffn), "layers": arm.layers}
        for k in series:
            inst = out[k].pop("instances")
            h = [float(sum(x)) for x in out[k]["knowledge_entropy_per_layer"]]
            draws = bootstrap_entropy(inst, n_boot=dcfg.bootstrap, seed=seed)  # [checkpoints, n_boot], paired
            path = d / f"draws-{k}.safetensors"
            write_atomic(path, lambda tmp, draws=draws: save_file({"draws": draws.contiguous()}, str(tmp)))
            ci = [list(percentile_interval(draws[i])) for i in range(len(steps))]
            result[k] = {**out[k], "knowledge_entropy": h, "knowledge_entropy_ci": ci, "draws": str(path)}
        return result

    return stages.run(f"decay-{slug(name)}-seed{seed}-measure", conf, fn)


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").lower()


def _run_one(root: str, name: str, arm: Arm, seed: int, dcfg: DecayConfig, tok_done, corpora, device: str):
    """One run (pretrain, then measure) in a worker process with one thread: (pretrain, measure) Done."""
    from kentropy.lab.stages import Stages

    torch.set_num_threads(1)
    stages = Stages(Path(root))
    pre = pretrain_arm_stage(stages, name, arm, seed, dcfg, tok_done, corpora, device)
    return pre, measure_arm_stage(stages, name, arm, seed, dcfg, pre, corpora, device)


def run_decay_study(stages, lab, dcfg: DecayConfig, device: str) -> tuple[dict, dict]:
    """Every arm x seed: pretrain, measure (`workers` runs side by side); then each arm's trajectory and
    verdict (`decay_study` of results.json), and the pretraining stages by (arm, seed)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from safetensors.torch import load_file

    print_plan(dcfg)
    tok = tokenizer_stage(stages, lab, dcfg)
    corpora = corpus_stage(stages, lab, dcfg, tok)
    jobs = [(name, arm, seed) for name, arm in dcfg.all_arms().items() for seed in dcfg.seeds_of(name)]
    # the longest runs first, so that the last worker does not finish alone
    jobs.sort(key=lambda j: -regime(j[1])["tokens"] * regime(j[1])["non_embedding_parameters"])
    done = {}
    t0 = time.perf_counter()
    if dcfg.workers > 1 and device in ("cpu", "auto") and not torch.cuda.is_available():
        with cf.ProcessPoolExecutor(dcfg.workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_one, str(stages.root), n, a, s, dcfg, tok, corpora, device): (n, s) for n, a, s in jobs}
            for f in cf.as_completed(futures):
                done[futures[f]] = f.result()
                n, s = futures[f]
                print(f"[lab] decay {n} seed {s}: done ({done[(n, s)][0].result['seconds']:.0f} s of training)", file=sys.stderr)
    else:
        for n, a, s in jobs:
            done[(n, s)] = _run_one(str(stages.root), n, a, s, dcfg, tok, corpora, device)
    wall = time.perf_counter() - t0
    # the runs overlap, so their stage times do not add up: the timings get the wall time of all of them
    # (each run's own time is in the study's table); a rerun that found every run cached keeps the old entry
    stages.timings = {k: v for k, v in stages.timings.items() if not re.fullmatch(r"decay-.+-seed\d+-(pretrain|measure)", k)}
    if wall > 30 or "decay-runs" not in stages.timings:
        stages.timings["decay-runs"] = {"seconds": round(wall, 2), "stage": f"{len(jobs)} runs, {dcfg.workers} side by side"}
    from kentropy.io import write_json

    write_json(stages.timings_path, stages.timings)
    arms = []
    for name, arm in dcfg.all_arms().items():
        seeds = dcfg.seeds_of(name)
        pres = [done[(name, s)][0].result for s in seeds]
        meas = [done[(name, s)][1].result for s in seeds]
        draws = {k: [load_file(m[k]["draws"])["draws"] for m in meas] for k in ("seen", "held_out")}
        arms.append(arm_result(name, arm, dcfg, pres, meas, draws))
    result = {"olmo_1b": olmo_1b_regime(), "arms": arms, "workers": dcfg.workers, "measuring_data": {
        "seen": "rows of the run's first pretraining batches (seen by every trained checkpoint; the paper's choice)",
        "held_out": "world documents outside the pretraining text"}}
    return result, {key: pre for key, (pre, _) in done.items()}


def arm_result(name: str, arm: Arm, dcfg: DecayConfig, pres: list[dict], meas: list[dict], draws: dict) -> dict:
    """One arm's entry of `decay_study.arms` (the contract): regime, trajectory with intervals, peak, verdict;
    the paper's measuring data ('seen') is the headline series, held-out text the second."""
    r = pres[0]["regime"]
    ref = dataclasses.asdict(dcfg.reference)
    overrides = {k: v for k, v in dataclasses.asdict(arm).items() if ref[k] != v}
    series = {}
    for k in ("seen", "held_out"):
        runs = [{**m[k], **summarize_run(m["steps"], d, m[k]["knowledge_entropy"], r["warmup_steps"])}
                for m, d in zip(meas, draws[k])]
        series[k] = {**combine_seeds(runs, draws[k]), "verdict": verdict(runs), "peak_steps": [x["peak_step"] for x in runs],
                     "changes": [x["change"] for x in runs], "change_cis": [x["change_ci"] for x in runs],
                     "attention_entropy": [sum(x["attention_entropy"][i] for x in runs) / len(runs) for i in range(len(meas[0]["steps"]))],
                     "next_token_entropy": [sum(x["next_token_entropy"][i] for x in runs) / len(runs) for i in range(len(meas[0]["steps"]))],
                     "per_seed": runs}
    head = series["seen"]
    mean_run = summarize_run(meas[0]["steps"], torch.stack(draws["seen"]).mean(0), head["knowledge_entropy"], r["warmup_steps"])
    return {"name": name, "overrides": overrides, "seeds": dcfg.seeds_of(name),
            "tokens_per_parameter": r["tokens_per_parameter"], "cumulative_weight_decay": r["cumulative_weight_decay"],
            "regime": r, "steps": meas[0]["steps"], "knowledge_entropy": head["knowledge_entropy"],
            "knowledge_entropy_ci": head["knowledge_entropy_ci"], "peak_step": mean_run["peak_step"],
            "collapse_step": mean_run["collapse_step"], "change": mean_run["change"], "change_ci": mean_run["change_ci"],
            "verdict": head["verdict"],
            "max_entropy": meas[0]["layers"] * math.log(meas[0]["ffn_dim"]),
            "series": series, "wall_seconds": sum(p["seconds"] for p in pres), "tokens_per_s": [p["tokens_per_s"] for p in pres],
            "final_loss": [p["final_loss"] for p in pres], "checkpoints": [[c["path"] for c in p["checkpoints"]] for p in pres]}
