"""`kentropy lab`: the core study, then the optional studies its config turns on, then the report.

    kentropy lab --preset quick --out lab/        # what `make demo` runs

The core recipe is `lab/studies/core.py` (world -> tokenizer -> corpora -> pretraining -> entropy
of every checkpoint -> continual learning with injected knowledge -> resuscitation). Every stage
stands on the public commands' functions (`train`, `measure`, `probe` through `train`,
`evaluate`, `resuscitate`) and is cached by the hash of its config and code (`lab/cache.py`). An
optional study is a function of the finished core (`Context`) that returns a report `Section`;
`STUDIES` maps the config field that turns it on to it. The lab directory's layout: `lab/labdir.py`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kentropy.runtime.options import device_option, option
from kentropy.runtime.console import line
from kentropy.errors import KentropyError
from kentropy.io import write_json
from kentropy.lab.cache import Stages
from kentropy.lab.config import LabConfig, config_json, load_preset
from kentropy.lab.labdir import LabDir
from kentropy.lab.report.core import write_report
from kentropy.lab.results import Context, Section
from kentropy.lab.studies.circuits import circuits_study
from kentropy.lab.studies.core import core_plan_text, run_core
from kentropy.lab.studies.decay import decay_study, print_plan
from kentropy.lab.studies.interventions import decay_lab_arms, interventions_study
from kentropy.lab.studies.ladder import ladder_lab
from kentropy.models.loading import pick_device


@dataclass
class LabRunConfig:
    """Pretrain a tiny model on a generated world and run the whole knowledge-entropy study, with a report."""

    out: str = option(help="Lab directory (stages are cached here: a rerun resumes or costs nothing); "
                           "an existing one must be a lab directory of the same preset and config.")
    preset: str = option("quick", "smoke (<= 60 s, for tests), quick (<= 10 min on a 2-core CPU), decay (the decay study), paper (GPU-sized), interventions (quick + plasticity interventions compared), ladder (the scale ladder, one GPU, ~8 min).")
    device: str = device_option()
    report_to: str = option("none", "Also log the training stages' curves (pretraining, continual learning) to tensorboard or "
                                    "wandb, beside each run (STAGE/run/tensorboard, STAGE/run/wandb); none: metrics.jsonl only. "
                                    "Not part of any stage's cache key.")
    decay_lab: str | None = option(None, "A finished decay-study lab directory (kentropy lab --preset decay): its arms judged "
                                         "`decayed` also start every plasticity method (a preset with an interventions section).")

    def __post_init__(self) -> None:
        from kentropy.training.trackers import check_tracker

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise KentropyError(f"--device {self.device}: choose auto, cpu, cuda or cuda:N")
        check_tracker(self.report_to)  # a known tracker whose package is installed, before any stage runs


Study = Callable[[Context], Section]

# config field of LabConfig (a flag, or a section that is set) -> the study it turns on, in report order
STUDIES: dict[str, Study] = {"circuits": circuits_study, "decay": decay_study, "interventions": interventions_study}


# ---- the command -------------------------------------------------------------------------
def saved_config(cfg: LabConfig, preset: str) -> dict:
    return {"preset": preset, **config_json(cfg)}


def check_out(out: str, cfg: LabConfig, preset: str) -> None:
    """--out must be absent, empty, or a lab directory of this very preset and config (nothing is written here)."""
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise KentropyError(f"--out {out}: exists and is not a directory")
    if not root.is_dir() or not any(root.iterdir()):
        return
    saved = LabDir(root).config
    if not saved.is_file():
        raise KentropyError(f"--out {out}: a non-empty directory that is not a lab directory (no {saved.name}); choose another --out")
    try:
        old = json.loads(saved.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KentropyError(f"--out {out}: {saved.name} is not valid JSON; choose another --out") from None
    new = saved_config(cfg, preset)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) if isinstance(old, dict) else ["(not an object)"]
    if diff:
        raise KentropyError(f"--out {out}: a lab directory of another config (differs in {', '.join(diff)}); choose another --out")


def run_lab(cfg: LabConfig, out: str, device: str = "auto", preset: str = "custom", report_to: str = "none") -> dict:
    """Run (or resume) the core study and the studies the config turns on into `out`; returns the
    findings (also in out/results.json). report_to: tracker of the training stages (`kentropy train --report-to`)."""
    check_out(out, cfg, preset)
    lab = LabDir(out)
    lab.root.mkdir(parents=True, exist_ok=True)
    write_json(lab.config, saved_config(cfg, preset))
    stages = Stages(lab.root, report_to=report_to)
    if cfg.ladder is not None:  # the ladder stands alone: no core study (its path needs neither datasets nor lm-eval)
        return ladder_lab(stages, cfg, preset, device)
    line(core_plan_text(cfg, preset))  # what the design can test, before anything runs
    if cfg.decay is not None:  # the preregistered plan and its power gates, before anything runs
        print_plan(cfg.decay)
    run, done = run_core(stages, cfg, preset, device)
    ctx = Context(stages, done, run, device)
    sections = [study(ctx) for flag, study in STUDIES.items() if getattr(cfg, flag)]
    return write_report(run, sections, stages.timings)


def run_lab_command(run: LabRunConfig) -> dict:
    """`kentropy lab`: every flag and --out checked before the lab directory is made."""
    cfg = load_preset(run.preset)
    if run.decay_lab is not None:
        if cfg.interventions is None:
            raise KentropyError(f"--decay-lab: preset {run.preset} compares no interventions (use --preset interventions)")
        decay_lab_arms(run.decay_lab)  # a finished decay study, before any stage runs
        cfg.interventions.decay_lab = str(Path(run.decay_lab).resolve())
    pick_device(run.device)  # a bad --device fails before any stage runs
    check_out(run.out, cfg, run.preset)
    line(f"[lab] preset {run.preset}: {len(cfg.pretrain_seeds)} pretraining seeds x {cfg.pretrain_steps} steps, model "
         f"{cfg.layers}x{cfg.hidden}, {len(cfg.continual_at)} checkpoints x {len(cfg.seeds)} seeds of continual learning each")
    return run_lab(cfg, run.out, run.device, run.preset, run.report_to)
