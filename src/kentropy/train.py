"""Continual knowledge learning (paper §4, Appendix B): train a checkpoint on a new-domain corpus
while injecting fictional knowledge, and measure acquisition (probes) and forgetting (tasks).

    kentropy train MODEL --data CORPUS.jsonl --knowledge fk.json --out runs/x
    torchrun --nproc_per_node=2 -m kentropy train ...      # DDP, same global batch

Defaults are the paper's: global batch 128, seq len 1024, 1600 steps, AdamW lr 4e-4,
betas (0.9, 0.95), wd 0.1 (not on biases and norms, as OLMo), cosine with 5% warmup,
grad clip 1.0, an injection round every 160 steps. The run directory explains itself
(see `RunDir`); `--resume` continues from the last checkpoint with the same result as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kentropy.config import option, to_dict
from kentropy.corpus import epochs_needed, inject, injection_schedule, item_ids, pack_rows, row_order
from kentropy.distributed import barrier, rank_world
from kentropy.errors import KentropyError
from kentropy.io import write_dir_atomic, write_json
from kentropy.models import Checkpoint, load_model, load_tokenizer, parse_checkpoints, pick_device


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
    weight_decay: float = option(0.1, "AdamW weight decay (matrices only, not biases or norms).")
    warmup: float = option(0.05, "Fraction of steps of linear warmup before the decay.")
    schedule: str = option("cosine", "After warmup: cosine (decay to 0, the paper's) or constant (no decay).")
    grad_clip: float = option(1.0, "Clip the global gradient norm to this (0 = off).")
    inject_interval: int = option(160, "Steps between injection rounds when the plan is made here.")
    rounds: int = option(10, "Injection rounds when the plan is made here (paraphrase group needs rounds-1 paraphrases).")
    epochs: int | None = option(None, "Allow this many passes over a corpus too small for --steps (default: refuse).")
    eval_every: int = option(160, "Probe the injected knowledge every this many steps (0 = only before and after).")
    save_every: int = option(400, "Save a resumable checkpoint every this many steps (and at the end).")
    tasks: str | None = option(None, "Downstream tasks for D (comma-separated lm-eval names); F needs them.")
    task_dir: str | None = option(None, "Directory of local lm-eval task YAMLs for --tasks.")
    eval_limit: int | None = option(None, "Evaluate at most this many examples per task.")
    seed: int = option(0, "Seed for data order, injection order and initialization of anything random.")
    resume: bool = option(False, "Continue an interrupted run from its last checkpoint.")
    overwrite: bool = option(False, "Delete an existing run directory first.")
    device: str = option("auto", "auto, cpu, cuda, cuda:N (under torchrun: the local rank's GPU).")
    dtype: str = option("bfloat16", "Autocast dtype on CUDA (bfloat16 or float32); CPU trains in float32.")

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
        if self.schedule not in ("cosine", "constant"):
            raise KentropyError(f"--schedule {self.schedule}: choose cosine or constant")
        if self.dtype not in ("bfloat16", "float32"):
            raise KentropyError(f"--dtype {self.dtype}: choose bfloat16 or float32")


class RunDir:
    """The layout of a run directory: one place for every path."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.plan = self.root / "plan.json"
        self.metrics = self.root / "metrics.jsonl"
        self.summary = self.root / "summary.json"
        self.checkpoints = self.root / "checkpoints"

    def checkpoint(self, steps_done: int) -> Path:
        """The checkpoint after `steps_done` optimizer steps."""
        return self.checkpoints / f"step-{steps_done:06d}"

    def last_checkpoint(self) -> Path | None:
        done = sorted(p for p in self.checkpoints.glob("step-*") if (p / "trainer_state.pt").is_file())
        return done[-1] if done else None


# ---- schedule and optimizer --------------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup * steps` steps, then cosine decay to 0 or constant (step counts from 0)."""
    warm = math.ceil(round(cfg.warmup * cfg.steps, 6))  # round: 0.07 * 100 is 7.000000000000001
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # the fused kernel (CPU and CUDA) is several times faster than the per-tensor loop, same update
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


# ---- evaluation --------------------------------------------------------------------------
# `probe` and `evaluate` run in eval mode and hand the model back in its mode; evaluate also
# restores the RNG states lm-eval reseeds, so training continues exactly as it would without them.
def probe_scores(model, tok, entries, plan) -> dict | None:
    from kentropy.knowledge import probe

    return probe(model, tok, entries, plan=plan) if entries else None


def downstream(model, tok, cfg: TrainConfig) -> dict | None:
    from kentropy.evaluate import evaluate

    if not cfg.tasks:
        return None
    return evaluate(model, tok, [t.strip() for t in cfg.tasks.split(",") if t.strip()], task_dir=cfg.task_dir,
                    limit=cfg.eval_limit, seed=cfg.seed)


def strip_probe(p: dict | None) -> dict | None:
    """Probe scores per kind and group, without per-entry detail (for metrics.jsonl)."""
    return None if p is None else {k: v for k, v in p.items() if k != "entries"}


# ---- checkpoints -------------------------------------------------------------------------
def save_checkpoint(run: RunDir, steps_done: int, model, tok, opt) -> Path:
    """An HF model directory plus trainer_state.pt (optimizer, RNG, steps done), written atomically."""

    def write(d: Path) -> None:
        model.save_pretrained(d)
        tok.save_pretrained(d)
        state = {
            "steps_done": steps_done,
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": list(random.getstate()[1]),
            "python_rng_pos": random.getstate()[2],
        }
        torch.save(state, d / "trainer_state.pt")

    return write_dir_atomic(run.checkpoint(steps_done), write)


def load_trainer_state(path: Path, opt) -> int:
    state = torch.load(path / "trainer_state.pt", weights_only=True)
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate((3, tuple(state["python_rng"]), state["python_rng_pos"]))
    return int(state["steps_done"])


# ---- the run -----------------------------------------------------------------------------
def prepare_run_dir(cfg: TrainConfig) -> RunDir:
    run = RunDir(cfg.out)
    rank, _ = rank_world()
    saved = {k: v for k, v in to_dict(cfg).items() if k not in ("resume", "overwrite")}
    if run.root.exists() and any(run.root.iterdir()):
        if cfg.resume:
            old = json.loads(run.config.read_text()) if run.config.is_file() else None
            if old is None:
                raise KentropyError(f"--resume: {run.root} has no config.json (not a kentropy run)")
            diff = [k for k in saved if old.get(k) != saved[k]]
            if diff:
                raise KentropyError(f"--resume: config differs from the run's in {', '.join('--' + d.replace('_', '-') for d in diff)}")
            return run
        if not cfg.overwrite:
            raise KentropyError(f"--out {run.root}: run directory exists (use --resume or --overwrite)")
        if rank == 0:
            shutil.rmtree(run.root)
    elif cfg.resume:
        raise KentropyError(f"--resume: no run at {run.root}")
    barrier()
    if rank == 0:
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        write_json(run.config, saved)
    barrier()
    return run


def load_knowledge_and_plan(cfg: TrainConfig, run: RunDir) -> tuple[list[dict], dict | None]:
    from kentropy.knowledge import check_plan_entries, load_knowledge, load_plan, make_plan

    if not cfg.knowledge:
        return [], None
    entries = load_knowledge(cfg.knowledge)
    if cfg.plan:
        plan = load_plan(cfg.plan)
    elif run.plan.is_file():
        plan = load_plan(str(run.plan))  # resume: the plan used, exactly
    else:
        plan = make_plan(entries, rounds=cfg.rounds, interval=cfg.inject_interval)
    check_plan_entries(plan, entries, source=cfg.plan or "plan")
    return entries, plan


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) continual training; returns the summary (also written to summary.json)."""
    from kentropy.data import load_texts
    from kentropy.knowledge import item_text

    rank, world_size = rank_world()
    if cfg.batch_size % world_size or (cfg.batch_size // world_size) % cfg.micro_batch:
        raise KentropyError(f"--batch-size {cfg.batch_size} must split into {world_size} processes x whole --micro-batch {cfg.micro_batch}")
    per_rank = cfg.batch_size // world_size
    accum = per_rank // cfg.micro_batch

    ckpts = parse_checkpoints([cfg.model])
    if len(ckpts) != 1:
        raise KentropyError(f"MODEL {cfg.model}: train takes one checkpoint")
    run = prepare_run_dir(cfg)
    entries, plan = load_knowledge_and_plan(cfg, run)
    tok = load_tokenizer(ckpts[0])
    rows = pack_rows(tok, load_texts(cfg.data), cfg.seq_len)
    if len(rows) == 0:
        raise KentropyError(f"--data {cfg.data}: no full row of {cfg.seq_len} tokens")
    need = epochs_needed(len(rows), cfg.steps, cfg.batch_size)
    if need > (cfg.epochs or 1):
        raise KentropyError(f"--data {cfg.data}: {len(rows)} rows of {cfg.seq_len} tokens give {len(rows) / cfg.batch_size:.1f} steps of batch "
                            f"{cfg.batch_size} per epoch; {cfg.steps} steps need {need} epochs (pass --epochs {need} to proceed)")
    order = row_order(len(rows), need, cfg.seed)
    schedule = injection_schedule(plan, cfg.steps, cfg.batch_size)
    texts = {} if plan is None else {(i["entry"], i["variant"]): item_ids(tok, item_text(entries[i["entry"]], i["variant"]))
                                     for items in schedule.values() for i in items}

    device = pick_device(cfg.device)  # under torchrun, distributed.init() bound this rank to its own GPU
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.dtype == "bfloat16" else None

    last = run.last_checkpoint() if cfg.resume else None
    model = load_model(Checkpoint(str(last)) if last else ckpts[0], device=device)
    model.train()
    opt = make_optimizer(model, cfg)
    start = 0
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if last:
        start = load_trainer_state(last, opt)
        if rank == 0:
            _truncate_metrics(run, start - 1)
            print(f"resuming {run.root} at step {start} from {last.name}", file=sys.stderr)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model

    if rank == 0 and plan is not None and not run.plan.is_file():
        write_json(run.plan, plan)

    # before: P and D of the starting checkpoint (kept in the summary's "before", once)
    before_path = run.root / "before.json"
    if rank == 0 and not before_path.is_file():
        before = {"probes": probe_scores(model, tok, entries, plan), "downstream": downstream(model, tok, cfg)}
        write_json(before_path, before)
        _log(run, {"step": -1, "event": "before", "probes": strip_probe(before["probes"]), "downstream": before["downstream"]})
    barrier()

    bar = tqdm(range(start, cfg.steps), desc=f"train {run.root.name}", disable=rank != 0, initial=start, total=cfg.steps)
    for step in bar:
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = rows[order[step * cfg.batch_size : (step + 1) * cfg.batch_size]]  # [B, T] global batch
        items = schedule.get(step, [])
        if items:
            batch = inject(batch, [texts[(i["entry"], i["variant"])] for i in items])
        mine = batch[rank * per_rank : (rank + 1) * per_rank]
        loss_sum = torch.zeros((), device=device)
        for k in range(accum):
            x = mine[k * cfg.micro_batch : (k + 1) * cfg.micro_batch].to(device)
            sync = k == accum - 1
            ctx = ddp.no_sync() if (world_size > 1 and not sync) else contextlib.nullcontext()
            with ctx:
                with autocast or contextlib.nullcontext():
                    loss = ddp(input_ids=x, labels=x).loss / accum
                loss.backward()
            loss_sum += loss.detach()
        if world_size > 1:
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= world_size
        loss_value = float(loss_sum)
        if not math.isfinite(loss_value):
            good = run.last_checkpoint()
            raise KentropyError(f"loss became {loss_value} at step {step}; stopped; last good checkpoint: {good or 'none (rerun with a lower --lr)'}")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        record = {"step": step, "loss": loss_value, "lr": lr, "tokens_per_s": cfg.batch_size * cfg.seq_len / dt,
                  "grad_norm": float(norm) if norm is not None else None, "injected": len(items)}
        end = step == cfg.steps - 1
        if rank == 0:
            if entries and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or end):
                record["probes"] = strip_probe(probe_scores(model, tok, entries, plan))
            _log(run, record)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if (cfg.save_every and (step + 1) % cfg.save_every == 0) or end:
                save_checkpoint(run, step + 1, model, tok, opt)
        barrier()

    summary = None
    if rank == 0:
        before = json.loads(before_path.read_text())
        after = {"probes": probe_scores(model, tok, entries, plan), "downstream": downstream(model, tok, cfg)}
        summary = summarize(before, after, cfg, run)
        write_json(run.summary, summary)
    barrier()
    return summary


def summarize(before: dict, after: dict, cfg: TrainConfig, run: RunDir) -> dict:
    """P and D before and after, A = (P_after - P_before)/|P_before|*100, F = (D_before - D_after)/D_before*100."""
    from kentropy.knowledge import acquisition_from

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


def forgetting(d_before: float, d_after: float) -> float:
    """F = (D(θ_before) - D(θ_after)) / D(θ_before) * 100 (paper §4)."""
    if d_before == 0:
        raise KentropyError("D before training is 0: forgetting is undefined")
    return (d_before - d_after) / d_before * 100


def _log(run: RunDir, record: dict) -> None:
    with run.metrics.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(run: RunDir, last_step: int) -> None:
    """On resume: drop log lines of steps after the checkpoint (they will be redone)."""
    if not run.metrics.is_file():
        return
    keep = [line for line in run.metrics.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    run.metrics.write_text("".join(line + "\n" for line in keep))
