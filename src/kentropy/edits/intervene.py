"""Plasticity interventions on a checkpoint, one command: Algorithm 1, ReDo, or shrink and perturb.

    kentropy intervene MODEL --method redo --threshold 0.1 --data DOCS --seed 0 --out DIR
    kentropy intervene MODEL --method shrink-perturb --shrink 0.8 --perturb 0.1 --seed 0 --out DIR
    kentropy intervene MODEL --method resuscitate --ratio 0.5 --amplify 2 --data DOCS --out DIR

DIR is an HF model directory (tokenizer included) plus `intervention.json`:
{"method", "params", "layers": [{"layer", "neurons", ...}], "knowledge_entropy_before",
"knowledge_entropy_after", ...}. H before and after are measured on --data, the same documents
both times; without --data (shrink-perturb, or Cbar from --coefficients) both are null: an
"after" is never estimated from coefficients measured on other documents.

The edits are plain functions a caller (a lab stage) can use directly: `kentropy.edits.resuscitate`,
`kentropy.edits.redo.redo`, `kentropy.edits.shrink_perturb.shrink_perturb`. `--method resuscitate` is
`kentropy resuscitate` (the same checks, the same path, `kentropy.edits.session`) with its report here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kentropy.edits.redo import check_threshold, redo, select
from kentropy.edits.resuscitate import AMPLIFY, RATIO, check_cbar, resuscitate
from kentropy.edits.resuscitate import check_args as check_resuscitate
from kentropy.edits.shrink_perturb import check_args as check_shrink_perturb
from kentropy.edits.shrink_perturb import shrink_perturb
from kentropy.edits.session import EditConfig, edit_checkpoint
from kentropy.errors import KentropyError
from kentropy.runtime.options import option, require

METHODS = ("resuscitate", "redo", "shrink-perturb")
OPTIONS = {"resuscitate": ("ratio", "amplify"), "redo": ("threshold",), "shrink-perturb": ("shrink", "perturb")}
NEEDS_CBAR = {"resuscitate", "redo"}
CHECKS = {"resuscitate": lambda cfg: check_resuscitate(cfg.ratio, cfg.amplify), "redo": lambda cfg: check_threshold(cfg.threshold),
          "shrink-perturb": lambda cfg: check_shrink_perturb(cfg.shrink, cfg.perturb)}


@dataclass(kw_only=True)
class InterveneConfig(EditConfig):
    """Apply a plasticity intervention (Algorithm 1, ReDo, or shrink and perturb) and save the edited model plus intervention.json."""

    method: str = option(help="resuscitate (Algorithm 1), redo (recycle dormant neurons) or shrink-perturb.")
    ratio: float | None = option(None, f"resuscitate: {RATIO}")
    amplify: float | None = option(None, f"resuscitate: {AMPLIFY}")
    threshold: float | None = option(None, "redo: τ, neurons with s_i = Cbar_i / mean(Cbar) <= τ are recycled (>= 0).")
    shrink: float | None = option(None, "shrink-perturb: λ in θ <- λθ + σε, in (0, 1].")
    perturb: float | None = option(None, "shrink-perturb: σ in θ <- λθ + σε, >= 0 (ε ~ N(0, init std²)).")
    init_std: float | None = option(None, "redo, shrink-perturb: std of the re-initialisation / of ε (default: the model's initializer_range).")
    seed: int = option(0, "Seed of the random draws (redo, shrink-perturb).")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise KentropyError(f"--method {self.method}: choose {', '.join(METHODS)}")
        for method, names in OPTIONS.items():
            for name in names:
                given = getattr(self, name) is not None
                if method == self.method and not given:
                    raise KentropyError(f"--method {method} needs --{name}")
                if method != self.method and given:
                    raise KentropyError(f"--{name} is an option of --method {method}, not {self.method}")
        if self.init_std is not None and self.method == "resuscitate":
            raise KentropyError("--init-std is an option of --method redo and shrink-perturb")
        if self.method in NEEDS_CBAR and self.data is None and self.coefficients is None:
            raise KentropyError(f"--method {self.method}: give --data DATA or --coefficients DIR (Cbar)")
        if self.method == "shrink-perturb" and self.coefficients is not None:
            raise KentropyError("--coefficients: shrink-perturb uses no Cbar (give --data to measure H before and after)")
        CHECKS[self.method](self)
        require(self, "init_std", low=0, low_open=True)
        require(self, "seed", low=0)
        super().__post_init__()

    @property
    def params(self) -> dict:
        return {name: getattr(self, name) for name in OPTIONS[self.method]}


def _resuscitation_layers(done) -> list[dict]:
    rows = done.to_json()["layers"]
    return [r | {"neurons": [int(i) for i in e.neurons]} for r, e in zip(rows, done.edits)]


def apply(model, cfg: InterveneConfig, cbar) -> tuple[dict, list[dict]]:
    """Edit `model` in place by cfg.method: (params as resolved, per-layer changes)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.method == "resuscitate":
        done = resuscitate(model, cbar, cfg.ratio, cfg.amplify)
        return cfg.params | {"exact": done.exact, "note": done.note}, _resuscitation_layers(done)
    if cfg.method == "redo":
        done = redo(model, cbar, cfg.threshold, cfg.init_std, gen)
        return cfg.params | {"init_std": done.init_std, "seed": cfg.seed, "recycled": done.total}, done.to_json()
    rep = shrink_perturb(model, cfg.shrink, cfg.perturb, gen, cfg.init_std)
    return cfg.params | {"init_std": rep["init_std"], "epsilon": rep["epsilon"], "seed": cfg.seed}, rep["layers"]


def check(model, cbar, cfg: InterveneConfig) -> None:
    """A Cbar file against the model, before H is measured: it fits, and (redo) τ selects some neuron and no whole layer."""
    if cfg.method == "redo":
        select(model, cbar, cfg.threshold)
    else:
        check_cbar(model, cbar)


def run_intervene(cfg: InterveneConfig) -> dict:
    """Cbar (read, or measured on --data), the edit, H after on the same documents; model + intervention.json atomically."""
    e, (params, layers), fields = edit_checkpoint(cfg, "intervene", lambda model, cbar: apply(model, cfg, cbar),
                                                  check=lambda model, cbar: check(model, cbar, cfg),
                                                  uses_cbar=cfg.method in NEEDS_CBAR)
    report = {"method": cfg.method, "params": params, "layers": layers} | fields
    e.save(cfg.out, "intervention.json", report)
    return report
