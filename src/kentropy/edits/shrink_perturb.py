"""Shrink and perturb (Ash & Adams 2020): θ ← λθ + σε on every weight matrix, ε from the init distribution.

    shrink_perturb(model, shrink=0.5, perturb=0.1, generator=torch.Generator().manual_seed(0))

Weight matrices are the parameters of two or more dimensions (mixture-of-experts weights
[E, ., .] included), except embeddings: token and position embeddings (`nn.Embedding`) and an
output head tied to them (an untied head is a weight matrix, as in weight decay). Norms and
biases (1-D) are left alone, as OLMo leaves them out of weight decay. ε ~ N(0, initializer_range²) elementwise (HF's init for linear weights), drawn
in float32 from the generator in parameter order, one draw per matrix (none when σ = 0, so
σ = 0 gives exactly λθ). `layers` in the report: one entry per block (the parameter name up to
its first numeric index; `layer` counts those blocks, null for matrices outside any block).
"""

from __future__ import annotations

import math
import re

import torch

from kentropy.edits.redo import init_std_of
from kentropy.errors import ArgumentError
from kentropy.models.parameters import weight_matrices


def check_args(shrink: float, perturb: float) -> None:
    if not (isinstance(shrink, (int, float)) and math.isfinite(shrink) and 0 < shrink <= 1):  # NaN fails both
        raise ArgumentError("shrink", "must be in (0, 1]", shrink)
    if not (isinstance(perturb, (int, float)) and math.isfinite(perturb) and perturb >= 0):
        raise ArgumentError("perturb", "must be a finite number >= 0", perturb)


_BLOCK = re.compile(r"\.(\d+)\.")


def _block_of(name: str) -> str:
    """The block a parameter belongs to: its name up to the first numeric index (`model.layers.3`), else `other`."""
    m = _BLOCK.search(name)
    return name[: m.end() - 1] if m else "other"


def shrink_perturb(model, shrink: float, perturb: float, generator: torch.Generator | None = None,
                   init_std: float | None = None) -> dict:
    """Apply θ ← λθ + σε in place (λ = shrink, σ = perturb). Returns per block the matrices changed and
    their Frobenius norm before and after; `init_std` overrides the model's initializer_range."""
    check_args(shrink, perturb)
    std = init_std_of(model, init_std) if perturb else None  # σ = 0 draws nothing and needs no init std
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    blocks: dict[str, dict] = {}
    with torch.no_grad():
        for name, p in weight_matrices(model):
            b = blocks.setdefault(_block_of(name), {"matrices": [], "sq_before": 0.0, "sq_after": 0.0})
            b["sq_before"] += float(p.double().pow(2).sum())
            if perturb:
                eps = torch.randn(p.shape, generator=gen, dtype=torch.float32) * std
                p.copy_(shrink * p.float() + perturb * eps.to(p.device))
            else:
                p.mul_(shrink)  # exactly λθ in the parameter's dtype
            b["matrices"].append(name)
            b["sq_after"] += float(p.double().pow(2).sum())
    numbered = [b for b in blocks if b != "other"]
    layers = [{"layer": numbered.index(k) if k in numbered else None, "block": k, "neurons": None, "matrices": b["matrices"],
               "norm_before": math.sqrt(b["sq_before"]), "norm_after": math.sqrt(b["sq_after"])}
              for k, b in blocks.items()]
    return {"shrink": shrink, "perturb": perturb, "init_std": std,
            "epsilon": f"N(0, {std:g}^2) elementwise" if perturb else None, "layers": layers}
