"""The circuits study: knowledge circuits along the continual run of the final checkpoint (first pretraining seed),
its findings judged across the runs it has (`judge.circuits.judge_runs`: one run is `inconclusive (one run)`)."""

from __future__ import annotations

import dataclasses

from kentropy.lab.judge.circuits import judge_runs
from kentropy.lab.report.circuits import circuits_section
from kentropy.lab.results import Context, Section
from kentropy.lab.stages.circuits import circuits_stage


def circuits_study(ctx: Context) -> Section:
    cfg = ctx.run.cfg
    base = ctx.run.continual[(ctx.run.pretraining.final.step, cfg.seeds[0])]
    stage = circuits_stage(ctx.stages, cfg, dataclasses.asdict(base), ctx.done["world"], ctx.done["tokenizer"], ctx.device).result
    result = {**stage, "seeds": [ctx.run.first.seed], "findings": judge_runs([stage["findings"]])}
    return Section("circuits", circuits_section(result, ctx.run.dir.figures), result)
