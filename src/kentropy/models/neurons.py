"""The neuron map: where neuron i of an FFN layer keeps its weights, for every layout of the registry.

Neuron i (memory vector i, coefficient c_i) of a layer found by `find_layout` has
- input rows: the gate row and the up row of a gated FFN, c_i = act(gate_i·x) · (up_i·x), or the
  one input row of a plain FFN, c_i = act(fc_i·x + b_i) (`up` below: the rows c_i is linear in,
  for a gated FFN; the only ones, for a plain FFN);
- an input bias entry beside each input row, where the projection has a bias;
- an output column: column i of the down projection, the memory vector that c_i multiplies.

Layouts: Linear weights [out, in] (row i of gate and up, column i of down); GPT-2's Conv1D, stored
[in, out] (column i of c_fc, row i of c_proj); a fused [gate | up] projection (Phi-3, ModernBERT:
row i of each half, the registry's `up_half` being the linear one); mixture-of-experts experts with
3-D weights (`gate_up_proj` [E, 2m, h] as [gate | up], or `up_proj` [E, m, h]; `down_proj` [E, h, m]);
and a shared expert, a dense FFN of its own.

A layer's neurons are numbered as measurement orders Cbar (`kentropy.measurement.capture`): a
dense FFN 0..m-1; a mixture-of-experts layer expert-major, e*m + i for neuron i of routed expert
e, then the shared expert's, E*m + j. Every view is neuron-major and shares the parameter's
storage, so writes reach the model:

    for part, local, sel in split(layer, idx):  # idx: [k] neuron indices of the layer
        rows = part.up.rows()                    # [n, d] (routed experts: [E, m, d])
        rows[part.where(local)] *= 2             # the up rows of neurons idx[sel], wherever they are stored
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from kentropy.errors import ArgumentError
from kentropy.models.registry import DenseFFN, Layer, Layout


@dataclass(frozen=True, eq=False)
class Site:
    """A tensor that holds one slice per neuron. `view(t)`, of the parameter or of any tensor of its
    shape (its optimizer moments), is neuron-major: [n, d] rows or [n] bias entries ([E, m, d] rows of
    routed experts)."""

    param: torch.Tensor
    view: Callable[[torch.Tensor], torch.Tensor]

    def rows(self) -> torch.Tensor:
        return self.view(self.param)


@dataclass(frozen=True, eq=False)
class Part:
    """A group of a layer's neurons stored together: a dense FFN, the routed experts, or a shared expert."""

    start: int  # its first neuron in the layer's numbering
    size: int
    per_expert: int | None  # routed experts: m, neuron start + e*m + i being row i of expert e; else None
    up: Site  # the input rows c is linear in (gated: up; fused: the up half; plain: the only input rows)
    up_bias: Site | None
    gate: Site | None  # gated FFNs only
    gate_bias: Site | None
    out: Site  # the down projection's column i as row i: [n, h] ([E, m, h])

    def where(self, local):
        """Index of local neuron(s) `local` (an int or a [k] tensor) into this part's views: (i,) or (e, i)."""
        return (local,) if self.per_expert is None else (local // self.per_expert, local % self.per_expert)

    @property
    def inputs(self) -> list[Site]:
        """The input sites, in the order edits draw for them: gate rows, gate bias, up rows, up bias."""
        return [s for s in (self.gate, self.gate_bias, self.up, self.up_bias) if s is not None]

    @property
    def sites(self) -> list[Site]:
        return self.inputs + [self.out]


def _dense_part(ffn: DenseFFN, start: int) -> Part:
    spec, m = ffn.spec, ffn.size
    tr = spec.transposed  # Conv1D [in, out]: input rows are columns of the input weight, the output column a row

    def inputs(module, half: int | None) -> tuple[Site, Site | None]:
        """Rows and bias entries of `module`, or of its half `half` (a fused [gate | up] weight)."""
        lo, hi = (None, None) if half is None else (half * m, (half + 1) * m)
        bias = getattr(module, "bias", None)
        return (Site(module.weight, lambda w: (w.t() if tr else w)[lo:hi]),
                Site(bias, lambda b: b[lo:hi]) if bias is not None else None)

    out = Site(ffn.down.weight, lambda w: w if tr else w.t())  # Linear [h, m]: column i; Conv1D [m, h]: row i
    if spec.up_half is not None:  # fused: the other half is the gate (ModernBERT's [input | gate]: its input)
        up, gate = inputs(ffn.up, spec.up_half), inputs(ffn.up, 1 - spec.up_half)
    else:
        up, gate = inputs(ffn.up, None), inputs(ffn.gate, None) if ffn.gate is not None else (None, None)
    return Part(start, m, None, *up, *gate, out)


def _experts_part(layer: Layer) -> Part:
    ex, m = layer.experts, layer.expert_dim
    out = Site(ex.down_proj, lambda w: w.transpose(1, 2))  # down_proj [E, h, m] -> [E, m, h]
    if ex.has_gate:  # gate_up_proj [E, 2m, h]: [gate | up]
        up, gate = Site(ex.gate_up_proj, lambda w: w[:, m:]), Site(ex.gate_up_proj, lambda w: w[:, :m])
    else:
        up, gate = Site(ex.up_proj, lambda w: w), None
    return Part(0, layer.n_experts * m, m, up, None, gate, None, out)  # the registry admits experts without bias only


def parts(layer: Layer) -> list[Part]:
    """The layer's groups of neurons in their numbering order: the dense FFN, or the routed experts then the shared expert."""
    if not layer.moe:
        return [_dense_part(layer.dense, 0)]
    routed = _experts_part(layer)
    return [routed] + ([_dense_part(layer.shared, routed.size)] if layer.shared is not None else [])


def split(layer: Layer, idx: torch.Tensor) -> list[tuple[Part, torch.Tensor, torch.Tensor]]:
    """The parts holding some of the neurons `idx` ([k] long, in the layer's numbering): per part, those
    neurons' local indices and which of idx they are (a [k] mask), so that `idx[sel] - part.start == local`."""
    out = []
    for part in parts(layer):
        sel = (idx >= part.start) & (idx < part.start + part.size)
        if sel.any():
            out.append((part, idx[sel] - part.start, sel))
    return out


def check_coefficients(layout: Layout, coefficients, name: str = "coefficients", *, nonzero: bool = False) -> None:
    """`coefficients` is a Cbar for this model: one vector of each layer's neuron count ([L, m], or a list of
    [m_l] where layers differ), finite and non-negative (a mean magnitude); with `nonzero`, no layer all zero.
    Errors name `name`."""
    want = layout.sizes
    if not (isinstance(coefficients, (torch.Tensor, list, tuple)) and all(isinstance(c, torch.Tensor) for c in coefficients)):
        raise ArgumentError(name, f"a {type(coefficients).__name__}; expected a tensor [L, m] or a list of [m_l] tensors")
    got = [int(c.numel()) for c in coefficients]
    if got != want:
        shape = tuple(coefficients.shape) if isinstance(coefficients, torch.Tensor) else got
        raise ArgumentError(name, f"shape {shape}; the model needs {len(want)} layers of {want} memory vectors")
    for l, c in enumerate(coefficients):
        if not c.is_floating_point():
            raise ArgumentError(name, f"layer {l} is {c.dtype}, not a float vector")
        if not torch.isfinite(c).all():
            raise ArgumentError(name, f"layer {l} holds NaN or infinite values")
        if (c < 0).any():
            raise ArgumentError(name, f"layer {l} holds negative values (Cbar is a mean magnitude)")
        if nonzero and not (c > 0).any():
            raise ArgumentError(name, f"layer {l} is all zero")
