"""Circuit metrics as pure functions (Ou et al. 2025, §3-4; Hanna et al. 2024 for faithfulness)."""

from __future__ import annotations

import math

import torch

ROLE_RATIO = 10.0  # Ou et al. 2025: a head is a mover / relation head when one side dominates 10:1


def logit_difference(logits: torch.Tensor, target: torch.Tensor, corrupted_target: torch.Tensor) -> torch.Tensor:
    """[N]: logit[target] - logit[corrupted_target] per row of `logits` ([N, V]) (Ou et al. 2025's metric,
    whose code minimizes the negative: `logit_diff(loss=True)`)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, target.to(logits.device)] - logits[rows, corrupted_target.to(logits.device)]


def ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-d tensor, ties given their average rank (float64)."""
    x = x.double().flatten()
    order = torch.argsort(x, stable=True)
    r = torch.empty_like(x)
    r[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    out = r.clone()
    for v in torch.unique(x):  # ties: the mean of their ranks
        tie = x == v
        if int(tie.sum()) > 1:
            out[tie] = r[tie].mean()
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation: the Pearson correlation of the two rank vectors (average ranks for ties).

    NaN when either has fewer than 2 distinct values.
    """
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else math.nan


def top_overlap(a: torch.Tensor, b: torch.Tensor, n: int) -> float:
    """|top-n of a by |value|  &  top-n of b by |value|| / n (ties broken by position); n = 0: NaN."""
    n = min(n, a.numel())
    if n <= 0:
        return math.nan
    ta = set(torch.argsort(a.abs().flatten(), descending=True, stable=True)[:n].tolist())
    tb = set(torch.argsort(b.abs().flatten(), descending=True, stable=True)[:n].tolist())
    return len(ta & tb) / n


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
