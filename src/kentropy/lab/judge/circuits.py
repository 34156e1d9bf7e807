"""The three findings of Ou et al. 2025 from circuits series, judged over pretraining seeds.

Each run (one pretraining seed's continual run, `findings`) gives per finding its numbers and the statistics a
test across seeds reads, each positive in the paper's direction (`relevance_numbers`, `formation_numbers`,
`shallow_numbers`). `judge_runs` tests each statistic across the runs (mean, 95% t-interval, two-sided t-test:
`judge.findings.across`) with the lab's ladder (`effect_verdict`, no paper-implied size): `held` where every
statistic of the finding is significant in the paper's direction, `did not hold` where one is significant the other
way, else `inconclusive`; one run is `inconclusive (one run)`, and a run without the numbers `not measurable`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kentropy.lab.judge.findings import ALPHA, across
from kentropy.lab.judge.verdicts import INCONCLUSIVE, NOT_MEASURABLE, effect_verdict, weaker

SPLITS = ("related", "new")
FINDINGS = {
    "relevance": "Acquisition depends on relevance to existing knowledge",
    "formation_to_optimization": "Circuits move from formation to optimization",
    "deep_to_shallow": "Circuit edges shift from deep to shallow layers",
}
ONE_RUN = "one run: no test across pretraining seeds"


def finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def relevance_numbers(related: dict | None, new: dict | None) -> dict:
    """Finding 1 from the final checkpoint's split aggregates ({"faithfulness", "hit_at_10"}, None if skipped): the
    related split's circuit against the new split's, `statistics` = related − new of Hit@10 and of faithfulness (the
    paper's direction: both > 0); None where a split or one of these numbers is missing. In this lab "related" is
    knowledge the model had before continual training, so the finding says whether circuits for knowledge tied to
    the model's world are stronger at the end than those for the entirely new entities, not how fast related
    knowledge was acquired."""
    keys = ("hit_at_10", "faithfulness")
    numbers = {f"{s}_{k}": finite(_get(d, k)) for s, d in (("related", related), ("new", new)) for k in keys}
    if None in numbers.values():
        return {"numbers": numbers, "statistics": None, "detail": "a split or its final Hit@10 / faithfulness is missing"}
    detail = (f"final Hit@10 related {related['hit_at_10']:.3f} vs new {new['hit_at_10']:.3f}; "
              f"faithfulness related {related['faithfulness']:.3f} vs new {new['faithfulness']:.3f}")
    return {"numbers": numbers, "statistics": {k: related[k] - new[k] for k in keys}, "detail": detail}


def formation_numbers(steps: list[int], jaccard_final: list[float | None], change: list[float | None]) -> dict:
    """Finding 2 from the series (checkpoints in order, the last = final).

    `jaccard_final[k]`: edge Jaccard of checkpoint k's circuit with the final one; `change[k]`: 1 - edge Jaccard with
    checkpoint k - 1 (None for k = 0). Two statistics, both > 0 in the paper's direction: `rise` =
    jaccard_final[-2] − jaccard_final[0] (the last checkpoint before the final is closer to the final circuit than the
    start) and `early_minus_late`: the change per training step, change[k] / (steps[k] - steps[k-1]), averaged over
    the first half of the intervals minus that over the second half (with an odd number of intervals the middle one is
    left out). None with fewer than 3 checkpoints, a missing value, or steps that do not increase.
    """
    n = len(steps)
    gaps = [steps[k] - steps[k - 1] for k in range(1, n)]
    if n < 3 or any(g <= 0 for g in gaps) or None in jaccard_final or None in change[1:]:
        return {"numbers": {"steps": steps, "edge_jaccard_final": jaccard_final, "change": change}, "statistics": None,
                "detail": "needs >= 3 checkpoints with increasing steps and a circuit at each"}
    rates = [change[k] / gaps[k - 1] for k in range(1, n)]
    half = len(rates) // 2
    early, late = sum(rates[:half]) / half, sum(rates[-half:]) / half
    rise = jaccard_final[-2] - jaccard_final[0]
    detail = (f"edge Jaccard with final {jaccard_final[0]:.3f} (start) -> {jaccard_final[-2]:.3f} (last before final); "
              f"edge change per 100 steps early {100 * early:.3f} vs late {100 * late:.3f}")
    return {"statistics": {"rise": rise, "early_minus_late": early - late}, "detail": detail,
            "numbers": {"jaccard_start": jaccard_final[0], "jaccard_before_final": jaccard_final[-2], "rise": rise,
                        "early_change_per_step": early, "late_change_per_step": late, "steps": steps,
                        "edge_jaccard_final": jaccard_final, "change": change}}


def shallow_numbers(start: float | None, final: float | None) -> dict:
    """Finding 3: share of circuit edges into the lower half of layers ([0, L // 2)) at the start vs the final checkpoint;
    `statistics` = final − start (> 0 in the paper's direction); None where either is missing (no edges, or fewer than 2
    layers)."""
    if start is None or final is None:
        return {"numbers": {"start": start, "final": final}, "statistics": None, "detail": "no lower-half share"}
    return {"numbers": {"start": start, "final": final, "delta": final - start}, "statistics": {"delta": final - start},
            "detail": f"edges into the lower half of layers {start:.3f} (start) -> {final:.3f} (final)"}


def findings(checkpoints: list[dict], summary: dict | None) -> dict:
    """One run's numbers and statistics of the three findings. Findings 2 and 3 use, per checkpoint, the mean over the
    measured splits of the split values."""

    def split(c, s):
        v = c["splits"].get(s)
        return None if v is None or "skipped" in v else v

    final = checkpoints[-1]
    f1 = relevance_numbers(split(final, "related"), split(final, "new"))
    f1["numbers"]["hit_at_10_clean"] = {s: [_get(split(c, s), "hit_at_10_clean") for c in checkpoints] for s in SPLITS}
    if summary and summary.get("P_before") is not None and summary.get("P_after") is not None:
        f1["numbers"]["new_probe_P"] = [summary["P_before"], summary["P_after"]]
        f1["detail"] += f"; injected-knowledge probe P {summary['P_before']:.3f} -> {summary['P_after']:.3f} (not in the rule)"

    steps = [c["step"] for c in checkpoints]
    jf = [_mean(_get(split(c, s), "edge_jaccard") for s in SPLITS) for c in checkpoints]
    ch = [None] + [_mean(None if _get(split(c, s), "edge_jaccard_prev") is None else 1 - split(c, s)["edge_jaccard_prev"]
                         for s in SPLITS) for c in checkpoints[1:]]
    f2 = formation_numbers(steps, jf, ch)
    lower = [_mean(_get(split(c, s), "lower_half_share") for s in SPLITS) for c in checkpoints]
    f3 = shallow_numbers(lower[0], lower[-1])
    f3["numbers"]["series"] = lower
    return {key: {"finding": FINDINGS[key], **f} for key, f in (("relevance", f1), ("formation_to_optimization", f2),
                                                                ("deep_to_shallow", f3))}


def judge_runs(runs: Sequence[dict], alpha: float = ALPHA) -> dict:
    """The three findings over runs (one per pretraining seed, each `findings`' result): per finding `finding`, `runs`
    (their numbers and details), `statistics` (per statistic `across` the runs with its verdict), `verdict` and `why`."""
    out = {}
    for key, title in FINDINGS.items():
        recs = [r[key] for r in runs]
        entry = {"finding": title, "runs": recs, "detail": " | ".join(r["detail"] for r in recs), "statistics": None}
        missing = next((r for r in recs if r["statistics"] is None), None)
        if missing is not None:
            out[key] = {**entry, "verdict": NOT_MEASURABLE, "why": missing["detail"]}
            continue
        if len(recs) < 2:
            out[key] = {**entry, "verdict": INCONCLUSIVE, "why": ONE_RUN}
            continue
        stats = {}
        for name in recs[0]["statistics"]:
            a = across([r["statistics"][name] for r in recs])
            stats[name] = {**a, "verdict": effect_verdict(a["mean"], a["ci"], a["p"], +1, None, alpha)}
        out[key] = {**entry, "statistics": stats, "verdict": weaker(*[x["verdict"] for x in stats.values()]), "why": None}
    return out


def _get(d: dict | None, key: str):
    return None if d is None else d.get(key)


