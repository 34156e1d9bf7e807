"""How well EAP-IG ranks edges: its scores against exact single-edge patching on a sample of edges."""

from __future__ import annotations

import torch

from kentropy.circuits import metrics as M
from kentropy.circuits.eap import exact_edge_effects
from kentropy.circuits.graph import Graph
from kentropy.circuits.tasks import Encoded


def check_exact_edges(scores: torch.Tensor, exact: torch.Tensor, sample: torch.Tensor, graph: Graph, top_n: int) -> dict:
    """EAP-IG `scores` against `exact` patching effects on the `sample` edges ([n_up, n_down] bool).

    Spearman rank correlation of the signed values; top-n overlap: the share of the sample's
    n_s edges of largest |EAP-IG score| that are among its n_s of largest |exact effect|, with
    n_s = round(top_n * K / E) (at least 1): the circuit's share of all E edges, applied to the K sampled.
    """
    k, total = int(sample.sum()), int(graph.valid().sum())
    n_s = min(k, max(1, round(top_n * k / total)))
    a, b = scores[sample].double(), exact[sample].double()
    return {"edges": k, "of_edges": total, "top_n": n_s, "spearman": M.spearman(a, b), "top_overlap": M.top_overlap(a, b, n_s)}


def sample_edges(graph: Graph, k: int, seed: int) -> torch.Tensor:
    """[n_up, n_down] bool: k valid edges drawn uniformly without replacement (all when k >= their number)."""
    valid = graph.valid()
    idx = valid.reshape(-1).nonzero().squeeze(1)
    gen = torch.Generator().manual_seed(seed)
    pick = idx[torch.randperm(idx.numel(), generator=gen)[:k]]
    out = torch.zeros(valid.numel(), dtype=torch.bool)
    out[pick] = True
    return out.view_as(valid)


def exact_check(model, enc: Encoded, scores: torch.Tensor, graph: Graph, *, k: int, seed: int, top_n: int,
                batch_size: int = 16, metric: str = "logit", qkv_split: bool = False) -> dict:
    """`check_exact_edges` on `k` edges drawn with `seed`, patched exactly (one forward pass per edge and batch)."""
    sample = sample_edges(graph, k, seed)
    exact = exact_edge_effects(model, enc, edges=sample, batch_size=batch_size, metric=metric, qkv_split=qkv_split)
    return check_exact_edges(scores, exact, sample, graph, top_n)
