"""Statistics for the paper's three findings: correlations with p-values, confidence intervals, and
their verdicts (`judge/verdicts.py`: significance at 0.05)."""

from __future__ import annotations

import math

from scipy import stats

from kentropy.lab.judge.verdicts import NOT_MEASURABLE, NOT_MEASURED, verdict, weaker

PAPER = {"r_entropy_A": 0.94, "r_entropy_F": -0.96}


def mean_ci(xs: list[float], level: float = 0.95) -> dict:
    """Mean and a t-interval; with one value the interval is undefined (null)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return {"mean": m, "lo": None, "hi": None, "n": n}
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": m, "lo": m - half, "hi": m + half, "n": n}


def pearson(x: list[float], y: list[float]) -> dict:
    """Pearson r and its two-sided p-value (n >= 3; null below, or when an input is constant)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return {"r": None, "p": None, "n": len(x)}
    r, p = stats.pearsonr(x, y)
    return {"r": float(r), "p": float(p), "n": len(x)}


def spearman(x: list[float], y: list[float]) -> dict:
    if len(x) < 3 or len(set(y)) < 2:
        return {"rho": None, "p": None, "n": len(x)}
    rho, p = stats.spearmanr(x, y)
    return {"rho": float(rho), "p": float(p), "n": len(x)}


def entropy_decay(steps: list[int], entropy: list[float]) -> dict:
    """Finding 1: knowledge entropy decays over pretraining (trained checkpoints, step > 0).

    Direction: Spearman rho < 0 and the last checkpoint below the first; significance: p < 0.05.
    Also reports the largest rise between consecutive checkpoints (non-monotonicity).
    """
    pairs = [(s, h) for s, h in zip(steps, entropy) if s > 0]
    s, h = [p[0] for p in pairs], [p[1] for p in pairs]
    rho = spearman(s, h)
    rises = [b - a for a, b in zip(h, h[1:])]
    ok = rho["rho"] is not None and rho["rho"] < 0 and h[-1] < h[0]
    v = NOT_MEASURABLE if rho["rho"] is None else verdict(ok, ok and rho["p"] < 0.05)
    return {"spearman": rho, "first": h[0], "last": h[-1], "change": h[-1] - h[0], "max_rise": max(rises, default=0.0),
            "monotone": all(r <= 0 for r in rises), "verdict": v}


def acquisition_forgetting(steps: list[int], entropy: list[float], A: list[float], F: list[float | None]) -> dict:
    """Finding 2, in its two parts (paper §4):

    - trend: later checkpoints acquire less (r(step, A) < 0) and forget more (r(step, F) > 0);
    - entropy: acquisition correlates with knowledge entropy (paper r = 0.94) and forgetting
      anti-correlates with it (paper r = -0.96).
    Each part gets its own verdict: the two can come apart when entropy does not decay.
    """

    def judge(r: dict, sign: int) -> str:
        if r["r"] is None:
            return NOT_MEASURABLE
        ok = r["r"] * sign > 0
        return verdict(ok, ok and r["p"] < 0.05)

    out = {"paper": PAPER, "r_step_A": pearson(steps, A), "r_entropy_A": pearson(entropy, A)}
    out["verdict_step_A"] = judge(out["r_step_A"], -1)
    out["verdict_A"] = judge(out["r_entropy_A"], +1)
    if all(f is not None for f in F):
        out["r_step_F"], out["r_entropy_F"] = pearson(steps, F), pearson(entropy, F)
        out["verdict_step_F"] = judge(out["r_step_F"], +1)
        out["verdict_F"] = judge(out["r_entropy_F"], -1)
    else:
        out["r_step_F"] = out["r_entropy_F"] = None
        out["verdict_step_F"] = out["verdict_F"] = NOT_MEASURED
    return out


def _improvement(base: list[float], by_amplify: dict[float, list[float]], sign: int) -> tuple[dict, str]:
    """Per P: mean (resuscitated - plain) over seeds with a paired t-test (>= 2 seeds), and the verdict:
    held if every P >= 1 moves the value in the direction `sign` (+1: up, -1: down) significantly."""
    rows = {}
    for p, vals in sorted(by_amplify.items()):
        diffs = [v - b for v, b in zip(vals, base)]
        test = stats.ttest_1samp(diffs, 0.0) if len(diffs) >= 2 and len(set(diffs)) > 1 else None
        rows[str(p)] = {"value": mean_ci(vals), "delta": mean_ci(diffs), "p": float(test.pvalue) if test else None}
    big = [r for p, r in rows.items() if float(p) >= 1]
    ok = bool(big) and all(r["delta"]["mean"] * sign > 0 for r in big)
    sig = ok and all(r["p"] is not None and r["p"] < 0.05 for r in big)
    return rows, verdict(ok, sig)


def resuscitation_helps(base_A: list[float], A: dict[float, list[float]],
                        base_F: list[float | None] | None = None, F: dict[float, list[float | None]] | None = None) -> dict:
    """Finding 3: resuscitation with P >= 1 of the final checkpoint raises acquisition A *and*
    lowers forgetting F (the paper claims both), each judged on its own.

    Per P and per quantity: the mean difference (resuscitated - plain) over seeds, with a paired
    t-test when there are >= 2 seeds. A verdict is `held` if every P >= 1 moves it the paper's way
    (A up, F down), significantly. `verdict` is the weaker of the two, for a one-line summary.
    F is `not measured` when a run has no downstream tasks.
    """
    rows_A, verdict_A = _improvement(base_A, A, +1)
    out = {"base_A": mean_ci(base_A), "by_amplify": {}, "verdict_A": verdict_A}
    f_ok = base_F is not None and F is not None and all(x is not None for x in base_F) and \
        all(x is not None for vals in F.values() for x in vals)
    if f_ok:
        rows_F, verdict_F = _improvement(base_F, F, -1)
        out["base_F"] = mean_ci(base_F)
    else:
        rows_F, verdict_F = {}, NOT_MEASURED
        out["base_F"] = None
    for p, r in rows_A.items():
        f = rows_F.get(p)
        out["by_amplify"][p] = {"A": r["value"], "delta": r["delta"], "p": r["p"],
                                "F": f["value"] if f else None, "delta_F": f["delta"] if f else None, "p_F": f["p"] if f else None}
    out["verdict_F"] = verdict_F
    out["verdict"] = weaker(verdict_A, verdict_F)
    return out
