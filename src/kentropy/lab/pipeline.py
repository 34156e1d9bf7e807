"""The lab's recipe: world -> tokenizer -> corpora -> pretraining -> entropy of every checkpoint ->
continual learning with injected knowledge -> resuscitation -> optional studies -> report.

    kentropy lab --preset quick --out lab/        # what `make demo` runs

Every stage stands on the public commands' functions (`train`, `measure`, `probe` through
`train`, `evaluate`, `resuscitate`) and is cached by the hash of its config (`lab/stages.py`,
`lab/continual.py`). An optional study is a function of the finished core (`Context`) that
returns a report `Section`; `STUDIES` maps the config flag that turns it on to it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kentropy.config import option, to_dict
from kentropy.errors import KentropyError
from kentropy.io import write_json
from kentropy.lab.config import LabConfig, load_preset
from kentropy.lab.continual import check_knowledge_fits, continual_stage, resuscitate_stage
from kentropy.lab.results import Checkpoint, ContinualRun, LabRun, Pretraining, Resuscitated, Section
from kentropy.lab.stages import Done, Stages, corpora_stage, measure_stage, pretrain_stage, tokenizer_stage, world_stage
from kentropy.models import pick_device

LAB_CONFIG = "lab_config.json"


@dataclass
class LabRunConfig:
    """Pretrain a tiny model on a generated world and run the whole knowledge-entropy study, with a report."""

    out: str = option(help="Lab directory (stages are cached here: a rerun resumes or costs nothing); "
                           "an existing one must be a lab directory of the same preset and config.")
    preset: str = option("quick", "smoke (<= 60 s, for tests), quick (<= 10 min on a 2-core CPU), paper (GPU-sized).")
    device: str = option("auto", "auto, cpu, cuda, cuda:N.")

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise KentropyError(f"--device {self.device}: choose auto, cpu, cuda or cuda:N")


# ---- optional studies --------------------------------------------------------------------
@dataclass
class Context:
    """What an optional study may use: the stage cache, the core's finished stages by name
    (world, tokenizer, corpora, pretrain, measure), the core's typed results, the device."""

    stages: Stages
    done: dict[str, Done]
    run: LabRun
    device: str


Study = Callable[[Context], Section]


def circuits_study(ctx: Context) -> Section:
    """Knowledge circuits along the continual run of the final checkpoint (first seed)."""
    from kentropy.lab.circuits_stage import circuits_section, circuits_stage

    cfg = ctx.run.cfg
    base = ctx.run.continual[(ctx.run.pretraining.final.step, cfg.seeds[0])]
    result = circuits_stage(ctx.stages, cfg, dataclasses.asdict(base), ctx.done["world"], ctx.done["tokenizer"], ctx.device).result
    return Section("circuits", circuits_section(result, ctx.run.figures), result)


def decay_study(ctx: Context) -> Section:
    """The decay study: arms pretrained into the paper's regime, their entropy trajectories and verdicts,
    then continual learning from the checkpoints of the arms that decay (lab/decay.py, lab/decay_loop.py)."""
    from kentropy.lab.decay import decay_config, run_decay_study
    from kentropy.lab.decay_loop import close_the_loop, loop_section
    from kentropy.lab.decay_report import decay_section

    cfg = ctx.run.cfg
    dcfg = decay_config(cfg.decay, "lab config: decay")
    result, pretrains = run_decay_study(ctx.stages, cfg, dcfg, ctx.device)
    result["loop"] = close_the_loop(ctx.stages, cfg, dcfg, result, pretrains, ctx.done["world"], ctx.done["corpora"], ctx.device)
    return Section("decay_study", decay_section(result, ctx.run.figures) + loop_section(result["loop"]), result)


# config field of LabConfig (a flag, or a section that is set) -> the study it turns on, in report order
STUDIES: dict[str, Study] = {"circuits": circuits_study, "decay": decay_study}


# ---- the recipe --------------------------------------------------------------------------
def nearest(checkpoints: list[Checkpoint], steps: int, fraction: float) -> Checkpoint:
    return min((c for c in checkpoints if c.step > 0), key=lambda c: abs(c.step - fraction * steps))


def saved_config(cfg: LabConfig, preset: str) -> dict:
    return {"preset": preset, **to_dict(cfg)}


def check_out(out: str, cfg: LabConfig, preset: str) -> None:
    """--out must be absent, empty, or a lab directory of this very preset and config (nothing is written here)."""
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise KentropyError(f"--out {out}: exists and is not a directory")
    if not root.is_dir() or not any(root.iterdir()):
        return
    saved = root / LAB_CONFIG
    if not saved.is_file():
        raise KentropyError(f"--out {out}: a non-empty directory that is not a lab directory (no {LAB_CONFIG}); choose another --out")
    try:
        old = json.loads(saved.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KentropyError(f"--out {out}: {LAB_CONFIG} is not valid JSON; choose another --out") from None
    new = saved_config(cfg, preset)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) if isinstance(old, dict) else ["(not an object)"]
    if diff:
        raise KentropyError(f"--out {out}: a lab directory of another config (differs in {', '.join(diff)}); choose another --out")


def run_lab(cfg: LabConfig, out: str, device: str = "auto", preset: str = "custom") -> dict:
    """Run (or resume) the whole study into `out`; returns the findings (also in out/results.json)."""
    from kentropy.lab.report import write_report

    check_out(out, cfg, preset)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / LAB_CONFIG, saved_config(cfg, preset))
    stages = Stages(root)
    world = world_stage(stages, cfg)
    tok = tokenizer_stage(stages, cfg)
    check_knowledge_fits(cfg, world, tok)  # before any training: every passage fits its row
    corpora = corpora_stage(stages, cfg, tok)
    pre = pretrain_stage(stages, cfg, tok, corpora, device)
    meas = measure_stage(stages, cfg, pre, corpora, device)
    pretraining = Pretraining.from_json(pre.result)

    starts: list[Checkpoint] = []
    for f in cfg.continual_at:
        c = nearest(pretraining.checkpoints, pretraining.steps, f)
        if c not in starts:
            starts.append(c)
    continual = {}
    for c in starts:
        for seed in cfg.seeds:
            done = continual_stage(stages, cfg, c.path, f"{pre.hash}/{c.step}", f"step{c.step}", seed, world, corpora, device)
            continual[(c.step, seed)] = ContinualRun(**done.result)

    resuscitated = {}
    for p in cfg.resuscitate_amplify:
        r = resuscitate_stage(stages, cfg, pretraining.final.path, pre, corpora, p, device)
        resuscitated[p] = Resuscitated(p, r.result["path"], r.result["report"])
        for seed in cfg.seeds:
            done = continual_stage(stages, cfg, r.result["path"], r.hash, f"resuscitated-P{p:g}", seed, world, corpora, device)
            resuscitated[p].runs[seed] = ContinualRun(**done.result)

    any_run = next(iter(continual.values()))
    run = LabRun(cfg=cfg, preset=preset, root=root, world=world.result, pretraining=pretraining, entropy=meas.result["results"],
                 starts=starts, continual=continual, resuscitated=resuscitated, continual_config=any_run.summary["config"])
    ctx = Context(stages, {"world": world, "tokenizer": tok, "corpora": corpora, "pretrain": pre, "measure": meas}, run, device)
    sections = [study(ctx) for flag, study in STUDIES.items() if getattr(cfg, flag)]
    run.timings = stages.timings
    return write_report(run, sections)


def run_lab_command(run: LabRunConfig) -> dict:
    """`kentropy lab`: every flag and --out checked before the lab directory is made."""
    cfg = load_preset(run.preset)
    pick_device(run.device)  # a bad --device fails before any stage runs
    check_out(run.out, cfg, run.preset)
    print(f"[lab] preset {run.preset}: {cfg.pretrain_steps} pretraining steps, model {cfg.layers}x{cfg.hidden}, "
          f"{len(cfg.continual_at)} checkpoints x {len(cfg.seeds)} seeds of continual learning", file=sys.stderr)
    return run_lab(cfg, run.out, run.device, run.preset)
