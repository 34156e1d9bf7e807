"""What a run measures of its model: P (probes of the injected knowledge) during the run, D (downstream
tasks) before and after, and the summary's acquisition A and forgetting F (paper §4).

`probe_scores` and `downstream` run in eval mode and hand the model back in its mode; `downstream` also
restores the RNG states lm-eval reseeds, so training continues exactly as it would without them.
"""

from __future__ import annotations

from kentropy.evaluation.downstream import evaluate, evaluate_tasks
from kentropy.evaluation.outcomes import acquisition_from, forgetting
from kentropy.knowledge import probe
from kentropy.runtime.options import to_dict
from kentropy.training.config import TrainConfig
from kentropy.training.rundir import RunDir


def probe_scores(model, tok, entries, plan) -> dict | None:
    """P of the injected knowledge (None without --knowledge)."""
    return probe(model, tok, entries, plan=plan) if entries else None


def downstream(model, tok, cfg: TrainConfig, built: dict | None = None, name: str | None = None) -> dict | None:
    """D on --tasks, with each task's per-document `rows` (F's standard error pairs before and after over them);
    `built`: the tasks as `setup` loaded them (checked before the run directory), else loaded here; `name`: the model in errors."""
    if not cfg.tasks:
        return None
    if built is not None:
        return evaluate_tasks(model, tok, built, batch_size=16, limit=cfg.eval_limit, seed=cfg.seed, rows=True, name=name)
    return evaluate(model, tok, cfg.task_names, task_dir=cfg.task_dir, limit=cfg.eval_limit, seed=cfg.seed, rows=True)


def strip_probe(p: dict | None) -> dict | None:
    """Probe scores per kind and group, without per-entry detail (for metrics.jsonl)."""
    return None if p is None else {k: v for k, v in p.items() if k != "entries"}


def strip_rows(d: dict | None) -> dict | None:
    """Downstream scores per task and D, without the per-document rows (for metrics.jsonl)."""
    if d is None:
        return None
    return {**d, "tasks": {name: {k: v for k, v in t.items() if k != "rows"} for name, t in d["tasks"].items()}}


def before_record(before: dict) -> dict:
    """The metrics.jsonl line (step -1) of the starting checkpoint's P and D."""
    return {"step": -1, "event": "before", "probes": strip_probe(before["probes"]), "downstream": strip_rows(before["downstream"])}


def summarize(before: dict, after: dict, cfg: TrainConfig, run: RunDir) -> dict:
    """P and D before and after, A = (P_after - P_before)/|P_before|*100, F = (D_before - D_after)/D_before*100."""
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
