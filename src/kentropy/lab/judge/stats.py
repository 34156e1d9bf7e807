"""Statistics the findings and the report read: means with t-intervals, a seed's trend in H, the standard
errors of D and F from the downstream rows, and D against the prior-only floor. The findings themselves, their
gates and verdicts are `judge/findings.py`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from scipy import stats

from kentropy.errors import KentropyError


def mean_ci(xs: list[float], level: float = 0.95) -> dict:
    """Mean and a t-interval; with one value the interval is undefined (null)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return {"mean": m, "lo": None, "hi": None, "n": n}
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": m, "lo": m - half, "hi": m + half, "n": n}


def spearman(x: list[float], y: list[float]) -> dict:
    if len(x) < 3 or len(set(y)) < 2:
        return {"rho": None, "p": None, "n": len(x)}
    rho, p = stats.spearmanr(x, y)
    return {"rho": float(rho), "p": float(p), "n": len(x)}


def entropy_trend(steps: list[int], entropy: list[float]) -> dict:
    """One seed's knowledge entropy over its trained checkpoints (step > 0), described (no verdict: one run is no
    test): Spearman rho of H on the step with its p, the first and last H, the change, the largest rise between
    consecutive checkpoints and whether H never rose."""
    pairs = [(s, h) for s, h in zip(steps, entropy) if s > 0]
    s, h = [p[0] for p in pairs], [p[1] for p in pairs]
    rises = [b - a for a, b in zip(h, h[1:])]
    return {"spearman": spearman(s, h), "first": h[0], "last": h[-1], "change": h[-1] - h[0], "max_rise": max(rises, default=0.0),
            "monotone": all(r <= 0 for r in rises)}


def downstream_se(d: Mapping) -> float:
    """Standard error of D = mean over the T tasks of each task's score s_t on n_t rows: each score is a
    mean of 0/1 outcomes, se_t = sqrt(s_t (1 − s_t) / (n_t − 1)) (lm-eval's), tasks independent:
    se(D) = sqrt(sum_t se_t²) / T. d: `evaluate`'s {"tasks": {name: {"score", "n"}}, "D"}."""
    tasks = list(d["tasks"].values())
    var = math.fsum(t["score"] * (1 - t["score"]) / (t["n"] - 1) for t in tasks)
    return math.sqrt(var) / len(tasks)


def paired_rows(before: Mapping, after: Mapping) -> bool:
    """Whether `before` and `after` (`evaluate`'s results with `rows=True`) hold the same tasks, each with
    per-document `rows` of one length before and after: the paired estimate of SE(F) applies."""
    tb, ta = before["tasks"], after["tasks"]
    return tb.keys() == ta.keys() and all("rows" in tb[k] and "rows" in ta[k] and len(tb[k]["rows"]) == len(ta[k]["rows"])
                                          for k in tb)


def sample_cov(x: Sequence[float], y: Sequence[float]) -> float:
    """Sample covariance of equal-length x and y, n − 1 denominator (sample_cov(x, x): x's sample variance)."""
    mx, my = math.fsum(x) / len(x), math.fsum(y) / len(y)
    return math.fsum((a - mx) * (b - my) for a, b in zip(x, y)) / (len(x) - 1)


def downstream_moments(before: Mapping, after: Mapping) -> tuple[float, float, float] | None:
    """(Var(D_b), Var(D_a), Cov(D_a, D_b)) of D = the mean of K task scores, each the mean of its n_k document values x.

    Paired (`paired_rows`): Var(D) = Σ_k var_k(x) / n_k / K², Cov(D_a, D_b) = Σ_k cov_k(x_a, x_b) / n_k / K², sample
    (co)variances of the rows. Else independent: Var(D) = `downstream_se`² = Σ_k s_k (1 − s_k) / (n_k − 1) / K² from
    the scores s_k (for 0/1 rows the same variance) and Cov 0. None where a task has fewer than 2 documents."""
    if paired_rows(before, after):
        xs = [(t["rows"], after["tasks"][k]["rows"]) for k, t in before["tasks"].items()]
        if any(len(xb) < 2 for xb, _ in xs):
            return None
        k2 = len(xs) ** 2
        vb = math.fsum(sample_cov(xb, xb) / len(xb) for xb, _ in xs) / k2
        va = math.fsum(sample_cov(xa, xa) / len(xa) for _, xa in xs) / k2
        return vb, va, math.fsum(sample_cov(xa, xb) / len(xb) for xb, xa in xs) / k2
    if any(t["n"] < 2 for d in (before, after) for t in d["tasks"].values()):
        return None
    return downstream_se(before) ** 2, downstream_se(after) ** 2, 0.0


def forgetting_se(before: Mapping | None, after: Mapping | None) -> float | None:
    """Standard error of F = 100 (D_b − D_a) / D_b in points, by the delta method with r = D_a / D_b:

        SE(F)² = (100 / D_b)² · (Var(D_a) + r² Var(D_b) − 2 r Cov(D_a, D_b))

    (`downstream_moments`): paired where both carry per-document rows (`paired_rows`: the same documents scored
    before and after); else with Cov = 0, D_b and D_a taken as independent, an upper bound where the shared
    documents' outcomes covary positively. `before`, `after`: `evaluate`'s `{"tasks": {name: {"score", "n",
    "rows"?}}, "D"}`; None where either is missing, D_b is 0 or a task has fewer than 2 documents."""
    if not before or not after or before["D"] == 0:
        return None
    m = downstream_moments(before, after)
    if m is None:
        return None
    vb, va, cov = m
    r = after["D"] / before["D"]
    return 100 / before["D"] * math.sqrt(max(0.0, va + r**2 * vb - 2 * r * cov))  # max: rounding below 0 when equal


def against_floor(d_before: Sequence[float], floor: float) -> dict:
    """D before continual learning against `floor`, the D of a guess that knows only the answer priors
    (`tasks.downstream_floor`): `median` of `d_before` (`statistics.median_high`: the upper middle value of an even count),
    `floor`, `margin` = median − floor, and `above`: whether the median lies above the floor. At or below it, the
    models show no downstream knowledge beyond the priors, and F measures a shift of their preferences rather than
    a loss of knowledge."""
    if not d_before:
        raise KentropyError("against_floor: no D before continual learning")
    median = statistics.median_high(d_before)
    return {"median": median, "floor": floor, "margin": median - floor, "above": median > floor}


F_SE_PAIRED = "paired"
F_SE_BOUND = "independent upper bound"
F_SE_METHODS = {
    F_SE_PAIRED: ("delta method paired over the documents, each scored before (x_b) and after (x_a): Var(D) = sum_k var_k(x) / "
                  "n_k / K^2, Cov(D_a, D_b) = sum_k cov_k(x_a, x_b) / n_k / K^2 (sample (co)variances over the n_k documents "
                  "of each of the K tasks); SE(F)^2 = (100 / D_b)^2 (Var(D_a) + r^2 Var(D_b) - 2 r Cov(D_a, D_b)), "
                  "r = D_a / D_b"),
    F_SE_BOUND: ("delta method with D_b, D_a taken as independent: Var(D) = sum_k s_k (1 - s_k) / (n_k - 1) / K^2 per task "
                 "score s_k on n_k documents; SE(F)^2 = (100 / D_b)^2 (Var(D_a) + r^2 Var(D_b)), r = D_a / D_b (the "
                 "documents are shared, so a positive covariance is ignored: an upper bound)"),
}


def forgetting_se_method(paired: Sequence[bool]) -> dict:
    """Which estimate the standard errors of F of some runs are (`paired[i]`: run i's was paired, `paired_rows`):
    `{"estimate", "method"}`, estimate `paired` where all were, `independent upper bound` where none was (or no
    run), else the count of paired runs; method: the formula in words."""
    k, n = sum(paired), len(paired)
    if k == n > 0:
        return {"estimate": F_SE_PAIRED, "method": F_SE_METHODS[F_SE_PAIRED]}
    if k == 0:
        return {"estimate": F_SE_BOUND, "method": F_SE_METHODS[F_SE_BOUND]}
    return {"estimate": f"{F_SE_PAIRED} in {k} of {n} runs, else the {F_SE_BOUND}",
            "method": f"{F_SE_METHODS[F_SE_PAIRED]}; in runs without per-document rows the {F_SE_BOUND}: {F_SE_METHODS[F_SE_BOUND]}"}
