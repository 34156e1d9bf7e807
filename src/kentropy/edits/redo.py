"""Dormant-neuron recycling (ReDo, Sokar et al. 2023) from the Cbar that kentropy measures.

Neuron i of a layer is τ-dormant when its score s_i = E|h_i| / (1/m Σ_k E|h_k|) ≤ τ (Sokar et
al., Def. 3.1). E|h_i| is Cbar[i] (Eq. 2 of Kim et al.), so s_i = Cbar[i] / mean(Cbar). A
dormant neuron's input rows are re-initialised and its output column (its memory vector, a row
of V) is set to 0, so the network's function is unchanged at the moment of recycling:

    redo(model, cbar, threshold=0.1)               # in place; returns a `Recycling`

Where the rows are, per layout (the neuron map, `kentropy.models.neurons`):
- gated: row i of the gate and of the up projection (T5: wi_0 and wi_1);
- fused gate_up (Phi-3, ModernBERT): row i of both halves;
- plain: row i of the input projection and its bias entry (GPT-2's Conv1D: column i);
- mixture of experts: memory e*m + i is row i of expert e's gate and up halves and column i of
  its down projection; the score is taken within each expert, s = Cbar[e, i] / mean_k Cbar[e, k],
  so tokens not routed to e (coefficient 0 for all of e's neurons) drop out and s compares
  neurons on the tokens routed to e (weighted by the routing weight, as Cbar is). A shared expert
  is a group of its own. A group whose Cbar is all 0 (an expert no token was routed to) has no
  score: none of its neurons is recycled (so Cbar may have all-zero layers here; finite and
  non-negative it must be).

Re-initialisation draws from N(0, init_std²) (default: the model's `initializer_range`, the
std HF initialises linear weights with); bias entries become 0, as HF initialises biases.
Draw order (reproducible from the generator): layer by layer, part by part (routed experts,
then the shared expert), one [k, d] draw per input matrix (gate, then up) for the k neurons
of the part in increasing index order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kentropy.errors import ArgumentError, KentropyError
from kentropy.models.neurons import Part, check_coefficients, parts, split
from kentropy.models.registry import Layer, find_layout


def check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ArgumentError("threshold", "must be a finite number >= 0 (s_i = Cbar_i / mean(Cbar) is >= 0)", threshold)


def groups_of(layer: Layer) -> list[tuple[int, int]]:
    """(start, size) of each group the score is normalised within: the layer (dense), or each expert and the shared expert."""
    out = []
    for part in parts(layer):
        n = part.per_expert or part.size
        out += [(start, n) for start in range(part.start, part.start + part.size, n)]
    return out


def dormancy_scores(cbar: torch.Tensor, groups: list[tuple[int, int]]) -> torch.Tensor:
    """s_i = Cbar[i] / mean(Cbar of i's group) (Sokar et al., Def. 3.1). cbar: [m] -> [m] float64, NaN
    where the group's mean is 0 (no score)."""
    cbar = cbar.double().reshape(-1)
    s = torch.full_like(cbar, math.nan)
    for start, n in groups:
        part = cbar[start : start + n]
        mean = part.mean()
        if mean > 0:
            s[start : start + n] = part / mean
    return s


def dormant(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices i with s_i <= τ (NaN scores never qualify): [k] long, increasing."""
    return torch.nonzero(scores <= threshold).squeeze(1)


def init_std_of(model, init_std: float | None) -> float:
    """init_std, else the model's `initializer_range` (HF's std for linear weights)."""
    if init_std is not None:
        if not (isinstance(init_std, (int, float)) and math.isfinite(init_std) and init_std > 0):  # 0 would leave recycled neurons dead for good
            raise ArgumentError("init_std", "must be a finite number > 0", init_std)
        return float(init_std)
    cfg = model.config
    std = getattr(cfg, "initializer_range", None)
    if std is None and hasattr(cfg, "get_text_config"):
        std = getattr(cfg.get_text_config(), "initializer_range", None)
    if not isinstance(std, (int, float)):
        raise ArgumentError("init_std", f"not given, and {type(model).__name__}'s config has no initializer_range")
    return float(std)


@dataclass
class LayerRecycling:
    neurons: list[int]  # memory-vector indices recycled (e*m + i for experts)
    max_score: float | None  # the largest s_i among them
    input_norm_before: float  # Frobenius norm of the recycled input rows (bias entries included)
    input_norm_after: float
    output_norm_before: float  # of the zeroed memory vectors (after: 0)
    edits: list[tuple[Part, torch.Tensor]] = field(repr=False, default_factory=list)  # (part, local indices)


@dataclass
class Recycling:
    """What `redo` changed: per layer the recycled neurons, and where (for optimizer moments)."""

    threshold: float
    init_std: float
    family: str
    layers: list[LayerRecycling]

    @property
    def total(self) -> int:
        return sum(len(x.neurons) for x in self.layers)

    def to_json(self) -> list[dict]:
        return [{"layer": l, "neurons": x.neurons, "max_score": x.max_score, "input_norm_before": x.input_norm_before,
                 "input_norm_after": x.input_norm_after, "output_norm_before": x.output_norm_before, "output_norm_after": 0.0}
                for l, x in enumerate(self.layers)]

    def reset_moments(self, optimizer: torch.optim.Optimizer, keys=("exp_avg", "exp_avg_sq")) -> int:
        """Zero the optimizer moments of exactly the changed rows, bias entries and columns (continual
        backprop resets them with the weights). Returns how many tensors were touched."""
        touched = 0
        with torch.no_grad():
            for layer in self.layers:
                for part, local in layer.edits:
                    for site in part.sites:
                        state = optimizer.state.get(site.param)
                        if not state:
                            continue
                        for k in keys:
                            if k in state:
                                site.view(state[k])[part.where(local.to(state[k].device))] = 0
                                touched += 1
        return touched


def dormant_per_layer(model, coefficients, threshold: float) -> list[torch.Tensor]:
    """The τ-dormant neurons of every layer ([k_l] each; any number, none included)."""
    layout = find_layout(model)
    check_coefficients(layout, coefficients)
    return [dormant(dormancy_scores(c, groups_of(layer)), threshold) for layer, c in zip(layout.layers, coefficients)]


def select(model, coefficients, threshold: float) -> list[torch.Tensor]:
    """The dormant neurons of every layer ([k_l] each), checked: some neuron somewhere, and never a whole layer."""
    check_threshold(threshold)
    layout = find_layout(model)
    chosen = dormant_per_layer(model, coefficients, threshold)
    full = [l for l, (idx, layer) in enumerate(zip(chosen, layout.layers)) if idx.numel() == layer.size]
    if full:
        raise ArgumentError("threshold", f"selects every neuron of layer {full[0]} (lower it)", threshold)
    if not any(idx.numel() for idx in chosen):
        raise ArgumentError("threshold", f"selects no neuron (no s_i = Cbar_i / mean(Cbar) is <= {threshold})", threshold)
    return chosen


def _check_float(layout) -> None:
    """Re-initialising from N(0, σ²) is undefined for quantized (integer) weights: refused before any edit."""
    for l, layer in enumerate(layout.layers):
        for part in parts(layer):
            for s in part.sites:
                if not s.param.is_floating_point():
                    raise KentropyError(f"model: layer {l} has {s.param.dtype} weights; ReDo re-initialises floating-point weights only")


def redo(model, coefficients, threshold: float, init_std: float | None = None, generator: torch.Generator | None = None,
         chosen: list[torch.Tensor] | None = None) -> Recycling:
    """Recycle the τ-dormant neurons in place. coefficients: Cbar [L, m] (or a list of [m_l]) from `measure`.

    chosen: the neurons per layer, when already selected (`select` raises when τ selects none or a
    whole layer; training-time recycling passes `dormant_per_layer`, which may be empty).
    """
    layout = find_layout(model)
    std = init_std_of(model, init_std)
    _check_float(layout)
    if chosen is None:
        chosen = select(model, coefficients, threshold)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    out = []
    with torch.no_grad():
        for l, (layer, idx) in enumerate(zip(layout.layers, chosen)):
            scores = dormancy_scores(coefficients[l], groups_of(layer))
            rec = LayerRecycling([int(i) for i in idx], float(scores[idx].max()) if idx.numel() else None, 0.0, 0.0, 0.0)
            sq_in0 = sq_in1 = sq_out = 0.0
            for part, local, _ in split(layer, idx):
                for rows, bias in ((part.gate, part.gate_bias), (part.up, part.up_bias)):
                    if rows is None:
                        continue
                    v = rows.rows()
                    where = part.where(local.to(v.device))
                    sq_in0 += float(v[where].double().pow(2).sum())
                    new = torch.randn(v[where].shape, generator=gen, dtype=torch.float32) * std  # [k, d]
                    v[where] = new.to(device=v.device, dtype=v.dtype)
                    sq_in1 += float(v[where].double().pow(2).sum())
                    if bias is not None:  # bias entries become 0, as HF initialises biases
                        b = bias.rows()
                        sq_in0 += float(b[where].double().pow(2).sum())
                        b[where] = 0
                v = part.out.rows()
                where = part.where(local.to(v.device))
                sq_out += float(v[where].double().pow(2).sum())
                v[where] = 0
                rec.edits.append((part, local))
            rec.input_norm_before, rec.input_norm_after, rec.output_norm_before = map(math.sqrt, (sq_in0, sq_in1, sq_out))
            out.append(rec)
    return Recycling(threshold, std, layout.family.name, out)
