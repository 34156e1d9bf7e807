"""Intervals for knowledge entropy: a bootstrap over measurement documents.

H(θ) is a smooth function of Cbar, the mean over documents of each document's mean |c|
(Eq. 2). Resampling documents with replacement and recomputing H gives its sampling
distribution; resampling the *same* documents at every checkpoint of a run (a paired
bootstrap) gives intervals for changes between checkpoints, where document effects cancel.
The per-document coefficients come from the measuring forward itself:

    m = measure_ids(model, ids, pad_id, instances=True)        # m.instance_coefficients: [N, L, m]
    draws = bootstrap_entropy([inst_a, inst_b], n_boot=1000, seed=0)   # [2, n_boot], paired
    lo, hi = percentile_interval(draws[1] - draws[0])
"""

from __future__ import annotations

import torch

from kentropy.measurement.entropy import knowledge_entropy


def bootstrap_entropy(instances: list[torch.Tensor], n_boot: int = 1000, seed: int = 0) -> torch.Tensor:
    """H of every checkpoint under `n_boot` resamples of the documents: [checkpoints, n_boot].

    instances: one [N, L, m] tensor per checkpoint, the same N documents in the same order; every
    checkpoint is resampled with the same document indices (paired), so differences are paired too.
    """
    n = instances[0].shape[0]
    if any(x.shape[0] != n for x in instances):
        raise ValueError("every checkpoint needs the same documents")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=g)  # [n_boot, N]
    counts = torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float64))
    out = []
    for x in instances:
        cbar = torch.einsum("bn,nlm->blm", counts / n, x)  # resampled Cbar: [n_boot, L, m]
        out.append(knowledge_entropy(cbar))  # Eq. 2 per resample: [n_boot]
    return torch.stack(out)


def percentile_interval(draws: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap draws (percentile method)."""
    q = torch.quantile(draws.double(), torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(q[0]), float(q[1])
