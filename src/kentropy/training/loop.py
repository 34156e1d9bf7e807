"""Continual knowledge learning (paper §4, Appendix B): train a checkpoint on a new-domain corpus
while injecting fictional knowledge, and measure acquisition (probes) and forgetting (tasks).

    kentropy train MODEL --data CORPUS.jsonl --knowledge fk.json --out runs/x
    torchrun --nproc_per_node=2 -m kentropy train ...      # DDP, same global batch
    torchrun --nproc_per_node=4 -m kentropy train ... --fsdp   # FSDP2: 7B-scale, sharded checkpoints

Defaults are the paper's protocol as its official code runs it (kaistAI/Knowledge-Entropy):
global batch 128, seq len 1024, 1600 steps, AdamW lr 4e-4, betas (0.9, 0.95), wd 0.1 (not
on embeddings, norms or biases), OLMo's cosine_with_warmup (linear from 0.1·lr to lr over 5%
of the steps, cosine to 0.1·lr), grad clip 1.0, injection round r in the batch of step
160·r - 1 (the last on the final step). The run directory explains itself (`RunDir`);
`--resume` continues from the last checkpoint with the same result as an uninterrupted run.

The run is three plain functions: `setup` (check every input, then create the run
directory), `fit` (the optimizer steps) and `finish` (P and D after, A and F).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kentropy.training import plasticity
from kentropy.runtime.options import option, require, to_dict
from kentropy.training.corpus import epochs_needed, inject, injected_lengths, injection_schedule, item_ids, pack_rows, row_order
from kentropy.runtime.distributed import barrier, rank_world
from kentropy.errors import KentropyError
from kentropy.io import (append_jsonl, check_out_dir, clean_stale_temps, make_dir, read_json, read_jsonl, write_dir_atomic,
                         write_json, write_jsonl)
from kentropy.training.memory import GiB
from kentropy.models.loading import Checkpoint, load_model, load_tokenizer, parse_checkpoints, pick_device
from kentropy.training.rundir import RunDir
from kentropy.training.sharding import clip_grad_norm


SCHEDULES = ("cosine", "constant", "wsd")
WARMUP_START = 0.1  # OLMo's `_linear_warmup` starts at 0.1 x lr


@dataclass
class TrainConfig:
    """Continue pretraining a checkpoint on a corpus, injecting fictional knowledge; measure A and F."""

    model: str = option(help="Starting checkpoint: model dir or hub id (NAME@rev).", argument=True)
    data: str = option(help="Training corpus (.jsonl field 'text', .txt, or dataset); documents joined with eos.")
    out: str = option(help="Run directory (refused if it exists, unless --resume or --overwrite).")
    knowledge: str | None = option(None, "Fictional knowledge JSON (Chang et al. 2024 format) to inject and probe.")
    plan: str | None = option(None, "Injection plan JSON (`kentropy knowledge plan`); default: the paper's plan for --knowledge.")
    steps: int = option(1600, "Optimizer steps.")
    batch_size: int = option(128, "Global batch in rows (sequences), across all processes.")
    micro_batch: int = option(8, "Rows per forward/backward on one process; gradients accumulate up to the global batch.")
    seq_len: int = option(1024, "Tokens per row.")
    lr: float = option(4e-4, "Peak learning rate.")
    beta1: float = option(0.9, "AdamW beta1.")
    beta2: float = option(0.95, "AdamW beta2.")
    weight_decay: float = option(0.1, "AdamW weight decay (weight matrices only: not embeddings, norms or biases, as OLMo).")
    warmup: float = option(0.05, "Fraction of steps of linear warmup, from 0.1 x lr to lr (OLMo's).")
    schedule: str = option("cosine", "After warmup: cosine (to --min-lr-ratio x lr; OLMo's, the paper's), constant, "
                                     "or wsd (warmup-stable-decay: constant, then linear to --min-lr-ratio x lr over --decay-fraction of the steps).")
    min_lr_ratio: float = option(0.1, "Final lr as a fraction of --lr for cosine and wsd (OLMo's alpha_f = 0.1).")
    decay_fraction: float = option(0.2, "wsd only: the last fraction of steps over which the lr decays.")
    grad_clip: float = option(1.0, "Clip the global gradient norm to this (0 = off).")
    inject_interval: int = option(160, "Steps between injection rounds when the plan is made here (round r in step interval x r - 1).")
    rounds: int = option(10, "Injection rounds when the plan is made here (paraphrase group needs rounds-1 paraphrases).")
    epochs: int | None = option(None, "Allow this many passes over a corpus too small for --steps (default: refuse).")
    eval_every: int = option(160, "Probe the injected knowledge every this many steps (0 = only before and after).")
    save_every: int = option(400, "Save a resumable checkpoint every this many steps (and at the end).")
    save_at: list[int] = option([], "Also save a checkpoint after each of these step counts (repeatable; e.g. log-spaced).")
    tasks: str | None = option(None, "Downstream tasks for D (comma-separated lm-eval names; 'paper' = the paper's six, with OLMo's metrics); F needs them.")
    task_dir: str | None = option(None, "Directory of local lm-eval task YAMLs for --tasks.")
    eval_limit: int | None = option(None, "Evaluate at most this many examples per task.")
    seed: int = option(0, "Seed for data order, injection order and initialization of anything random.")
    resume: bool = option(False, "Continue an interrupted run from its last checkpoint.")
    overwrite: bool = option(False, "Delete an existing run directory first.")
    device: str = option("auto", "auto, cpu, cuda, cuda:N (under torchrun: the local rank's GPU).")
    dtype: str = option("bfloat16", "Compute dtype on CUDA (bfloat16 or float32; fp32 master weights either way); CPU trains in float32.")
    compile: bool = option(False, "torch.compile the training forward and backward (faster steps after a one-off compile).")
    fsdp: bool = option(False, "Shard weights, gradients and optimizer state over the torchrun processes (FSDP2, block by block) "
                               "instead of DDP; resumable checkpoints are then sharded (DCP) and resume on any number of processes.")
    # plasticity methods (kentropy/plasticity.py)
    replay: str | None = option(None, "Rehearsal: corpus (.jsonl, .txt, dataset) whose rows replace the last --replay-fraction of every batch's rows (never injected rows).")
    replay_fraction: float = option(0.0, "Share of each global batch's rows taken from --replay, in [0, 1).")
    freeze_half: bool = option(False, "Half fine-tuning: in each injection round (the steps after one injection step up to the next) "
                                      "a seeded random half of each block's weight matrices is frozen (optimizer state kept).")
    recycle_every: int = option(0, "ReDo every this many steps (0 = off): recycle τ-dormant neurons (Cbar of the step's batch) and reset their AdamW moments.")
    threshold: float | None = option(None, "--recycle-every: τ in [0, 1); neurons with Cbar_i / mean(Cbar) <= τ are recycled.")
    report_to: str = option("none", "Also log the curves (loss, lr, grad norm, tokens/s, P per round) to tensorboard "
                                    "(RUN/tensorboard) or wandb (offline unless WANDB_MODE is set); none: metrics.jsonl only.")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "micro_batch", "seq_len", "rounds"):
            if getattr(self, name) <= 0:
                raise KentropyError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be positive")
        if not 0 <= self.warmup < 1:
            raise KentropyError(f"--warmup {self.warmup}: must be in [0, 1)")
        if self.resume and self.overwrite:
            raise KentropyError("--resume and --overwrite exclude each other")
        if self.plan and not self.knowledge:
            raise KentropyError("--plan needs --knowledge")
        if self.epochs is not None and self.epochs <= 0:
            raise KentropyError(f"--epochs {self.epochs}: must be positive")
        if self.schedule not in SCHEDULES:
            raise KentropyError(f"--schedule {self.schedule}: choose {', '.join(SCHEDULES)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise KentropyError(f"--min-lr-ratio {self.min_lr_ratio}: must be in [0, 1]")
        if not 0 < self.decay_fraction <= 1:
            raise KentropyError(f"--decay-fraction {self.decay_fraction}: must be in (0, 1]")
        if self.schedule == "wsd" and self.warmup + self.decay_fraction > 1:
            raise KentropyError(f"--warmup {self.warmup} + --decay-fraction {self.decay_fraction}: must not exceed 1")
        bad = [s for s in self.save_at if not 0 < s <= self.steps]
        if bad:
            raise KentropyError(f"--save-at {bad[0]}: must be a step count in 1..{self.steps}")
        if self.dtype not in ("bfloat16", "float32"):
            raise KentropyError(f"--dtype {self.dtype}: choose bfloat16 or float32")
        require(self, "lr", low=0, low_open=True)
        require(self, "beta1", "beta2", low=0, high=1, high_open=True)
        require(self, "weight_decay", "grad_clip", "save_every", "eval_every", "seed", low=0)
        require(self, "inject_interval", low=1)
        require(self, "eval_limit", low=0, low_open=True)
        plasticity.check_options(self)
        check_out_dir(self.out)
        from kentropy.training.trackers import check_tracker

        check_tracker(self.report_to)


# ---- schedule and optimizer --------------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig) -> float:
    """The lr of 0-indexed optimizer step `step`: OLMo's `CosWithWarmup.get_lr(lr, t, steps)` at
    t = step + 1 (OLMo counts its global step from 1 before the update; official `olmo/optim.py`).

    warmup (t < W, W = round(warmup x steps)): lr x (0.1 + 0.9 t / W)
    cosine: eta + (lr - eta)(1 + cos(pi (t - W) / (steps - W))) / 2, eta = min_lr_ratio x lr; t >= steps: eta
    constant: lr after warmup; wsd: lr until the last decay_fraction of steps, then linear to eta.
    """
    t, n = step + 1, cfg.steps
    warm = round(cfg.warmup * n)
    eta = cfg.lr * cfg.min_lr_ratio
    if t < warm:
        return cfg.lr * (WARMUP_START + (1 - WARMUP_START) * t / warm)
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "wsd":
        decay = max(1, round(cfg.decay_fraction * n))
        if t <= n - decay:
            return cfg.lr
        return cfg.lr + (eta - cfg.lr) * (t - (n - decay)) / decay
    if t >= n:
        return eta
    return eta + (cfg.lr - eta) * (1 + math.cos(math.pi * (t - warm) / (n - warm))) / 2


def decay_groups(model) -> tuple[list, list]:
    """(decayed, not decayed) parameters, as OLMo: weight decay on weight matrices only, never on
    embeddings (token and learned position embeddings, nor an LM head tied to them), norms or
    biases. An untied LM head is a Linear weight and decays, as OLMo's `ff_out` does."""
    skip = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    emb = model.get_input_embeddings()
    if emb is not None:
        skip |= {id(p) for p in emb.parameters()}
    params = [p for p in dict.fromkeys(model.parameters()) if p.requires_grad]  # tied weights once
    decay = [p for p in params if p.dim() >= 2 and id(p) not in skip]
    no_decay = [p for p in params if p.dim() < 2 or id(p) in skip]
    return decay, no_decay


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = decay_groups(model)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # the fused kernel (CPU and CUDA) is several times faster than the per-tensor loop, same update
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


# ---- evaluation --------------------------------------------------------------------------
# `probe` and `evaluate` run in eval mode and hand the model back in its mode; evaluate also
# restores the RNG states lm-eval reseeds, so training continues exactly as it would without them.
def probe_scores(model, tok, entries, plan) -> dict | None:
    from kentropy.knowledge import probe

    return probe(model, tok, entries, plan=plan) if entries else None


def task_names(cfg: TrainConfig) -> list[str]:
    return [t.strip() for t in cfg.tasks.split(",") if t.strip()] if cfg.tasks else []


def downstream(model, tok, cfg: TrainConfig, built: dict | None = None) -> dict | None:
    """D on --tasks, with each task's per-document `rows` (F's standard error pairs before and after over them);
    `built`: the tasks as `setup` loaded them (checked before the run directory), else loaded here."""
    from kentropy.evaluation.downstream import _evaluate_loaded, evaluate

    if not cfg.tasks:
        return None
    if built is not None:
        return _evaluate_loaded(model, tok, built, batch_size=16, limit=cfg.eval_limit, seed=cfg.seed, rows=True)
    return evaluate(model, tok, task_names(cfg), task_dir=cfg.task_dir, limit=cfg.eval_limit, seed=cfg.seed, rows=True)


def strip_probe(p: dict | None) -> dict | None:
    """Probe scores per kind and group, without per-entry detail (for metrics.jsonl)."""
    return None if p is None else {k: v for k, v in p.items() if k != "entries"}


def strip_rows(d: dict | None) -> dict | None:
    """Downstream scores per task and D, without the per-document rows (for metrics.jsonl)."""
    if d is None:
        return None
    return {**d, "tasks": {name: {k: v for k, v in t.items() if k != "rows"} for name, t in d["tasks"].items()}}


# ---- checkpoints -------------------------------------------------------------------------
def save_checkpoint(run: RunDir, steps_done: int, model, tok, opt) -> Path:
    """An HF model directory plus trainer_state.pt (optimizer, RNG, steps done), written atomically."""

    def write(d: Path) -> None:
        model.save_pretrained(d)
        tok.save_pretrained(d)
        torch.save({"steps_done": steps_done, "optimizer": opt.state_dict(), **rng_state()}, d / "trainer_state.pt")

    return write_dir_atomic(run.checkpoint(steps_done), write)


def save_sharded_checkpoint(run: RunDir, steps_done: int, model, tok, opt) -> Path:
    """--fsdp: the HF model gathered on rank 0, and model + optimizer as a sharded DCP checkpoint (every rank)."""
    from kentropy.training import dcp as checkpoint

    return checkpoint.save(run.checkpoint(steps_done), model, opt, tok, {"steps_done": steps_done, **rng_state()})


def rng_state() -> dict:
    """The random states a resumed run needs (rank 0's; every rank starts from the same seed)."""
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": list(random.getstate()[1]), "python_rng_pos": random.getstate()[2]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate((3, tuple(state["python_rng"]), state["python_rng_pos"]))


def load_trainer_state(path: Path, model, opt, sharded_checkpoint: bool) -> int:
    """Restore optimizer (and for a sharded checkpoint the model, resharded to this run) and RNG; steps done."""
    if sharded_checkpoint:
        from kentropy.training import dcp as checkpoint

        state = checkpoint.load(path, model, opt)
    else:
        try:
            state = torch.load(path / "trainer_state.pt", weights_only=True)
        except Exception as e:  # a truncated or foreign file: the checkpoint dir is named, not a pickle traceback
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise KentropyError(f"--resume: {path / 'trainer_state.pt'}: unreadable ({first}); "
                                f"delete {path} to resume from the one before") from None
        opt.load_state_dict(state["optimizer"])
    set_rng_state(state)
    return int(state["steps_done"])


# ---- the run -----------------------------------------------------------------------------
@dataclass
class Run:
    """Everything `fit` and `finish` need, made by `setup` after every input was checked."""

    run: RunDir
    tok: object
    model: torch.nn.Module
    wrapped: torch.nn.Module  # what the step calls: the model, or DDP around it (FSDP shards the model itself)
    opt: torch.optim.Optimizer
    rows: torch.Tensor  # [N, seq_len] the packed corpus
    order: torch.Tensor  # [steps * batch] row index of every row of every step
    schedule: dict[int, list[dict]]  # step -> injected items
    passages: dict[tuple[int, int], torch.Tensor]  # (entry, variant) -> token ids, eos-terminated
    entries: list[dict]
    plan: dict | None
    start: int  # first step to run (> 0 on resume)
    device: torch.device
    accum: int  # micro-batches per step on this process
    per_rank: int  # rows per step on this process
    tasks: dict | None = None  # --tasks as lm-eval tasks, built (and so checked) before the run directory
    sharded: bool = False  # FSDP: every forward (training, probes, evaluation) needs every rank
    plasticity: plasticity.Plasticity | None = None  # --replay, --freeze-half, --recycle-every


def make_plan_for(cfg: TrainConfig, entries: list[dict]) -> dict:
    """The paper's plan for `entries`, its rounds fitted to --steps: round r in step I·r - 1, the last
    on the final step. --steps that is not --rounds x --inject-interval gets interval steps/rounds."""
    from kentropy.knowledge import make_plan

    interval = cfg.inject_interval
    if cfg.steps != cfg.rounds * interval:
        if cfg.steps % cfg.rounds:
            raise KentropyError(f"--steps {cfg.steps} is not --rounds {cfg.rounds} x --inject-interval {interval}, "
                                f"nor divisible by --rounds (the last round must land on the final step)")
        interval = cfg.steps // cfg.rounds
        print(f"note: --steps {cfg.steps} != --rounds {cfg.rounds} x --inject-interval {cfg.inject_interval}: "
              f"injecting every {interval} steps (rounds at steps {interval - 1}, ..., {cfg.steps - 1})", file=sys.stderr)
    return make_plan(entries, rounds=cfg.rounds, interval=interval)


def load_knowledge_and_plan(cfg: TrainConfig, run: RunDir) -> tuple[list[dict], dict | None]:
    from kentropy.knowledge import check_plan_entries, load_knowledge, load_plan

    if not cfg.knowledge:
        return [], None
    entries = load_knowledge(cfg.knowledge)
    if cfg.plan:
        plan = load_plan(cfg.plan)
        if plan["rounds"] * plan["interval"] != cfg.steps:
            raise KentropyError(f"--plan {cfg.plan}: {plan['rounds']} rounds x interval {plan['interval']} != --steps {cfg.steps} "
                                f"(the official protocol puts the last round on the final step)")
    elif cfg.resume and run.plan.is_file():
        plan = load_plan(str(run.plan))  # resume: the plan used, exactly
    else:
        plan = make_plan_for(cfg, entries)
    check_plan_entries(plan, entries, source=cfg.plan or "plan")
    return entries, plan


def check_passages_fit(schedule: dict[int, list[dict]], passages: dict, cfg: TrainConfig) -> None:
    """Every injected passage (+ eos) must fit its row: a truncated passage loses facts that its probes ask for."""
    for step, items in sorted(schedule.items()):
        ids = [passages[(i["entry"], i["variant"])] for i in items]
        long = [f"entry {i['entry']} variant {i['variant']} ({len(t)} tokens)" for i, t in zip(items, ids) if len(t) > cfg.seq_len]
        if long:
            raise KentropyError(f"--seq-len {cfg.seq_len}: injected passages longer than a row: {', '.join(long[:5])}"
                                f"{' ...' if len(long) > 5 else ''}; raise --seq-len or shorten them")
        worst = max(injected_lengths(ids, cfg.batch_size))
        if worst > cfg.seq_len:
            raise KentropyError(f"--batch-size {cfg.batch_size}: the {len(items)} passages of step {step} share rows, and a row's "
                                f"passages take {worst} tokens > --seq-len {cfg.seq_len}; raise --batch-size or --seq-len")


def prepare_run_dir(cfg: TrainConfig, run: RunDir) -> None:
    """Check --out against --resume / --overwrite (nothing is created here)."""
    saved = saved_config(cfg)
    if run.root.exists() and not run.root.is_dir():
        raise KentropyError(f"--out {run.root}: exists and is not a directory")
    if run.root.is_dir() and any(run.root.iterdir()):
        if cfg.resume:
            old = read_json(run.config, "run config") if run.config.is_file() else None
            if old is None:
                raise KentropyError(f"--resume: {run.root} has no config.json (not a kentropy run)")
            inputs = read_json(run.inputs, "run file") if run.inputs.is_file() else {}
            diff = [k for k in saved if old.get(k) != saved[k] and not same_path(k, old.get(k), saved[k], run, inputs)]
            if diff:
                raise KentropyError(f"--resume: config differs from the run's in {', '.join('--' + d.replace('_', '-') for d in diff)}")
        elif not cfg.overwrite:
            raise KentropyError(f"--out {run.root}: run directory exists (use --resume or --overwrite)")
    elif cfg.resume:
        raise KentropyError(f"--resume: no run at {run.root}")


INPUT_FILES = ("data", "knowledge", "plan", "replay")  # flags whose files' content a resume must find unchanged
PATHS = INPUT_FILES + ("model", "task_dir", "out")  # path flags: each recorded resolved, as well as typed


def input_digests(cfg: TrainConfig) -> dict:
    """{flag: {"path", "resolved", "sha256"}} of the run's path flags (sha256 of the input files; None for a
    dataset or hub name; not taken of --model, whose weights may be large, nor of --task-dir, whose YAMLs a moved
    lab points anew, nor of --out)."""
    from kentropy.io import content_digest

    return {name: {"path": str(getattr(cfg, name)), "resolved": os.path.realpath(getattr(cfg, name)),
                   **({"sha256": content_digest(getattr(cfg, name))} if name in INPUT_FILES else {})}
            for name in PATHS if getattr(cfg, name)}


def same_path(name: str, old, new, run: RunDir, inputs: dict) -> bool:
    """On --resume, whether path flag `name`, typed `new` now and `old` when the run started, names the same thing:
    --out is the run directory itself; an input is the same file (resolved), or has the same content (sha256 in
    inputs.json, compared by `check_inputs_unchanged`), or lies where it lay relative to the run directory (a run
    moved or copied together with its inputs, as a lab's stages are)."""
    if name == "out":
        return True
    if name not in PATHS or not isinstance(old, str) or not isinstance(new, str):
        return False
    rec = inputs.get(name) if isinstance(inputs.get(name), dict) else {}
    here = os.path.realpath(new)
    if here == rec.get("resolved", os.path.realpath(old)) or rec.get("sha256") is not None:
        return True
    root = (inputs.get("out") or {}).get("resolved") if isinstance(inputs.get("out"), dict) else None
    return bool(rec.get("resolved") and root) and \
        os.path.relpath(rec["resolved"], root) == os.path.relpath(here, os.path.realpath(run.root))


def check_inputs_unchanged(cfg: TrainConfig, run: RunDir, now: dict) -> None:
    """--resume: every input file has the content the run started with (runs without inputs.json are not checked)."""
    if not (cfg.resume and run.inputs.is_file()):
        return
    saved = read_json(run.inputs, "run file")
    for name, d in now.items():
        old = saved.get(name, {}).get("sha256") if isinstance(saved.get(name), dict) else None
        if old is not None and d.get("sha256") != old:
            raise KentropyError(f"--resume: --{name} {d['path']} changed since the run started (sha256 {old[:12]} -> "
                                f"{(d['sha256'] or 'missing')[:12]}); resume with the original file, or start a new run")


def saved_config(cfg: TrainConfig) -> dict:
    """The run's config.json: every flag but those a resume may change."""
    return {k: v for k, v in to_dict(cfg).items() if k not in ("resume", "overwrite", "report_to")}


def check_memory(cfg: TrainConfig, ckpt: Checkpoint, device: torch.device, world_size: int, show: bool = True) -> None:
    """Print the estimated memory per rank (rank 0, if `show`) and refuse a run that clearly cannot fit, before any weight loads."""
    from kentropy.models.compat import load_config
    from kentropy.training.memory import available, check_fits, estimate, shape_of_checkpoint

    rank, _ = rank_world()
    try:
        shape = shape_of_checkpoint(load_config(ckpt))
    except (KentropyError, ValueError, OSError) as e:
        if cfg.fsdp:
            raise KentropyError(f"--fsdp: {e}") from None
        if rank == 0:
            print(f"note: no memory estimate for {ckpt}: {e}", file=sys.stderr)
        return
    est = estimate(shape, micro_batch=cfg.micro_batch, seq_len=cfg.seq_len, processes=world_size, fsdp=cfg.fsdp,
                   bf16=device.type == "cuda" and cfg.dtype == "bfloat16")
    free, where = available(device)
    if rank == 0 and show:
        print(f"{est.describe()} ({free / GiB:.2f} GiB {where})", file=sys.stderr)
    check_fits(shape, est, free, where)


def training_rows(cfg: TrainConfig, tok, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cfg.data packed into rows of cfg.seq_len tokens (or `rows`, already packed) and the order they are read in:
    `rows[order[step * B : (step + 1) * B]]` is step's batch. Refuses data too short for cfg.steps in cfg.epochs."""
    from kentropy.measurement.documents import load_texts

    if rows is None:
        rows = pack_rows(tok, load_texts(cfg.data), cfg.seq_len)
    if len(rows) == 0:
        raise KentropyError(f"--data {cfg.data}: no full row of {cfg.seq_len} tokens")
    need = epochs_needed(len(rows), cfg.steps, cfg.batch_size)
    if need > (cfg.epochs or 1):
        raise KentropyError(f"--data {cfg.data}: {len(rows)} rows of {cfg.seq_len} tokens give {len(rows) / cfg.batch_size:.1f} steps of batch "
                            f"{cfg.batch_size} per epoch; {cfg.steps} steps need {need} epochs (pass --epochs {need} to proceed)")
    return rows, row_order(len(rows), need, cfg.seed)


def setup(cfg: TrainConfig, show_memory: bool = True) -> Run:
    """Check every input (flags, data, knowledge, plan, model), then create or reopen the run directory.

    `show_memory` False keeps the memory estimate off stderr (a caller running many short runs says it once).
    """
    from kentropy.knowledge import item_text

    rank, world_size = rank_world()
    if cfg.batch_size % world_size or (cfg.batch_size // world_size) % cfg.micro_batch:
        raise KentropyError(f"--batch-size {cfg.batch_size} must split into {world_size} processes x whole --micro-batch {cfg.micro_batch}")
    per_rank = cfg.batch_size // world_size
    ckpts = parse_checkpoints([cfg.model])
    if len(ckpts) != 1:
        raise KentropyError(f"MODEL {cfg.model}: train takes one checkpoint")
    run = RunDir(cfg.out)
    prepare_run_dir(cfg, run)
    inputs = input_digests(cfg)
    check_inputs_unchanged(cfg, run, inputs)
    entries, plan = load_knowledge_and_plan(cfg, run)
    tok = load_tokenizer(ckpts[0])  # checked against the model's vocab_size
    from kentropy.models.compat import check_positions, read_config

    check_positions(ckpts[0], tok, cfg.seq_len, read_config(ckpts[0]), cfg.seq_len)  # rows are exactly --seq-len tokens
    rows, order = training_rows(cfg, tok)
    schedule = injection_schedule(plan, cfg.steps)
    passages = {(i["entry"], i["variant"]): item_ids(tok, item_text(entries[i["entry"]], i["variant"]))
                for items in schedule.values() for i in items}
    check_passages_fit(schedule, passages, cfg)
    plast = plasticity.prepare(cfg, tok, schedule)
    tasks = None
    if cfg.tasks and (rank == 0 or (cfg.fsdp and world_size > 1)):  # who evaluates: rank 0, or every rank under FSDP
        from kentropy.evaluation.downstream import expand_tasks, load_tasks

        tasks = load_tasks(expand_tasks(task_names(cfg)), cfg.task_dir)

    device = pick_device(cfg.device)  # under torchrun, distributed.init() bound this rank to its own GPU
    last = run.last_checkpoint() if cfg.resume else None
    source = Checkpoint(str(last)) if last else ckpts[0]
    check_memory(cfg, source, device, world_size, show=show_memory)
    sharded = cfg.fsdp and world_size > 1  # one process with --fsdp: unsharded, but the same (DCP) checkpoints
    # FSDP: each rank reads the full weights into CPU memory; sharding moves only its shards to the device
    model = load_model(source, device="cpu" if sharded else device)

    # every input is good: now the run directory
    if rank == 0:
        if run.root.is_dir() and any(run.root.iterdir()) and not cfg.resume:
            shutil.rmtree(run.root)  # --overwrite
        if not run.config.is_file():
            write_json(run.config, saved_config(cfg))  # first: a directory with a config is a run
        if not run.inputs.is_file():
            write_json(run.inputs, inputs)
        make_dir(run.checkpoints)
        clean_stale_temps(run.checkpoints, legacy=True)  # `.step-*` temps of saves that a kill interrupted
        if plan is not None and not run.plan.is_file():
            write_json(run.plan, plan)
    barrier()

    model.train()
    if sharded:
        from kentropy.training.sharding import shard

        shard(model, device, cfg.dtype)
    opt = make_optimizer(model, cfg)
    if plast is not None:
        plast.attach(model, opt)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    start = load_trainer_state(last, model, opt, sharded_checkpoint=cfg.fsdp) if last else 0
    if cfg.resume and rank == 0:
        _truncate_metrics(run, start - 1)  # also with no checkpoint yet: the steps logged are redone from 0
        print(f"resuming {run.root} at step {start} from {last.name if last else 'the start (no checkpoint yet)'}", file=sys.stderr)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 and not sharded else model
    if cfg.compile:
        wrapped = torch.compile(wrapped)  # same parameters: checkpoints and probes use `model` itself
    return Run(run=run, tok=tok, model=model, wrapped=wrapped, opt=opt, rows=rows, order=order,
               schedule=schedule, passages=passages, entries=entries, plan=plan, start=start, device=device,
               accum=per_rank // cfg.micro_batch, per_rank=per_rank, tasks=tasks, sharded=sharded, plasticity=plast)


def global_batch(r: Run, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, int]:
    """The rows of step `step` ([B, T], all processes'), --replay rows mixed in and the step's knowledge injected; and the items injected."""
    batch = r.rows[r.order[step * cfg.batch_size : (step + 1) * cfg.batch_size]]  # [B, T] global batch
    if r.plasticity is not None:
        batch = r.plasticity.mix(step, batch)  # replay takes the last rows; injection the first
    items = r.schedule.get(step, [])
    if items:
        batch = inject(batch, [r.passages[(i["entry"], i["variant"])] for i in items])
    return batch, len(items)


def step_batch(r: Run, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, int]:
    """This process's rows of step `step` ([per_rank, T]); and the items injected."""
    rank, _ = rank_world()
    batch, injected = global_batch(r, cfg, step)
    return batch[rank * r.per_rank : (rank + 1) * r.per_rank], injected


def train_step(r: Run, cfg: TrainConfig, mine: torch.Tensor) -> tuple[float, float | None]:
    """One optimizer step on this process's rows (accumulated over micro-batches): (mean loss, grad norm)."""
    _, world_size = rank_world()
    # FSDP casts by its mixed-precision policy instead of autocast
    bf16 = r.device.type == "cuda" and cfg.dtype == "bfloat16" and not r.sharded
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    loss_sum = torch.zeros((), device=r.device)
    for k in range(r.accum):
        x = mine[k * cfg.micro_batch : (k + 1) * cfg.micro_batch].to(r.device)
        # DDP all-reduces on the last micro-batch only; FSDP reduce-scatters every micro-batch's
        # gradients into the shards, so that no full-size gradient accumulates on any rank
        sync = k == r.accum - 1 or r.sharded
        with (r.wrapped.no_sync() if (world_size > 1 and not sync) else contextlib.nullcontext()):
            with autocast:
                loss = r.wrapped(input_ids=x, labels=x).loss / r.accum  # mean over the step's tokens
            loss.backward()
        loss_sum += loss.detach()
    if world_size > 1:
        torch.distributed.all_reduce(loss_sum)
        loss_sum /= world_size
    loss_value = float(loss_sum)
    if not math.isfinite(loss_value):
        return loss_value, None
    if r.plasticity is not None:
        r.plasticity.drop_frozen_grads()  # --freeze-half: no gradient, so no update and no change to their state
    norm = clip_grad_norm(r.model, cfg.grad_clip) if cfg.grad_clip > 0 else None  # the global norm, also over shards
    r.opt.step()
    r.opt.zero_grad(set_to_none=True)
    return loss_value, norm


def fit(r: Run, cfg: TrainConfig, tracker=None, monitor=None) -> None:
    """The optimizer steps from `r.start` to `cfg.steps`: probes every --eval-every steps, checkpoints every --save-every.

    `tracker` (`kentropy.training.trackers`, rank 0) gets every metrics record; `monitor` (an `EntropyMonitor`) measures
    knowledge entropy after the steps it chooses, logged as the record's `knowledge_entropy`.
    """
    rank, _ = rank_world()
    # probing and evaluation: rank 0 alone, but under FSDP every rank runs the same forwards (each
    # all-gathers the blocks it computes) and gets the same scores; rank 0 writes them
    evaluates = rank == 0 or r.sharded
    # before: P and D of the starting checkpoint (kept in the summary's "before", once)
    first = not r.run.before.is_file()
    barrier()  # every rank has decided before rank 0 writes
    if first and evaluates:
        before = {"probes": probe_scores(r.model, r.tok, r.entries, r.plan), "downstream": downstream(r.model, r.tok, cfg, r.tasks)}
        if rank == 0:
            write_json(r.run.before, before)
            _log(r.run, before_record(before))  # a kill between the two: a resume writes this line from before.json
            if tracker is not None:
                tracker.log(before_record(before))
    barrier()
    bar = tqdm(range(r.start, cfg.steps), desc=f"train {r.run.root.name}", disable=rank != 0, initial=r.start, total=cfg.steps)
    for step in bar:
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for g in r.opt.param_groups:
            g["lr"] = lr
        mine, injected = step_batch(r, cfg, step)
        extra = r.plasticity.start_step(step) if r.plasticity is not None else {}
        loss, norm = train_step(r, cfg, mine)
        if not math.isfinite(loss):
            good = r.run.last_checkpoint()
            raise KentropyError(f"loss became {loss} at step {step}; stopped; last good checkpoint: {good or 'none (rerun with a lower --lr)'}")
        if r.plasticity is not None:
            extra |= r.plasticity.end_step(step, global_batch(r, cfg, step)[0])
        record = {"step": step, "loss": loss, "lr": lr, "tokens_per_s": cfg.batch_size * cfg.seq_len / (time.perf_counter() - t0),
                  "grad_norm": norm, "injected": injected, **extra}
        end = step == cfg.steps - 1
        if evaluates and r.entries and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or end):
            record["probes"] = strip_probe(probe_scores(r.model, r.tok, r.entries, r.plan))
        if monitor is not None and evaluates:
            m = monitor(r.model, step + 1)  # after step + 1 optimizer steps
            if m is not None:
                record["knowledge_entropy"] = m.knowledge_entropy
        if rank == 0:
            _log(r.run, record)
            if tracker is not None:
                tracker.log(record)
            bar.set_postfix(loss=f"{loss:.3f}")
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or (step + 1) in cfg.save_at or end:
            if cfg.fsdp:
                save_sharded_checkpoint(r.run, step + 1, r.model, r.tok, r.opt)  # collective
            elif rank == 0:
                save_checkpoint(r.run, step + 1, r.model, r.tok, r.opt)
        barrier()


def finish(r: Run, cfg: TrainConfig) -> dict | None:
    """P and D after training; A and F against the starting checkpoint (summary.json, written by rank 0)."""
    rank, _ = rank_world()
    summary = None
    if rank == 0 or r.sharded:  # under FSDP every rank runs the forwards (see `fit`)
        after = {"probes": probe_scores(r.model, r.tok, r.entries, r.plan), "downstream": downstream(r.model, r.tok, cfg, r.tasks)}
    if rank == 0:
        before = read_json(r.run.before, "run file")
        summary = summarize(before, after, cfg, r.run)
        if r.plasticity is not None:
            summary["plasticity"] = r.plasticity.summary(read_jsonl(r.run.metrics, "run log"))
        write_json(r.run.summary, summary)
    barrier()
    return summary


def train(cfg: TrainConfig, *, monitor=None, show_memory: bool = True) -> dict | None:
    """Run (or resume) continual training; returns the summary (also written to summary.json; None off rank 0).

    `monitor`: an `EntropyMonitor` measuring knowledge entropy during the run (into metrics.jsonl and --report-to);
    `show_memory` False: no memory estimate on stderr (the check that the run fits is still made).
    """
    from kentropy.training.trackers import open_tracker

    r = setup(cfg, show_memory=show_memory)
    tracker = open_tracker(cfg.report_to, r.run.root, saved_config(cfg), first_step=r.start) if rank_world()[0] == 0 else None
    try:
        fit(r, cfg, tracker, monitor)
        summary = finish(r, cfg)
        if tracker is not None and summary is not None and summary["D_after"] is not None:
            tracker.log({"step": cfg.steps - 1, "downstream": {"D": summary["D_after"]}})
    finally:
        if tracker is not None:
            tracker.close()
    return summary


def summarize(before: dict, after: dict, cfg: TrainConfig, run: RunDir) -> dict:
    """P and D before and after, A = (P_after - P_before)/|P_before|*100, F = (D_before - D_after)/D_before*100."""
    from kentropy.evaluation.outcomes import acquisition_from, forgetting

    pb, pa = before["probes"], after["probes"]
    db, da = before["downstream"], after["downstream"]
    A = acquisition_from(pb, pa) if pb and pa else None
    F = forgetting(db["D"], da["D"]) if db and da else None
    return {
        "P_before": pb["overall"] if pb else None, "P_after": pa["overall"] if pa else None,
        "D_before": db["D"] if db else None, "D_after": da["D"] if da else None,
        "A": A["overall"] if A else None, "F": F,
        "acquisition": A,
        "probes_before": strip_probe(pb), "probes_after": strip_probe(pa),
        "downstream_before": db, "downstream_after": da,
        "final_checkpoint": str(run.checkpoint(cfg.steps)),
        "config": to_dict(cfg),
    }


def before_record(before: dict) -> dict:
    """The metrics.jsonl line (step -1) of the starting checkpoint's P and D."""
    return {"step": -1, "event": "before", "probes": strip_probe(before["probes"]), "downstream": strip_rows(before["downstream"])}


def _log(run: RunDir, record: dict) -> None:
    append_jsonl(run.metrics, record)


def _truncate_metrics(run: RunDir, last_step: int) -> None:
    """On resume: keep the log lines of steps up to the checkpoint (the rest will be redone), each step
    once; a torn last line (a kill mid-write) is dropped with a note. Rewritten atomically."""
    seen, keep = set(), []
    for rec in read_jsonl(run.metrics, "--resume:"):
        key = rec.get("step") if isinstance(rec, dict) else None
        if isinstance(key, int) and key <= last_step and key not in seen:
            seen.add(key)
            keep.append(rec)
    if -1 not in seen and run.before.is_file():  # killed between before.json and its log line
        keep.insert(0, before_record(read_json(run.before, "run file")))
    if keep or run.metrics.is_file():
        write_jsonl(run.metrics, keep)
