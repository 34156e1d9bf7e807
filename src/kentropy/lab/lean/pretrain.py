"""Pretraining on the lean model with `kentropy train`'s semantics (no knowledge injection): the same
packed rows in the same order for the same seed, `lr_at`'s schedule, AdamW with `decay_groups`
(fused), the global gradient norm clipped, the mean next-token loss of each step logged; checkpoints
are HF model directories in the run directory's layout (`RunDir`).

    from kentropy.lab.lean.pretrain import pretrain
    pretrain(TrainConfig(model="init", data="corpus.txt", out="runs/x", steps=3000, ...), compile=True)

It refuses what only `kentropy train` does: --knowledge/--plan, --tasks, --resume, --fsdp, torchrun.
Runs are short, so an interrupted one is rerun (`--overwrite`), not resumed.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch

from kentropy.runtime.distributed import rank_world
from kentropy.errors import KentropyError
from kentropy.io import append_jsonl, make_dir, write_json
from kentropy.lab.lean.model import LeanLM, save_member
from kentropy.training.rundir import RunDir
from kentropy.training.config import TrainConfig, saved_config
from kentropy.training.inputs import prepare_run_dir, training_rows
from kentropy.training.optimizer import lr_at, make_optimizer

TRAINER = "kentropy.lab.lean"  # written into the run's config.json: which loop trained it


def check_pretraining(cfg: TrainConfig, where: str = "") -> None:
    """Refuse the flags of `kentropy train` that the lean loop does not implement."""
    pre = f"{where}: " if where else ""
    for flag, on in (("--knowledge", cfg.knowledge), ("--plan", cfg.plan), ("--tasks", cfg.tasks), ("--resume", cfg.resume),
                     ("--fsdp", cfg.fsdp)):
        if on:
            raise KentropyError(f"{pre}{flag}: the lean trainer pretrains only (use kentropy train)")
    if rank_world()[1] > 1:
        raise KentropyError(f"{pre}the lean trainer runs in one process (use kentropy train under torchrun)")
    if cfg.batch_size % cfg.micro_batch:
        raise KentropyError(f"{pre}--batch-size {cfg.batch_size} must split into whole --micro-batch {cfg.micro_batch}")


@dataclass
class Data:
    """A run's packed rows and their order: `rows[order[step * B : (step + 1) * B]]` is step's batch, as in train."""

    rows: torch.Tensor  # [N, seq_len]
    order: torch.Tensor  # [epochs * N]

    def batch(self, cfg: TrainConfig, step: int) -> torch.Tensor:
        return self.rows[self.order[step * cfg.batch_size : (step + 1) * cfg.batch_size]]  # [B, T]


def load_data(cfg: TrainConfig, tok, rows: torch.Tensor | None = None) -> Data:
    """cfg.data packed as `kentropy train` packs it (or `rows` already packed), ordered by cfg.seed."""
    return Data(*training_rows(cfg, tok, rows))


def save_steps(cfg: TrainConfig) -> set[int]:
    """Step counts after which train saves: every --save-every, each --save-at, and the end."""
    every = set(range(cfg.save_every, cfg.steps + 1, cfg.save_every)) if cfg.save_every else set()
    return every | set(cfg.save_at) | {cfg.steps}


def open_run(cfg: TrainConfig) -> RunDir:
    """Check --out (as train does), then create the run directory with its config."""
    import shutil

    run = RunDir(cfg.out)
    prepare_run_dir(cfg, run)
    if run.root.is_dir() and any(run.root.iterdir()):
        shutil.rmtree(run.root)  # --overwrite
    make_dir(run.checkpoints)
    write_json(run.config, {**saved_config(cfg), "trainer": TRAINER})
    return run


def compiled(fn, device: torch.device):
    """torch.compile(fn); on CPU with inductor's C++ wrapper, which calls the step's ~30 small kernels
    without a Python call each (~5% of a tiny model's step)."""
    return torch.compile(fn, options={"cpp_wrapper": True} if device.type == "cpu" else None)


def autocast(device: torch.device, dtype: str):
    bf16 = device.type == "cuda" and dtype == "bfloat16"
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def pretrain(cfg: TrainConfig, *, compile: bool | None = None, rows: torch.Tensor | None = None) -> list[dict]:
    """Train cfg.model on cfg.data for cfg.steps; returns the per-step records (also in metrics.jsonl).

    compile: torch.compile the loss and its backward (default: cfg.compile). rows: the corpus already
    packed [N, seq_len] (else cfg.data is read and packed here)."""
    from kentropy.models.loading import ModelRef, load_model, load_tokenizer, pick_device

    check_pretraining(cfg)
    ckpt = ModelRef(cfg.model)
    tok = load_tokenizer(ckpt)
    data = load_data(cfg, tok, rows)
    device = pick_device(cfg.device)
    model = LeanLM.from_hf([load_model(ckpt, device=device)], stacked=False)
    run = open_run(cfg)
    opt = make_optimizer(model, cfg)
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fn = compiled(model.loss, device) if (cfg.compile if compile is None else compile) else model.loss
    accum, saves, log, pending = cfg.batch_size // cfg.micro_batch, save_steps(cfg), [], []
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = data.batch(cfg, step)
        loss_sum = torch.zeros((), device=device)
        for k in range(accum):
            x = batch[k * cfg.micro_batch : (k + 1) * cfg.micro_batch].to(device)
            with autocast(device, cfg.dtype):
                loss = loss_fn(x.unsqueeze(0))[0] / accum  # mean over the step's tokens
            loss.backward()
            loss_sum += loss.detach()
        loss_value = float(loss_sum)
        if not math.isfinite(loss_value):
            raise KentropyError(f"loss became {loss_value} at step {step}; stopped (rerun with a lower --lr)")
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)) if cfg.grad_clip > 0 else None
        opt.step()
        opt.zero_grad(set_to_none=True)
        record = {"step": step, "loss": loss_value, "lr": lr, "tokens_per_s": cfg.batch_size * cfg.seq_len / (time.perf_counter() - t0),
                  "grad_norm": norm, "injected": 0}
        log.append(record)
        pending.append(record)
        if step + 1 in saves:  # the log up to a checkpoint is on disk before the checkpoint
            for r in pending:
                append_jsonl(run.metrics, r)
            pending = []
            save_member(model, 0, run.checkpoint(step + 1), tok)
    return log
