"""Mechanism diagnostics of knowledge entropy, per layer: how far each layer's coefficient
distribution is from uniform and where its mass sits (from Cbar), and how evenly the FFN's
weights are spread over its neurons (from the weights, through the neuron map of `kentropy.models`).

    cbar = measure(...).coefficients           # [L, m], or a list of [m_l]
    diag = cbar_diagnostics(cbar)              # {"kl_to_uniform": [L], "top1_share": [L], ...}
    norms = weight_norm_summary(neuron_weight_norms(model))

Diagnostics that need the coefficients position by position (max/median of |c|, the share of
sum |c| at the first position) need a capture hook and are not here.
"""

from __future__ import annotations

import math

import torch

from kentropy.measurement import entropy as E
from kentropy.models.neurons import parts
from kentropy.models.registry import Layer, find_layout

DORMANT = 0.1  # neuron i is dormant when Cbar_i < DORMANT * mean(Cbar) (ReDo's score s_i = Cbar_i / mean)


def kl_to_uniform(cbar: torch.Tensor) -> torch.Tensor:
    """KL_l = KL(p_l ‖ uniform) = ln m − H_l (H_l of Eq. 2), along the last dim. cbar: [..., m] -> [...]."""
    return math.log(cbar.shape[-1]) - E.knowledge_entropy_per_layer(cbar)


def top_share(cbar: torch.Tensor, k: int) -> torch.Tensor:
    """The share of Cbar held by its k largest entries (all of them where m < k). cbar: [..., m] -> [...]."""
    p = E.distribution(cbar)
    return p.topk(min(k, p.shape[-1]), dim=-1).values.sum(dim=-1)


def dormant_fraction(cbar: torch.Tensor, tau: float = DORMANT) -> torch.Tensor:
    """The fraction of neurons with Cbar_i < tau * mean_i Cbar_i. cbar: [..., m] -> [...]."""
    return (cbar < tau * cbar.mean(dim=-1, keepdim=True)).double().mean(dim=-1)


def cbar_diagnostics(cbar: torch.Tensor | list[torch.Tensor]) -> dict[str, list[float]]:
    """Per layer: KL to uniform (nats), top-1 and top-5 share of Cbar, dormant fraction.

    cbar: [L, m], or one [m_l] per layer where layers differ in size (mixture-of-experts models).
    """
    layers = list(cbar) if isinstance(cbar, (list, tuple)) else list(cbar.unbind(0))
    rows = [(kl_to_uniform(c.double()), top_share(c.double(), 1), top_share(c.double(), 5), dormant_fraction(c.double()))
            for c in layers]
    keys = ("kl_to_uniform", "top1_share", "top5_share", "dormant_fraction")
    return {k: [float(r[i]) for r in rows] for i, k in enumerate(keys)}


def _row_norms(w: torch.Tensor) -> torch.Tensor:
    """‖w[..., i, :]‖ for each row of a neuron-major view ([m, d] or [E, m, d]) -> [m] or [E, m]."""
    return w.detach().double().norm(dim=-1)


def _layer_norms(layer: Layer) -> torch.Tensor:
    """‖w_in,i‖ · ‖w_out,i‖ per neuron of the layer, in Cbar's order (routed experts' neurons, then the shared expert's)."""
    out = []
    for part in parts(layer):
        norm_in = _row_norms(part.up.rows())
        if part.gate is not None:
            norm_in = torch.hypot(norm_in, _row_norms(part.gate.rows()))
        out.append((norm_in * _row_norms(part.out.rows())).reshape(-1))
    return torch.cat(out)


def neuron_weight_norms(model: torch.nn.Module) -> list[torch.Tensor]:
    """Per layer, per neuron i: ‖w_in,i‖ · ‖w_out,i‖ (float64), [m_l] each, in Cbar's order.

    w_out,i is the down projection's column i (the memory vector neuron i writes). w_in,i is the
    input-side weight that produces coefficient i: the input row of a plain FFN, and for a gated FFN
    the gate row and the up row together, ‖w_in,i‖ = sqrt(‖gate_i‖² + ‖up_i‖²) (the Euclidean norm
    of all of neuron i's input weights, the rows ReDo re-initialises). Biases are not included.
    """
    return [_layer_norms(layer) for layer in find_layout(model).layers]


def weight_norm_summary(norms: list[torch.Tensor]) -> dict[str, list[float]]:
    """Per layer: the mean of the per-neuron norms, their coefficient of variation (population
    standard deviation / mean) and min / max."""
    out: dict[str, list[float]] = {"mean": [], "cv": [], "min_over_max": []}
    for v in norms:
        v = v.double()
        mean = v.mean()
        out["mean"].append(float(mean))
        out["cv"].append(float(v.std(correction=0) / mean))
        out["min_over_max"].append(float(v.min() / v.max()))
    return out
