"""A run's inputs, checked before its run directory exists: --out against --resume and --overwrite, the
content of the input files (a resume finds them unchanged), the corpus packed into rows, the knowledge
and its injection plan, and every injected passage fitting its row.
"""

from __future__ import annotations

import os
import sys

import torch

from kentropy.errors import KentropyError
from kentropy.io import content_digest, read_json
from kentropy.knowledge import check_plan_entries, load_knowledge, load_plan, make_plan
from kentropy.measurement.documents import load_texts
from kentropy.training.config import TrainConfig, saved_config
from kentropy.training.corpus import epochs_needed, injected_lengths, pack_rows, row_order
from kentropy.training.rundir import RunDir

INPUT_FILES = ("data", "knowledge", "plan", "replay")  # flags whose files' content a resume must find unchanged
PATHS = INPUT_FILES + ("model", "task_dir", "out")  # path flags: each recorded resolved, as well as typed


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


def input_digests(cfg: TrainConfig) -> dict:
    """{flag: {"path", "resolved", "sha256"}} of the run's path flags (sha256 of the input files; None for a
    dataset or hub name; not taken of --model, whose weights may be large, nor of --task-dir, whose YAMLs a moved
    lab points anew, nor of --out)."""
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


def training_rows(cfg: TrainConfig, tok, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cfg.data packed into rows of cfg.seq_len tokens (or `rows`, already packed) and the order they are read in:
    `rows[order[step * B : (step + 1) * B]]` is step's batch. Refuses data too short for cfg.steps in cfg.epochs."""
    if rows is None:
        rows = pack_rows(tok, load_texts(cfg.data), cfg.seq_len)
    if len(rows) == 0:
        raise KentropyError(f"--data {cfg.data}: no full row of {cfg.seq_len} tokens")
    need = epochs_needed(len(rows), cfg.steps, cfg.batch_size)
    if need > (cfg.epochs or 1):
        raise KentropyError(f"--data {cfg.data}: {len(rows)} rows of {cfg.seq_len} tokens give {len(rows) / cfg.batch_size:.1f} steps of batch "
                            f"{cfg.batch_size} per epoch; {cfg.steps} steps need {need} epochs (pass --epochs {need} to proceed)")
    return rows, row_order(len(rows), need, cfg.seed)


def make_plan_for(cfg: TrainConfig, entries: list[dict]) -> dict:
    """The paper's plan for `entries`, its rounds fitted to --steps: round r in step I·r - 1, the last
    on the final step. --steps that is not --rounds x --inject-interval gets interval steps/rounds."""
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
    """--knowledge's entries and the plan that injects them: --plan, the run's own on resume, or the paper's."""
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
