"""The circuits study: knowledge circuits along the continual run of the final checkpoint (first seed)."""

from __future__ import annotations

import dataclasses

from kentropy.lab.report.circuits import circuits_section
from kentropy.lab.results import Context, Section
from kentropy.lab.stages.circuits import circuits_stage


def circuits_study(ctx: Context) -> Section:
    cfg = ctx.run.cfg
    base = ctx.run.continual[(ctx.run.pretraining.final.step, cfg.seeds[0])]
    result = circuits_stage(ctx.stages, cfg, dataclasses.asdict(base), ctx.done["world"], ctx.done["tokenizer"], ctx.device).result
    return Section("circuits", circuits_section(result, ctx.run.dir.figures), result)
