"""Statistics for the paper's three findings: confidence intervals, tests and their verdicts
(`judge/verdicts.py`: significance at 0.05).

The core study's unit is the pretraining seed (`judge/seeds.py`): finding 1 is a per-seed ΔKL tested
across seeds; findings 2a-2d are per-seed slopes (A or F on the step or on H over the seed's starting
checkpoints) tested across seeds, so a correlation over the checkpoints of one run is never `held` (one
seed: `inconclusive`); finding 3 is judged only where resuscitation raised the measured H
(`judge/manipulation.py`), else `not tested`. The Pearson correlations below serve the decay study's loop.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from scipy import stats

from kentropy.errors import KentropyError
from kentropy.lab.judge.manipulation import raised_entropy
from kentropy.lab.judge.plan import AnalysisPlan, Contrast
from kentropy.lab.judge.seeds import ArmSeeds, compare_to_paper, contrast_records, p_two_sided, slopes_across_seeds, t_interval
from kentropy.lab.judge.verdicts import INCONCLUSIVE, NOT_MEASURABLE, NOT_MEASURED, NOT_TESTED, verdict, weaker

PAPER = {"r_entropy_A": 0.94, "r_entropy_F": -0.96}
ALPHA = 0.05


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


# ---- the core study: pretraining seeds as the unit -----------------------------------------
CORE_CONTRAST = "late half"  # finding 1: H at 50% of pretraining vs at 100%, as the decay study's primary contrast


def core_plan(cfg) -> AnalysisPlan:
    """Finding 1's plan, fixed by the config before anything runs: ΔKL per layer from 50% to 100% of
    pretraining, TOST against ±`decay_sesoi`, α = 0.05 (one study: Holm over one test changes nothing)."""
    return AnalysisPlan((Contrast(CORE_CONTRAST, 0.5, 1.0),), CORE_CONTRAST, cfg.decay_sesoi, ALPHA)


def decay_across_seeds(seeds: Sequence[Mapping], layers: int, ffn_dim: int, steps: int, plan: AnalysisPlan) -> dict:
    """Finding 1 across pretraining seeds: per seed ΔKL = (H[from] − H[to]) / L at the plan's steps, then
    the mean, 95% t-interval, one-sided decay p and TOST p, and the verdict (decayed, no decay, rose,
    inconclusive; one seed: inconclusive), with the effect beside OLMo-1B's. seeds: {"seed", "steps",
    "knowledge_entropy"} each."""
    rec = contrast_records({"core": ArmSeeds(layers, steps, list(seeds))}, plan)["core"][0]
    return rec | {"paper": compare_to_paper(rec["mean"], layers, ffn_dim)}


def seed_slopes(per_seed_x: Sequence[Sequence[float]], per_seed_y: Sequence[Sequence[float | None]], sign: int) -> dict:
    """Findings 2a-2d: per pretraining seed the least-squares slope of y on x over its starting
    checkpoints, then across seeds the mean, 95% t-interval and two-sided t-test p (`slopes_across_seeds`).

    Verdict: `not measured` if y is missing, `not measurable` with fewer than 2 starting checkpoints a seed,
    `inconclusive` with one seed (a trend over the checkpoints of one run is no replication), else `held`
    if the mean slope has the paper's sign (`sign` +1 or −1) with p < 0.05, `direction only` if the sign
    only, `did not hold` otherwise."""
    n_seeds = len(per_seed_x)
    if any(v is None for ys in per_seed_y for v in ys):
        return {"per_seed": None, "mean": None, "ci": None, "p": None, "seeds": n_seeds, "verdict": NOT_MEASURED}
    if any(len(set(xs)) < 2 for xs in per_seed_x):
        return {"per_seed": None, "mean": None, "ci": None, "p": None, "seeds": n_seeds, "verdict": NOT_MEASURABLE}
    out = slopes_across_seeds(per_seed_x, per_seed_y) | {"seeds": n_seeds}
    if n_seeds < 2:
        return out | {"verdict": INCONCLUSIVE}
    ok = out["mean"] * sign > 0
    return out | {"verdict": verdict(ok, ok and out["p"] < ALPHA)}


def findings_2(per_seed: Sequence[Mapping]) -> dict:
    """Findings 2a-2d (and the raw ΔP = P_after − P_before on H) from each pretraining seed's starting
    checkpoints: per_seed [{"step": [..], "knowledge_entropy": [..], "A": [..], "F": [..], "dP": [..]}]."""
    x = {k: [r[k] for r in per_seed] for k in ("step", "knowledge_entropy")}
    y = {k: [r[k] for r in per_seed] for k in ("A", "F", "dP")}
    out = {"slope_A_on_step": seed_slopes(x["step"], y["A"], -1),  # 2a: later checkpoints acquire less
           "slope_F_on_step": seed_slopes(x["step"], y["F"], +1),  # 2b: and forget more
           "slope_A_on_H": seed_slopes(x["knowledge_entropy"], y["A"], +1),  # 2c: paper r = 0.94
           "slope_F_on_H": seed_slopes(x["knowledge_entropy"], y["F"], -1),  # 2d: paper r = −0.96
           "slope_dP_on_H": seed_slopes(x["knowledge_entropy"], y["dP"], +1),
           "paper": PAPER}
    # the four verdicts by the names every summary reads
    return out | {"verdict_step_A": out["slope_A_on_step"]["verdict"], "verdict_step_F": out["slope_F_on_step"]["verdict"],
                  "verdict_A": out["slope_A_on_H"]["verdict"], "verdict_F": out["slope_F_on_H"]["verdict"]}


def _across(values: Sequence[float], sign: int) -> dict:
    """Mean, t-interval and two-sided p over seeds, and the verdict (one seed: inconclusive)."""
    out = {"per_seed": list(values), "mean": math.fsum(values) / len(values), "ci": t_interval(values), "p": p_two_sided(values)}
    if len(values) < 2:
        return out | {"verdict": INCONCLUSIVE}
    ok = out["mean"] * sign > 0
    return out | {"verdict": verdict(ok, ok and out["p"] < ALPHA)}


def resuscitation_findings(records: Sequence[Mapping]) -> dict:
    """Finding 3: resuscitation of the final checkpoint raises acquisition (ΔA > 0) and lowers forgetting
    (ΔF < 0), Δ = resuscitated − plain, per pretraining seed, tested across seeds.

    records: per (pretraining seed, amplify) {"seed", "amplify", "H_before", "H_after", "delta_A", "delta_F"}.
    Each record gets `tested` = the measured H rose (`raised_entropy`). An amplification is judged only if
    H rose in every seed; otherwise its verdicts are `not tested` (the numbers stay). verdict_A, verdict_F:
    the weakest over the amplifications; `verdict`: the weaker of the two."""
    rows = [dict(r, tested=raised_entropy(r["H_before"], r["H_after"])) for r in records]
    by_p: dict[float, list[dict]] = {}
    for r in rows:
        by_p.setdefault(r["amplify"], []).append(r)
    amplify = []
    for p, rs in sorted(by_p.items()):
        entry = {"amplify": p, "tested_seeds": [r["seed"] for r in rs if r["tested"]],
                 "untested_seeds": [r["seed"] for r in rs if not r["tested"]]}
        if entry["untested_seeds"]:
            entry |= {"delta_A": None, "delta_F": None, "verdict_A": NOT_TESTED, "verdict_F": NOT_TESTED}
        else:
            entry["delta_A"] = _across([r["delta_A"] for r in rs], +1)
            entry["verdict_A"] = entry["delta_A"]["verdict"]
            if any(r["delta_F"] is None for r in rs):
                entry |= {"delta_F": None, "verdict_F": NOT_MEASURED}
            else:
                entry["delta_F"] = _across([r["delta_F"] for r in rs], -1)
                entry["verdict_F"] = entry["delta_F"]["verdict"]
        amplify.append(entry)
    if not amplify:
        raise KentropyError("resuscitation: no records to judge")
    vA, vF = weaker(*[a["verdict_A"] for a in amplify]), weaker(*[a["verdict_F"] for a in amplify])
    return {"resuscitation": rows, "by_amplify": amplify, "verdict_A": vA, "verdict_F": vF, "verdict": weaker(vA, vF)}


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
