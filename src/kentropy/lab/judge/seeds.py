"""Seed-level inference for a change between two points of training (finding 1, a decay-study arm, a ladder
width): per-seed ΔKL, per-arm t-interval, a two-sided t-test for its direction, a minimum-effect test against
the SESOI, TOST for equivalence, Holm across arms, and the verdict (`verdicts.contrast_verdict`).

The pretraining seed is the unit. Per seed s of an arm with L layers, a contrast's change is
ΔKL_s = (H_s[from] − H_s[to]) / L = mean over layers of (KL_l[to] − KL_l[from]), KL_l = ln m − H_l,
in nats per layer (comparable across widths). Over the n seeds, with mean d̄, standard deviation
s (n − 1 in the denominator) and se = s/√n, using Student's t with n − 1 degrees of freedom:

- 95% interval: d̄ ± t_{0.975, n−1} · se;
- direction (H0: Δ = 0): p = 2 P(T > |d̄|/se);
- minimum effect (H0: Δ ≤ SESOI, H1: Δ > SESOI): p = P(T > (d̄ − SESOI)/se);
- equivalence (TOST, H0: |Δ| ≥ SESOI): p = max(P(T > (d̄ + SESOI)/se), P(T < (d̄ − SESOI)/se)).

With one seed neither the interval nor a p-value exists: those fields are None and the verdict is
`inconclusive`. With zero spread (se = 0, every seed the same Δ) the tests are taken at their limit:
t = ±∞ gives p = 0 or 1, and 0/0 (the mean exactly on H0's boundary) gives p = 1; the interval is
[d̄, d̄]. Each contrast also gives the same change in the last layer alone (`last_layer`), where the
paper's fall is largest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kentropy.errors import KentropyError
from kentropy.lab.judge.plan import AnalysisPlan, contrast_steps
from kentropy.lab.judge.verdicts import contrast_verdict

LEVEL = 0.95  # the t-interval's coverage


def _t_stat(num: float, se: float) -> float:
    """num / se, at its limit where se = 0 (nan for 0/0)."""
    if se > 0:
        return num / se
    return math.nan if num == 0 else math.copysign(math.inf, num)


def _p_greater(t: float, df: int) -> float:
    """P(T_df > t); 1 where t is undefined (0/0: no evidence against H0)."""
    from scipy import stats

    return 1.0 if math.isnan(t) else float(stats.t.sf(t, df))


def _moments(values: Sequence[float]) -> tuple[int, float, float]:
    """(n, mean, standard error with n − 1 in the variance's denominator; nan for n = 1)."""
    n = len(values)
    if n == 0:
        raise KentropyError("no values to test")
    mean = math.fsum(values) / n
    if n == 1:
        return n, mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return n, mean, math.sqrt(var / n)


def t_interval(values: Sequence[float], level: float = LEVEL) -> list[float] | None:
    """[lo, hi] = mean ± t_{(1+level)/2, n−1} · se; None for one value."""
    from scipy import stats

    n, mean, se = _moments(values)
    if n < 2:
        return None
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * se
    return [mean - half, mean + half]


def p_minimum_effect(values: Sequence[float], sesoi: float) -> float | None:
    """One-sided one-sample t-test of H1: mean > sesoi (the change is at least the smallest effect of interest);
    None for one value."""
    n, mean, se = _moments(values)
    return None if n < 2 else _p_greater(_t_stat(mean - sesoi, se), n - 1)


def p_equivalence(values: Sequence[float], sesoi: float) -> float | None:
    """TOST against ±sesoi: the larger of the one-sided p-values of H1: mean > −sesoi and
    H1: mean < +sesoi; None for one value."""
    n, mean, se = _moments(values)
    if n < 2:
        return None
    above = _p_greater(_t_stat(mean + sesoi, se), n - 1)  # H0: mean ≤ −sesoi
    below = _p_greater(_t_stat(sesoi - mean, se), n - 1)  # H0: mean ≥ +sesoi (P(T < t) = P(T > −t))
    return max(above, below)


def p_two_sided(values: Sequence[float]) -> float | None:
    """Two-sided one-sample t-test of H1: mean ≠ 0; None for one value."""
    n, mean, se = _moments(values)
    if n < 2:
        return None
    return min(1.0, 2 * _p_greater(abs(_t_stat(mean, se)), n - 1))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment, in the input's order: with the m defined p-values sorted
    p_(1) ≤ … ≤ p_(m), adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)). None entries (an arm
    with one seed) stay None and do not count in m."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def seed_delta(seed: Mapping, from_step: int, to_step: int, layers: int) -> float:
    """(H[from_step] − H[to_step]) / layers from one seed's record {"seed", "steps", "knowledge_entropy"}."""
    steps, h = list(seed["steps"]), list(seed["knowledge_entropy"])
    if len(steps) != len(h):
        raise KentropyError(f"seed {seed.get('seed')!r}: {len(steps)} steps but {len(h)} knowledge_entropy values")
    for s in (from_step, to_step):
        if s not in steps:
            raise KentropyError(f"seed {seed.get('seed')!r}: no checkpoint at step {s} (the plan's contrast step)")
    return (h[steps.index(from_step)] - h[steps.index(to_step)]) / layers


def last_layer_delta(seed: Mapping, from_step: int, to_step: int) -> float | None:
    """H_L[from_step] − H_L[to_step] of the last layer (= ΔKL of that layer) from a seed's `knowledge_entropy_per_layer`;
    None where the record has none."""
    per_layer = seed.get("knowledge_entropy_per_layer")
    if not per_layer:
        return None
    steps = list(seed["steps"])
    return per_layer[steps.index(from_step)][-1] - per_layer[steps.index(to_step)][-1]


@dataclass(frozen=True)
class ArmSeeds:
    """One arm's seeds: each record {"seed", "steps", "knowledge_entropy": [per step], ...}."""

    layers: int  # L
    steps: int  # optimizer steps of each seed's run (the plan's fractions are of this)
    seeds: Sequence[Mapping]


def contrast_records(arms: Mapping[str, ArmSeeds], plan: AnalysisPlan) -> dict[str, list[dict]]:
    """Every arm's `contrasts` records, in the plan's order, with Holm applied across arms within each contrast,
    separately to the direction, the minimum-effect and the equivalence p-values. Returns {arm: [record per
    contrast]}, each record {"name", "from_step", "to_step", "per_seed", "mean", "ci", "p_direction",
    "p_minimum_effect", "p_equivalence", the three "*_adjusted", "verdict", "last_layer"} (`last_layer`: the last
    layer's ΔKL {"per_seed", "mean", "ci"}, null where the seeds carry no per-layer entropy)."""
    names = list(arms)
    for name in names:
        if not arms[name].seeds:
            raise KentropyError(f"arm {name}: no seeds")
        if arms[name].layers < 1:
            raise KentropyError(f"arm {name}: layers must be positive, got {arms[name].layers}")
    out: dict[str, list[dict]] = {name: [] for name in names}
    tests = ("p_direction", "p_minimum_effect", "p_equivalence")
    for c in plan.contrasts:
        rows = []
        for name in names:
            arm = arms[name]
            try:
                a, b = contrast_steps(plan, arm.steps)[c.name]
                d = [seed_delta(s, a, b, arm.layers) for s in arm.seeds]
            except KentropyError as e:
                raise KentropyError(f"arm {name}: {e}") from None
            last = [last_layer_delta(s, a, b) for s in arm.seeds]
            rows.append({"name": c.name, "from_step": a, "to_step": b, "per_seed": d, "mean": math.fsum(d) / len(d),
                         "ci": t_interval(d), "p_direction": p_two_sided(d), "p_minimum_effect": p_minimum_effect(d, plan.sesoi),
                         "p_equivalence": p_equivalence(d, plan.sesoi),
                         "last_layer": None if None in last else {"per_seed": last, "mean": math.fsum(last) / len(last),
                                                                  "ci": t_interval(last)}})
        for t in tests:
            for row, adj in zip(rows, holm([r[t] for r in rows])):
                row[t + "_adjusted"] = adj
        for row in rows:
            row["verdict"] = contrast_verdict(row["mean"], *(row[t + "_adjusted"] for t in tests), plan.alpha)
        for name, row in zip(names, rows):
            out[name].append(row)
    return out


def ols_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y on x: sum (x − x̄)(y − ȳ) / sum (x − x̄)²."""
    n = len(x)
    mx, my = math.fsum(x) / n, math.fsum(y) / n
    sxx = math.fsum((a - mx) ** 2 for a in x)
    if sxx == 0:
        raise KentropyError("x does not vary: no slope")
    return math.fsum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx


def slopes_across_seeds(per_seed_x: Sequence[Sequence[float | None]], per_seed_y: Sequence[Sequence[float | None]]) -> dict:
    """Per seed the OLS slope of y on x (pairs with a None dropped; at least 2 left, x varying), then
    across seeds their mean, 95% t-interval and two-sided one-sample t-test p of mean slope = 0.
    Returns {"per_seed", "mean", "ci", "p"} (ci and p None with one seed)."""
    if len(per_seed_x) != len(per_seed_y) or not per_seed_x:
        raise KentropyError(f"need the same, positive number of seeds for x and y, got {len(per_seed_x)} and {len(per_seed_y)}")
    slopes = []
    for k, (xs, ys) in enumerate(zip(per_seed_x, per_seed_y)):
        if len(xs) != len(ys):
            raise KentropyError(f"seed {k}: {len(xs)} x values but {len(ys)} y values")
        pairs = [(a, b) for a, b in zip(xs, ys) if a is not None and b is not None]
        if len(pairs) < 2:
            raise KentropyError(f"seed {k}: {len(pairs)} complete (x, y) pairs, a slope needs 2")
        try:
            slopes.append(ols_slope([a for a, _ in pairs], [b for _, b in pairs]))
        except KentropyError as e:
            raise KentropyError(f"seed {k}: {e}") from None
    return {"per_seed": slopes, "mean": math.fsum(slopes) / len(slopes), "ci": t_interval(slopes), "p": p_two_sided(slopes)}
