"""The paper's two outcomes of continual knowledge learning (Kim et al., ICLR 2025, §4):
acquisition A from probe scores P, forgetting F from downstream scores D."""

from __future__ import annotations

import math

from kentropy.errors import KentropyError
from kentropy.knowledge.plan import GROUPS
from kentropy.knowledge.schema import KINDS


def acquisition(p_before: float, p_after: float) -> float:
    """Knowledge acquisition A = (P(θ_after) - P(θ_before)) / |P(θ_before)| * 100 (Kim et al. 2025, §4).

    P is a mean probe log-probability; A is NaN when P(θ_before) is 0.
    """
    if p_before == 0:
        return math.nan
    return (p_after - p_before) / abs(p_before) * 100


def acquisition_from(before: dict, after: dict) -> dict:
    """A from two `probe` results: overall, per kind, and per group (groups present in both)."""
    keys = (*KINDS, "overall")
    out = {k: acquisition(before[k], after[k]) for k in keys}
    shared = [g for g in GROUPS if g in before.get("groups", {}) and g in after.get("groups", {})]
    if shared:
        out["groups"] = {g: {k: acquisition(before["groups"][g][k], after["groups"][g][k]) for k in keys} for g in shared}
    return out


def forgetting(d_before: float, d_after: float) -> float:
    """Forgetting F = (D(θ_before) - D(θ_after)) / D(θ_before) * 100 (Kim et al. 2025, §4)."""
    if d_before == 0:
        raise KentropyError("D before training is 0: forgetting is undefined")
    return (d_before - d_after) / d_before * 100
