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
`kentropy.edits.redo.redo`, `kentropy.edits.shrink_perturb.shrink_perturb`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kentropy.runtime.options import option, require, to_dict
from kentropy.errors import KentropyError
from kentropy.models.loading import gguf_fields

METHODS = ("resuscitate", "redo", "shrink-perturb")
OPTIONS = {"resuscitate": ("ratio", "amplify"), "redo": ("threshold",), "shrink-perturb": ("shrink", "perturb")}
NEEDS_CBAR = {"resuscitate", "redo"}


@dataclass
class InterveneConfig:
    """Apply a plasticity intervention (Algorithm 1, ReDo, or shrink and perturb) and save the edited model."""

    model: str = option(help="Model dir or hub id (NAME@rev for one revision).", argument=True)
    out: str = option(help="Output directory: an HF model (tokenizer included) plus intervention.json.")
    method: str = option(help="resuscitate (Algorithm 1), redo (recycle dormant neurons) or shrink-perturb.")
    data: str | None = option(None, "Documents to measure Cbar on, and H before and after (.jsonl, .txt, dataset).")
    coefficients: str | None = option(None, "Cbar from `kentropy measure --coefficients-out` (instead of measuring it on --data).")
    ratio: float | None = option(None, "resuscitate: Q, neurons at or below this quantile of each layer's Cbar are scaled, in (0, 1).")
    amplify: float | None = option(None, "resuscitate: P, multiplier mean(Cbar)/Cbar[i] * P, > 0.")
    threshold: float | None = option(None, "redo: τ, neurons with s_i = Cbar_i / mean(Cbar) <= τ are recycled (>= 0).")
    shrink: float | None = option(None, "shrink-perturb: λ in θ <- λθ + σε, in (0, 1].")
    perturb: float | None = option(None, "shrink-perturb: σ in θ <- λθ + σε, >= 0 (ε ~ N(0, init std²)).")
    init_std: float | None = option(None, "redo, shrink-perturb: std of the re-initialisation / of ε (default: the model's initializer_range).")
    seed: int = option(0, "Seed of the random draws (redo, shrink-perturb).")
    max_instances: int | None = option(None, "Use at most this many documents.")
    seq_len: int = option(1024, "Truncate each document to this many tokens.")
    batch_size: int = option(8, "Documents per forward pass.")
    activation: str = option("abs", "Coefficient magnitude: abs or relu.")
    overwrite: bool = option(False, "Replace an existing output directory.")
    device: str = option("auto", "auto, cpu, cuda, cuda:N.")
    trust_remote_code: bool = option(False, "Allow model code from the hub.")

    def __post_init__(self) -> None:
        from kentropy.io import check_out_dir

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
        if self.method == "resuscitate":
            from kentropy.edits.resuscitate import check_args

            check_args(self.ratio, self.amplify)
        elif self.method == "redo":
            from kentropy.edits.redo import check_threshold

            check_threshold(self.threshold)
        else:
            from kentropy.edits.shrink_perturb import check_args

            check_args(self.shrink, self.perturb)
        require(self, "init_std", low=0, low_open=True)
        require(self, "seed", low=0)
        require(self, "max_instances", "seq_len", "batch_size", low=0, low_open=True)
        if self.activation not in ("abs", "relu"):
            raise KentropyError(f"--activation {self.activation}: choose abs or relu")
        check_out_dir(self.out)

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
        from kentropy.edits.resuscitate import resuscitate

        done = resuscitate(model, cbar, cfg.ratio, cfg.amplify)
        return cfg.params | {"exact": done.exact, "note": done.note}, _resuscitation_layers(done)
    if cfg.method == "redo":
        from kentropy.edits.redo import redo

        done = redo(model, cbar, cfg.threshold, cfg.init_std, gen)
        return cfg.params | {"init_std": done.init_std, "seed": cfg.seed, "recycled": done.total}, done.to_json()
    from kentropy.edits.shrink_perturb import shrink_perturb

    rep = shrink_perturb(model, cfg.shrink, cfg.perturb, gen, cfg.init_std)
    return cfg.params | {"init_std": rep["init_std"], "epsilon": rep["epsilon"], "seed": cfg.seed}, rep["layers"]


def run_intervene(cfg: InterveneConfig) -> dict:
    """Cbar (read, or measured on --data), the edit, H after on the same documents; model + intervention.json atomically."""
    from kentropy.edits.session import check_out_free, entropy_fields, open_edit
    from kentropy.measurement.workflow import load_coefficients

    check_out_free(cfg.out, cfg.overwrite)
    cbar = load_coefficients(cfg.coefficients) if cfg.coefficients else None  # a bad file fails before any model loads
    e = open_edit(cfg.model, command="intervene", data=cfg.data, max_instances=cfg.max_instances, seq_len=cfg.seq_len,
                  batch_size=cfg.batch_size, activation=cfg.activation, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    if cfg.method == "redo" and cbar is not None:  # τ selecting nothing (or a whole layer) fails before measuring
        from kentropy.edits.redo import select

        select(e.model, cbar, cfg.threshold)
    before = e.measure()
    if cbar is None and before is not None:
        cbar = before.coefficients
    params, layers = apply(e.model, cfg, cbar)
    after = e.measure()
    report = {
        "method": cfg.method,
        "params": params,
        "layers": layers,
        **entropy_fields(before, after, cfg.data),
        "model": e.ckpt.name,
        "revision": e.ckpt.revision,
        **gguf_fields(e.ckpt),
        "coefficients_from": cfg.coefficients or (cfg.data if cfg.method in NEEDS_CBAR else None),
        "config": to_dict(cfg),
    }
    e.save(cfg.out, "intervention.json", report)
    return report
