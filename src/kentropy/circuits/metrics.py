"""Circuit metrics as pure functions (Ou et al. 2025, §3-4; Hanna et al. 2024 for faithfulness)."""

from __future__ import annotations

import math

import torch

ROLE_RATIO = 10.0  # Ou et al. 2025: a head is a mover / relation head when one side dominates 10:1


def faithfulness(circuit: float, clean: float, corrupted: float) -> float:
    """(m(circuit) - m(corrupted)) / (m(clean) - m(corrupted)): 1 for the full model, 0 for the empty circuit.

    NaN when clean and corrupted runs score the same (nothing to recover).
    """
    den = clean - corrupted
    return (circuit - corrupted) / den if den != 0 else math.nan


def hits_at_k(logits: torch.Tensor, target: torch.Tensor, k: int = 10) -> torch.Tensor:
    """[N] bool: is target[i] among the k largest of logits[i] ([N, V])? Ties count as hits."""
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[:, -1]  # [N]
    return logits.gather(1, target.view(-1, 1).to(logits.device)).squeeze(1) >= kth


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def layer_shares(downstream_layers: list[int], layers: int) -> list[float]:
    """Share of circuit edges per layer of their downstream node: `layers + 1` bins, the last for logits.

    `downstream_layers[i]` is the layer of edge i's downstream node (logits: `layers`). No
    edges: all zeros.
    """
    counts = [0] * (layers + 1)
    for l in downstream_layers:
        counts[l] += 1
    n = sum(counts)
    return [c / n if n else 0.0 for c in counts]


def classify_role(subject: float, relation: float, ratio: float = ROLE_RATIO) -> str:
    """Head role from the direct logit attribution carried from subject vs relation tokens.

    "mover" if |subject| >= ratio * |relation|, "relation" if |relation| >= ratio * |subject|,
    else "mixed" (both zero: "mixed").
    """
    s, r = abs(subject), abs(relation)
    if s == 0 and r == 0:
        return "mixed"
    if s >= ratio * r:
        return "mover"
    if r >= ratio * s:
        return "relation"
    return "mixed"
