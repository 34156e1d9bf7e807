"""Dormant-neuron recycling (ReDo, Sokar et al. 2023) from the Cbar that kentropy measures.

Neuron i of a layer is τ-dormant when its score s_i = E|h_i| / (1/m Σ_k E|h_k|) ≤ τ (Sokar et
al., Def. 3.1). E|h_i| is Cbar[i] (Eq. 2 of Kim et al.), so s_i = Cbar[i] / mean(Cbar). A
dormant neuron's input rows are re-initialised and its output column (its memory vector, a row
of V) is set to 0, so the network's function is unchanged at the moment of recycling:

    redo(model, cbar, threshold=0.1)               # in place; returns a `Recycling`

Where the rows are, per layout (`kentropy.models.registry`):
- gated: row i of the gate and of the up projection (T5: wi_0 and wi_1);
- fused gate_up (Phi-3, ModernBERT): row i of both halves;
- plain: row i of the input projection and its bias entry (GPT-2's Conv1D: column i);
- mixture of experts: memory e*m + i is row i of expert e's gate and up halves and column i of
  its down projection; the score is taken within each expert, s = Cbar[e, i] / mean_k Cbar[e, k],
  so tokens not routed to e (coefficient 0 for all of e's neurons) drop out and s compares
  neurons on the tokens routed to e (weighted by the routing weight, as Cbar is). A shared expert
  is a group of its own. A group whose Cbar is all 0 (an expert no token was routed to) has no
  score: none of its neurons is recycled.

Re-initialisation draws from N(0, init_std²) (default: the model's `initializer_range`, the
std HF initialises linear weights with); bias entries become 0, as HF initialises biases.
Draw order (reproducible from the generator): layer by layer, part by part (routed experts,
then the shared expert), one [k, d] draw per input matrix (gate, then up) for the k neurons
of the part in increasing index order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from kentropy.errors import KentropyError
from kentropy.models.registry import DenseFFN, Layer, find_layout


def check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise KentropyError(f"--threshold {threshold}: must be a finite number >= 0 (s_i = Cbar_i / mean(Cbar) is >= 0)")


def groups_of(layer: Layer) -> list[tuple[int, int]]:
    """(start, size) of each group the score is normalised within: the layer (dense), or each expert and the shared expert."""
    if not layer.moe:
        return [(0, layer.size)]
    m = layer.expert_dim
    out = [(e * m, m) for e in range(layer.n_experts)]
    if layer.shared is not None:
        out.append((layer.n_experts * m, layer.shared.size))
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


@dataclass
class Site:
    """A tensor whose neuron-indexed slices change: `view(t)` of the parameter (or of a tensor of its
    shape, such as its AdamW moments) is indexed by the neuron's local index (or (expert, index))."""

    param: torch.nn.Parameter
    view: Callable[[torch.Tensor], torch.Tensor]
    kind: str  # "in" (re-initialised row), "bias" (set to 0), "out" (memory vector, set to 0)


@dataclass
class Part:
    """One group of memory vectors of a layer: a dense FFN, the routed experts, or the shared expert."""

    start: int
    size: int
    experts: int | None  # routed experts: m per expert (index e*m + i -> (e, i)); else None
    sites: list[Site]

    def where(self, local: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (local,) if self.experts is None else (local // self.experts, local % self.experts)


def _rows(t: torch.Tensor, transposed: bool, lo: int | None = None, hi: int | None = None) -> torch.Tensor:
    v = t.t() if transposed else t
    return v if lo is None else v[lo:hi]


def _dense_sites(ffn: DenseFFN) -> list[Site]:
    spec, m = ffn.spec, ffn.size
    tr = spec.transposed
    sites = []
    if spec.up_half is not None:  # fused [gate | up]: row i of both halves
        for h in (1 - spec.up_half, spec.up_half):
            sites.append(Site(ffn.up.weight, lambda w, h=h: _rows(w, tr, h * m, (h + 1) * m), "in"))
            if getattr(ffn.up, "bias", None) is not None:
                sites.append(Site(ffn.up.bias, lambda b, h=h: b[h * m : (h + 1) * m], "bias"))
    else:
        for mod in ([ffn.gate] if ffn.gate is not None else []) + [ffn.up]:
            sites.append(Site(mod.weight, lambda w: _rows(w, tr), "in"))
            if getattr(mod, "bias", None) is not None:
                sites.append(Site(mod.bias, lambda b: b, "bias"))
    # the down projection's input dim is m: its column i (Conv1D: row i) is memory vector i
    sites.append(Site(ffn.down.weight, lambda w: _rows(w, not tr), "out"))
    return sites


def parts_of(layer: Layer) -> list[Part]:
    """Where each of the layer's memory vectors is produced and written, in memory-vector order."""
    if not layer.moe:
        return [Part(0, layer.size, None, _dense_sites(layer.dense))]
    ex, m = layer.experts, layer.expert_dim
    if ex.has_gate:  # gate_up_proj [E, 2m, h]: [gate | up]
        sites = [Site(ex.gate_up_proj, lambda w: w[:, :m], "in"), Site(ex.gate_up_proj, lambda w: w[:, m:], "in")]
    else:
        sites = [Site(ex.up_proj, lambda w: w, "in")]
    sites.append(Site(ex.down_proj, lambda w: w.transpose(1, 2), "out"))  # down_proj [E, h, m] -> [E, m, h]
    parts = [Part(0, layer.n_experts * m, m, sites)]
    if layer.shared is not None:
        parts.append(Part(layer.n_experts * m, layer.shared.size, None, _dense_sites(layer.shared)))
    return parts


def init_std_of(model, init_std: float | None) -> float:
    """--init-std, else the model's `initializer_range` (HF's std for linear weights)."""
    if init_std is not None:
        if not (math.isfinite(init_std) and init_std > 0):  # 0 would leave recycled neurons dead for good
            raise KentropyError(f"--init-std {init_std}: must be a finite number > 0")
        return float(init_std)
    cfg = model.config
    std = getattr(cfg, "initializer_range", None)
    if std is None and hasattr(cfg, "get_text_config"):
        std = getattr(cfg.get_text_config(), "initializer_range", None)
    if not isinstance(std, (int, float)):
        raise KentropyError(f"{type(model).__name__}: config has no initializer_range; pass --init-std")
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


def check_coefficients(layout, coefficients) -> None:
    want = layout.sizes
    got = [int(c.numel()) for c in coefficients] if len(coefficients) == len(want) else None
    if got != want:
        shape = tuple(coefficients.shape) if isinstance(coefficients, torch.Tensor) else [int(c.numel()) for c in coefficients]
        raise KentropyError(f"coefficients have shape {shape}, model needs {len(want)} layers of {want} memory vectors")


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
        raise KentropyError(f"--threshold {threshold}: selects every neuron of layer {full[0]} (lower it)")
    if not any(idx.numel() for idx in chosen):
        raise KentropyError(f"--threshold {threshold}: selects no neuron (no s_i = Cbar_i / mean(Cbar) is <= {threshold})")
    return chosen


def _check_float(layout) -> None:
    """Re-initialising from N(0, σ²) is undefined for quantized (integer) weights: refused before any edit."""
    for l, layer in enumerate(layout.layers):
        for part in parts_of(layer):
            for s in part.sites:
                if not s.param.is_floating_point():
                    raise KentropyError(f"layer {l}: {s.param.dtype} weights; ReDo re-initialises floating-point weights only")


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
            for part in parts_of(layer):
                local = idx[(idx >= part.start) & (idx < part.start + part.size)] - part.start
                if local.numel() == 0:
                    continue
                for s in part.sites:
                    v = s.view(s.param)
                    where = part.where(local.to(v.device))
                    old = v[where]
                    if s.kind == "out":
                        sq_out += float(old.double().pow(2).sum())
                        v[where] = 0
                        continue
                    sq_in0 += float(old.double().pow(2).sum())
                    if s.kind == "bias":
                        v[where] = 0
                        continue
                    new = torch.randn(old.shape, generator=gen, dtype=torch.float32) * std  # [k, d]
                    v[where] = new.to(device=v.device, dtype=v.dtype)
                    sq_in1 += float(v[where].double().pow(2).sum())
                rec.edits.append((part, local))
            rec.input_norm_before, rec.input_norm_after, rec.output_norm_before = map(math.sqrt, (sq_in0, sq_in1, sq_out))
            out.append(rec)
    return Recycling(threshold, std, layout.family.name, out)
