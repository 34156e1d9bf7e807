"""The continual-learning stage: check that the knowledge fits its rows, then train with it injected
(`kentropy train`, the official protocol) from any checkpoint; A and F come from the run's summary.

The protocol puts each passage + eos at the front of its own batch row, rows truncated to
`continual_seq_len`. A passage longer than its row would lose facts its probes ask for, and
`kentropy train` refuses it; `check_knowledge_fits` says so before any training, naming the
lab config fields to change.
"""

from __future__ import annotations

import json
from pathlib import Path

from kentropy.errors import KentropyError
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import LabConfig
from kentropy.training.rundir import RunDir


def knowledge_fit(entries: list[dict], plan: dict, tok, seq_len: int) -> dict:
    """How the planned passages fit rows of `seq_len` tokens: their lengths (+ eos) and every
    (entry, variant, probe target) whose target is not in the passage text."""
    from kentropy.training.corpus import item_ids
    from kentropy.knowledge import item_text

    lengths, missing = {}, []
    for rnd in plan["schedule"]:
        for item in rnd["items"]:
            key = (item["entry"], item["variant"])
            if key in lengths:
                continue
            e = entries[item["entry"]]
            text = item_text(e, item["variant"])
            lengths[key] = len(item_ids(tok, text))
            targets = dict.fromkeys(e["mem_target"] + e["gen_target"] + e["hard_gen_target"])
            missing += [(*key, t) for t in targets if t not in text]
    return {"lengths": lengths, "longest": max(lengths.values()), "too_long": sorted(k for k, n in lengths.items() if n > seq_len),
            "missing": missing, "seq_len": seq_len}


def check_knowledge_fits(cfg: LabConfig, world: Done, tok_done: Done) -> dict:
    """Every injected passage (+ eos) fits its row and states every probe's target: else an error naming the config."""
    from transformers import AutoTokenizer

    from kentropy.knowledge import load_knowledge, load_plan

    tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
    fit = knowledge_fit(load_knowledge(world.result["knowledge"]), load_plan(world.result["plan"]), tok, cfg.continual_seq_len)
    if fit["too_long"]:
        e, v = fit["too_long"][0]
        raise KentropyError(f"lab config: continual_seq_len {cfg.continual_seq_len} is shorter than {len(fit['too_long'])} injected "
                            f"passages + eos (the longest {fit['longest']} tokens, e.g. entry {e} variant {v}); "
                            f"raise continual_seq_len or lower knowledge_facts")
    if fit["missing"]:
        e, v, t = fit["missing"][0]
        raise KentropyError(f"lab knowledge: entry {e} variant {v} does not state the probe target {t!r}")
    return fit


def continual_stage(stages: Stages, cfg: LabConfig, start: str, start_hash: str, label: str, seed: int,
                    world: Done, corpora: Done, device: str, train_options: dict | None = None) -> Done:
    """`kentropy train` from `start` on the continual corpus with injected knowledge; A and F from its summary.
    train_options: extra TrainConfig fields (a plasticity method: replay, freeze_half, recycle_every, ...)."""
    from kentropy.runtime.console import is_verbose
    from kentropy.training.config import TrainConfig
    from kentropy.training.loop import train

    conf = {"start": start_hash, "world": world.hash, "corpora": corpora.hash, "seed": seed, **{k: getattr(cfg, k) for k in (
        "continual_steps", "continual_batch", "continual_lr", "continual_seq_len", "injection_rounds")}}
    if train_options:  # only then, so that the runs without options keep their cache
        conf["train_options"] = train_options

    def fn(d: Path) -> dict:
        run = RunDir(d / "run")
        steps = cfg.continual_steps
        resume = run.last_checkpoint() is not None
        summary = train(TrainConfig(
            model=start, data=corpora.result["continual"]["path"], knowledge=world.result["knowledge"], plan=world.result["plan"],
            out=str(run.root), steps=steps, batch_size=cfg.continual_batch, micro_batch=cfg.continual_batch,
            seq_len=cfg.continual_seq_len, lr=cfg.continual_lr, eval_every=max(1, steps // 5), save_every=max(1, steps // 4),
            tasks=",".join(world.result["tasks"]), task_dir=world.result["task_dir"], seed=seed,
            resume=resume, overwrite=not resume, device=device, report_to=stages.report_to, **(train_options or {})),
            show_memory=is_verbose())
        metrics = [json.loads(x) for x in run.metrics.read_text().splitlines()]
        curve = [(r["step"], r["probes"]["overall"]) for r in metrics if r.get("probes")]
        ckpts = [str(p) for _, p in run.saved_checkpoints()]
        return {"label": label, "seed": seed, "start": start, "summary": summary, "probe_curve": curve, "checkpoints": ckpts}

    code = ("kentropy.training.loop", "kentropy.training.config", "kentropy.training.inputs", "kentropy.training.optimizer", "kentropy.training.state", "kentropy.training.scores",
            "kentropy.training.corpus", "kentropy.evaluation.downstream") + (("kentropy.training.plasticity",) if train_options else ())
    return stages.run(f"continual-{label}-seed{seed}", conf, fn, code=code)
