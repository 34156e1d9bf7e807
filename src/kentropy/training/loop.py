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
import shutil
import sys
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from kentropy.errors import KentropyError
from kentropy.evaluation.downstream import expand_tasks, load_tasks
from kentropy.io import append_jsonl, clean_stale_temps, make_dir, read_json, read_jsonl, write_json, write_jsonl
from kentropy.knowledge import item_text
from kentropy.models.compat import check_positions, read_config
from kentropy.models.loading import ModelRef, load_model, load_tokenizer, parse_checkpoints, pick_device
from kentropy.models.parameters import nonfinite_forward
from kentropy.runtime import rng
from kentropy.runtime.distributed import barrier, rank_world
from kentropy.training.config import TrainConfig, saved_config
from kentropy.training.corpus import inject, injection_schedule, item_ids
from kentropy.training.inputs import (check_inputs_unchanged, check_passages_fit, input_digests, load_knowledge_and_plan,
                                      prepare_run_dir, training_rows)
from kentropy.training.memory import check_memory
from kentropy.training.optimizer import lr_at, make_optimizer
from kentropy.training.plasticity import Plasticity, prepare
from kentropy.training.rundir import RunDir
from kentropy.training.scores import before_record, downstream, probe_scores, strip_probe, summarize
from kentropy.training.sharding import clip_grad_norm, reshard, shard
from kentropy.training.state import load_trainer_state, save_checkpoint, save_sharded_checkpoint
from kentropy.training.trackers import open_tracker


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
    source: str  # the checkpoint the weights came from (MODEL, or on resume the run's last checkpoint)
    tasks: dict | None = None  # --tasks as lm-eval tasks, built (and so checked) before the run directory
    sharded: bool = False  # FSDP: every forward (training, probes, evaluation) needs every rank
    plasticity: Plasticity | None = None  # --replay, --freeze-half, --recycle-every


def autocast_for(cfg: TrainConfig, device: torch.device, sharded: bool):
    """The autocast context of a training forward: bf16 on CUDA with --dtype bfloat16 (FSDP casts by its mixed-precision policy instead)."""
    bf16 = device.type == "cuda" and cfg.dtype == "bfloat16" and not sharded
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def check_finite_forward(model, row: torch.Tensor, autocast, source: str) -> None:
    """One forward of one training row ([1, T]; eval mode, no gradient, random states kept): a NaN or infinite loss
    is refused here, naming the checkpoint (and its non-finite weights), before anything is scored or written."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), rng.kept(), autocast:
            loss = model(input_ids=row, labels=row).loss
    finally:
        model.train(was_training)
    if not math.isfinite(float(loss)):
        raise nonfinite_forward(model, source, "the loss of a forward pass on a training row")


def setup(cfg: TrainConfig, show_memory: bool = True) -> Run:
    """Check every input (flags, data, knowledge, plan, model), then create or reopen the run directory.

    `show_memory` False keeps the memory estimate off stderr (a caller running many short runs says it once).
    """
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
    check_positions(ckpts[0], tok, cfg.seq_len, read_config(ckpts[0]), cfg.seq_len)  # rows are exactly --seq-len tokens
    rows, order = training_rows(cfg, tok)
    schedule = injection_schedule(plan, cfg.steps)
    passages = {(i["entry"], i["variant"]): item_ids(tok, item_text(entries[i["entry"]], i["variant"]))
                for items in schedule.values() for i in items}
    check_passages_fit(schedule, passages, cfg)
    plast = prepare(cfg.plasticity_settings, tok, schedule)
    tasks = None
    if cfg.tasks and (rank == 0 or (cfg.fsdp and world_size > 1)):  # who evaluates: rank 0, or every rank under FSDP
        tasks = load_tasks(expand_tasks(cfg.task_names), cfg.task_dir)

    device = pick_device(cfg.device)  # under torchrun, distributed.init() bound this rank to its own GPU
    last = run.last_checkpoint() if cfg.resume else None
    source = ModelRef(str(last)) if last else ckpts[0]
    check_memory(cfg, source, device, world_size, show=show_memory)
    sharded = cfg.fsdp and world_size > 1  # one process with --fsdp: unsharded, but the same (DCP) checkpoints
    # FSDP: each rank reads the full weights into CPU memory; sharding moves only its shards to the device
    model = load_model(source, device="cpu" if sharded else device)
    model.train()
    if sharded:
        shard(model, device, cfg.dtype)
    check_finite_forward(model, rows[:1].to(device), autocast_for(cfg, device, sharded), str(source))
    if sharded:
        reshard(model)

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

    opt = make_optimizer(model, cfg)
    if plast is not None:
        plast.attach(model, opt)
    rng.seed_all(cfg.seed)
    start = load_trainer_state(last, model, opt, sharded_checkpoint=cfg.fsdp) if last else 0
    if cfg.resume and rank == 0:
        _truncate_metrics(run, start - 1)  # also with no checkpoint yet: the steps logged are redone from 0
        print(f"resuming {run.root} at step {start} from {last.name if last else 'the start (no checkpoint yet)'}", file=sys.stderr)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 and not sharded else model
    if cfg.compile:
        wrapped = torch.compile(wrapped)  # same parameters: checkpoints and probes use `model` itself
    return Run(run=run, tok=tok, model=model, wrapped=wrapped, opt=opt, rows=rows, order=order,
               schedule=schedule, passages=passages, entries=entries, plan=plan, start=start, device=device,
               accum=per_rank // cfg.micro_batch, per_rank=per_rank, source=str(source), tasks=tasks, sharded=sharded,
               plasticity=plast)


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
    autocast = autocast_for(cfg, r.device, r.sharded)
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


def nonfinite_loss(r: Run, step: int, loss: float) -> KentropyError:
    """The error for a NaN or infinite loss at `step`: before any update of this process, the starting weights
    (or their forward) are to blame; after updates, the run diverged (the last good checkpoint is named)."""
    if step == r.start:
        return nonfinite_forward(r.model, r.source, f"the loss of step {step}, before any update,")
    good = r.run.last_checkpoint()
    return KentropyError(f"loss became {loss} at step {step}; stopped; last good checkpoint: {good or 'none (rerun with a lower --lr)'}")


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
        before = {"probes": probe_scores(r.model, r.tok, r.entries, r.plan),
                  "downstream": downstream(r.model, r.tok, cfg, r.tasks, name=r.source)}
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
            raise nonfinite_loss(r, step, loss)
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
        after = {"probes": probe_scores(r.model, r.tok, r.entries, r.plan),
                 "downstream": downstream(r.model, r.tok, cfg, r.tasks, name=str(r.run.checkpoint(cfg.steps)))}
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
