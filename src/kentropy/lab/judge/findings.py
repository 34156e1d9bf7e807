"""The paper's findings from a study's per-seed records: each finding's gates first (`judge/gates.py`), then, where
none failed, the one ladder (`judge/verdicts.py`). The core study (`report/core.py`) and the decay study's loop
(`studies/loop.py`) both judge through here.

- Finding 1 (`finding_1`): the per-seed ΔKL of the plan's contrast, tested across seeds (`judge/seeds.py`), beside
  OLMo-1B's range (`judge/paper.py`), with the last layer apart. Gate: the pretraining's regime (core study).
- Findings 2a-2e (`findings_2`): per seed the least-squares slope of A, F or ΔP on the step or on H over its
  starting checkpoints; across seeds the mean, 95% t-interval and two-sided t-test, against the paper-implied
  slope. Gates: knowledge and power.
- Finding 3 (`finding_3`): Algorithm 1 of the final checkpoint over the grid of p, paired per seed against the
  plain final checkpoint's run: ΔA and the absolute ΔP after continual learning (3a), ΔF and the absolute ΔD
  after (3b), over the seeds where the measured H rose. A gain needs both: an edit that lowers P (or D) is not
  called one however it moves A (or F). Gates: manipulation, power (the paper-implied effect of the H rise the
  edit measured), knowledge (3b).

Every finding record has `verdict` (one of `verdicts.VERDICTS`) and `why` (the failed gate's reason, or why the
ladder could not test; else None).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from kentropy.lab.judge.gates import amplify_gate, blocked, manipulation_gate, not_applicable, power_gate
from kentropy.lab.judge.paper import IMPLIED, UNITS, compare_to_paper, implied_effect
from kentropy.lab.judge.plan import AMPLIFY_GRID, FINDINGS, AnalysisPlan, Contrast, Pilot
from kentropy.lab.judge.seeds import ArmSeeds, contrast_records, p_two_sided, slopes_across_seeds, t_interval
from kentropy.lab.judge.verdicts import NOT_MEASURABLE, NOT_MEASURED, NOT_TESTED, effect_verdict, weaker

ALPHA = 0.05
CORE_CONTRAST = "late half"  # finding 1 in the core study: H at 50% of pretraining vs at 100%
ONE_SEED = "one seed: no test across seeds"
NO_MANIPULATION = "no manipulation: nothing is edited before this finding's outcome"
SLOPES = {"2a": ("step", "A", -1), "2b": ("step", "F", +1), "2c": ("H", "A", +1), "2d": ("H", "F", -1), "2e": ("H", "dP", +1)}


def core_plan(sesoi: float) -> AnalysisPlan:
    """Finding 1's plan in the core study, fixed by the config before anything runs: ΔKL per layer from 50% to 100% of
    pretraining, SESOI `sesoi`, α = 0.05 (one study: Holm over one test changes nothing)."""
    return AnalysisPlan((Contrast(CORE_CONTRAST, 0.5, 1.0),), CORE_CONTRAST, sesoi, ALPHA)


def across(values: Sequence[float]) -> dict:
    """Over seeds: `per_seed`, `mean`, `ci` (95% t-interval) and `p` (two-sided one-sample t-test; ci and p None with one
    value)."""
    return {"per_seed": list(values), "mean": math.fsum(values) / len(values), "ci": t_interval(values), "p": p_two_sided(values)}


def judge_effect(stat: Mapping, gates: Mapping, sign: int, paper_effect: float | None, alpha: float = ALPHA) -> dict:
    """`stat` ({"mean", "ci", "p", ...}) with its `verdict` and `why`: the first failed gate's, else the ladder's
    (`effect_verdict`; one seed: `inconclusive`)."""
    stop = blocked(gates)
    if stop:
        return {**stat, "paper_effect": paper_effect, "verdict": stop[0], "why": stop[1]}
    return {**stat, "paper_effect": paper_effect, "verdict": effect_verdict(stat["mean"], stat["ci"], stat["p"], sign, paper_effect, alpha),
            "why": ONE_SEED if stat["p"] is None else None}


# ---- finding 1 -------------------------------------------------------------------------------------
def finding_1_power(pilot: Pilot | None, seeds: int, sesoi: float, alpha: float) -> dict:
    """Finding 1's power record: the MDE from a pilot's spread of ΔKL where there is one; the gate does not apply (the
    size tests against the SESOI read an underpowered null as `inconclusive`, never `no decay`)."""
    g = power_gate("1", pilot, seeds, alpha, None, UNITS["1"])
    return {**g, "sesoi": sesoi, "why": "judged by a minimum-effect test and TOST against the SESOI: an underpowered null reads "
                                        "inconclusive"}


def finding_1(seeds: Sequence[Mapping], *, layers: int, ffn_dim: int, steps: int, plan: AnalysisPlan, pilot: Pilot | None,
              regime: Mapping | None) -> tuple[dict, dict]:
    """Finding 1's gates and record: the plan's primary contrast over seeds (`contrast_records` with one arm), `paper`
    (the mean beside OLMo-1B's range). seeds: {"seed", "steps", "knowledge_entropy", "knowledge_entropy_per_layer"}."""
    gates = {"regime": regime or not_applicable("a study of fixed arms: each arm's regime is its design"),
             "knowledge": not_applicable("finding 1 is about pretraining alone"),
             "power": finding_1_power(pilot, len(seeds), plan.sesoi, plan.alpha),
             "manipulation": not_applicable(NO_MANIPULATION)}
    rec = next(r for r in contrast_records({"core": ArmSeeds(layers, steps, list(seeds))}, plan)["core"] if r["name"] == plan.primary)
    stop = blocked(gates)
    rec = {**rec, "paper": compare_to_paper(rec["mean"], layers, ffn_dim),
           "verdict": stop[0] if stop else rec["verdict"], "why": stop[1] if stop else (ONE_SEED if rec["ci"] is None else None)}
    return gates, rec


# ---- findings 2 ------------------------------------------------------------------------------------
def slope_finding(key: str, per_seed_x: Sequence[Sequence[float]], per_seed_y: Sequence[Sequence[float | None]],
                  gates: Mapping, paper_effect: float | None, alpha: float = ALPHA) -> dict:
    """One finding of 2a-2e: `not measured` where y is missing, `not measurable` with fewer than 2 starting points a
    seed, else the slopes across seeds (`slopes_across_seeds`) judged through the gates and the ladder."""
    sign = SLOPES[key][2]
    base = {"per_seed": None, "mean": None, "ci": None, "p": None, "seeds": len(per_seed_x), "units": UNITS[key],
            "paper_effect": paper_effect}
    if any(v is None for ys in per_seed_y for v in ys):
        return {**base, "verdict": NOT_MEASURED, "why": f"{SLOPES[key][1]} was not measured in every run"}
    if any(len(set(xs)) < 2 for xs in per_seed_x):
        return {**base, "verdict": NOT_MEASURABLE, "why": f"fewer than 2 distinct {SLOPES[key][0]} values a seed: no slope"}
    return judge_effect({**base, **slopes_across_seeds(per_seed_x, per_seed_y)}, gates, sign, paper_effect, alpha)


def findings_2(per_seed: Sequence[Mapping], keys: Sequence[str], *, layers: int, steps: int | None, pilot: Pilot | None,
               knowledge: Mapping, alpha: float = ALPHA) -> tuple[dict, dict]:
    """Findings `keys` (of 2a-2e) from each pretraining seed's starting checkpoints, per_seed [{"step": [..], "H": [..],
    "A": [..], "F": [..], "dP": [..]}]: ({key: gates}, {key: record}). `steps`: the pretraining run's steps (2a, 2b's
    paper-implied effect per step); `knowledge`: the study's knowledge gate."""
    gates, out = {}, {}
    for key in keys:
        x, y, _ = SLOPES[key]
        paper = implied_effect(key, layers, steps)
        gates[key] = {"knowledge": knowledge, "power": power_gate(key, pilot, len(per_seed), alpha, paper, UNITS[key]),
                      "manipulation": not_applicable(NO_MANIPULATION)}
        out[key] = slope_finding(key, [r[x] for r in per_seed], [r[y] for r in per_seed], gates[key], paper, alpha)
    return gates, out


# ---- finding 3 -------------------------------------------------------------------------------------
PARTS = {"3a": ("A", "delta_A", "P_after", "delta_P_after", +1), "3b": ("F", "delta_F", "D_after", "delta_D_after", -1)}


def _part(key: str, rows: Sequence[Mapping], gates: Mapping, paper_effect: float | None, alpha: float) -> dict:
    """One p's 3a or 3b over its counted seeds: the relative effect (ΔA or ΔF, against the paper-implied one) and the
    absolute one (ΔP or ΔD after continual learning: higher is better, no paper size); `verdict` the weaker of their
    ladders, or the first failed gate's (`judged` False)."""
    name, rel, absolute, dabs, sign = PARTS[key]
    values = {k: [r[k] for r in rows] for k in (rel, dabs)}
    stats = {k: across(v) if v and None not in v else None for k, v in values.items()}
    out = {name: stats[rel], absolute: stats[dabs], "paper_effect": paper_effect, "judged": False}
    stop = blocked(gates)
    if stop:
        return {**out, "verdict": stop[0], "why": stop[1]}
    if None in stats.values():
        return {**out, "verdict": NOT_MEASURED, "why": f"{name} or {absolute} was not measured in every run"}
    a = judge_effect(stats[rel], {}, sign, paper_effect, alpha)
    b = judge_effect(stats[dabs], {}, +1, None, alpha)
    return {**out, name: a, absolute: b, "judged": True, "verdict": weaker(a["verdict"], b["verdict"]), "why": a["why"] or b["why"]}


def _combine(entries: Sequence[Mapping], key: str) -> tuple[str, str | None]:
    """A finding's verdict over the grid: the weakest over the p that were judged; where none was, the first p's that
    raised H in some seed (its failed gate's, e.g. `not measurable`), else `not tested`."""
    parts = [e[key] for e in entries]
    judged = [p for p in parts if p["judged"]]
    if judged:
        return weaker(*[p["verdict"] for p in judged]), None
    first = next((p for p in parts if p["verdict"] != NOT_TESTED), parts[0])
    return first["verdict"], first["why"]


def finding_3(records: Sequence[Mapping], *, layers: int, pilot: Pilot | None, knowledge: Mapping, alpha: float = ALPHA
              ) -> tuple[dict, dict]:
    """Finding 3's gates ({"3a", "3b"}) and record from per (seed, p) records {"seed", "amplify", "H_before", "H_after",
    "delta_A", "delta_F", "delta_P_after", "delta_D_after"} (Δ = resuscitated − plain final checkpoint, after continual
    learning). Per p (`by_amplify`): the seeds where H rose (`counted_seeds`), the mean rise in KL nats per layer, and 3a
    and 3b over the counted seeds; `verdict_A`, `verdict_F` (with `why_A`, `why_F`) over the grid, `verdict` the weaker."""
    if not records:
        why = "no resuscitation was run (an empty grid of p)"
        failed = {"applies": True, "passed": False, "why": why}
        gates = {k: {"design": failed, "knowledge": not_applicable(why), "power": not_applicable(why),
                     "manipulation": not_applicable(why)} for k in PARTS}
        return gates, {"resuscitation": [], "by_amplify": [], "grid": [], "paper_grid": list(AMPLIFY_GRID), "covers_paper_grid": False,
                       "verdict_A": NOT_MEASURABLE, "why_A": why, "verdict_F": NOT_MEASURABLE, "why_F": why, "verdict": NOT_MEASURABLE}
    manip = manipulation_gate(records)
    by_p: dict[float, list[Mapping]] = {}
    for r in records:
        by_p.setdefault(r["amplify"], []).append(r)
    entries, power = [], {"3a": {}, "3b": {}}
    for p in sorted(by_p):
        rows = by_p[p]
        mg = amplify_gate(manip, p)
        counted = [r for r in rows if r["seed"] in mg["counted"]]
        rise = math.fsum((r["H_after"] - r["H_before"]) / layers for r in counted) / len(counted) if counted else None
        entry = {"amplify": p, "counted_seeds": [r["seed"] for r in counted],
                 "uncounted_seeds": [r["seed"] for r in rows if r["seed"] not in mg["counted"]], "kl_rise_per_layer": rise}
        for key in PARTS:
            # the paper-implied effect of the rise the edit measured; where H rose in no seed there is none to power for
            paper = implied_effect(key, layers, kl_rise=rise)
            pg = power_gate(key, pilot, len(counted) or len(rows), alpha, paper, UNITS[key])
            power[key][f"{p:g}"] = pg
            gates = {"knowledge": knowledge if key == "3b" else not_applicable("acquisition needs no prior knowledge"),
                     "power": pg, "manipulation": mg}
            entry[key] = _part(key, counted, gates, paper, alpha)
        entries.append(entry)
    gates = {}
    for key in PARTS:
        # only a p that raised H in some seed has a paper-implied effect to power for; the others' gates do not apply
        # (the manipulation gate says so), and never pass the power gate for the grid
        applied = [g for g in power[key].values() if g["applies"]]
        if applied:
            best = max(applied, key=lambda g: -1.0 if g["power"] is None else g["power"])
            passed = any(g["passed"] for g in applied)
            pg = {**{k: best[k] for k in ("mde", "paper_effect", "units", "power", "seeds", "sd", "target")},
                  "applies": True, "passed": passed, "per_amplify": power[key], "why": None if passed else best["why"]}
        else:
            pg = {**not_applicable("H rose at no p: no paper-implied effect to power for (the manipulation gate decides)"),
                  "per_amplify": power[key]}
        gates[key] = {"knowledge": knowledge if key == "3b" else not_applicable("acquisition needs no prior knowledge"),
                      "power": pg, "manipulation": manip}
    vA, whyA = _combine(entries, "3a")
    vF, whyF = _combine(entries, "3b")
    return gates, {"resuscitation": [dict(r, counted=r["H_after"] > r["H_before"]) for r in records], "by_amplify": entries,
                   "grid": manip["grid"], "paper_grid": list(AMPLIFY_GRID), "covers_paper_grid": manip["covers_paper_grid"],
                   "verdict_A": vA, "why_A": whyA, "verdict_F": vF, "why_F": whyF, "verdict": weaker(vA, vF)}


# ---- the testable table and the pilot's estimates --------------------------------------------------
def can_test(gates: Mapping[str, Mapping], verdicts: Mapping[str, tuple[str, str | None]]) -> list[dict]:
    """Per finding (FINDINGS order, those in `gates`): `finding`, `title`, `testable` (no gate failed, the quantity was
    measured and the verdict is a tested one), `why` (the first failed gate's reason, or why it was not measured) and `verdict`. verdicts: key ->
    (verdict, why)."""
    out = []
    for key in FINDINGS:
        if key not in gates:
            continue
        stop = blocked(gates[key])
        v, why = verdicts[key]
        if stop is None and v in (NOT_MEASURED, NOT_MEASURABLE, NOT_TESTED):  # e.g. a gate of each p of finding 3's grid
            stop = (v, why or f"the finding's verdict is {v}")
        out.append({"finding": key, "title": FINDINGS[key], "testable": stop is None, "why": stop[1] if stop else None, "verdict": v})
    return out


def pilot_estimates(seeds: Sequence[int], records: Mapping[str, Mapping], source: str) -> dict:
    """What this run measured of the between-seed spread, in the shape of a preset's `pilot` (`plan.pilot_from_dict`): the
    sample standard deviation of each finding's per-seed values (finding 1: ΔKL; 2a-2e: the slopes; 3a, 3b: ΔA, ΔF over
    the counted seeds, the largest over the grid), where at least 2 seeds give one and they differ. A pilot's run gives the numbers a
    main run's preset fixes; a main run's own are no pilot of itself."""
    sd = {}
    for key, rec in records.items():
        if key in PARTS:
            spreads = [statistics.stdev(e[key][PARTS[key][0]]["per_seed"]) for e in rec["by_amplify"]
                       if e[key].get(PARTS[key][0]) and len(e[key][PARTS[key][0]]["per_seed"]) >= 2]
            if spreads:
                sd[key] = max(spreads)
        elif rec.get("per_seed") and len(rec["per_seed"]) >= 2:
            sd[key] = statistics.stdev(rec["per_seed"])
    return {"source": source, "seeds": list(seeds), "sd": {k: v for k, v in sd.items() if v > 0}}


def planned(*, regime: Mapping | None, pilot: Pilot | None, seeds: int, layers: int, steps: int, sesoi: float,
            keys: Sequence[str], alpha: float = ALPHA) -> tuple[dict, list[dict]]:
    """The gates the plan fixes, before any run: per finding in `keys` its power gate (3a, 3b: the MDE alone, their
    paper-implied effect follows the H rise Algorithm 1 will measure) and the testable table as far as the design
    decides it (`regime` for finding 1, the power gates; the knowledge and manipulation gates follow the runs)."""
    power, rows = {}, []
    for key in keys:
        if key == "1":
            power[key] = finding_1_power(pilot, seeds, sesoi, alpha)
            stop = None if regime is None or regime["passed"] else regime["why"]
        else:
            paper = implied_effect(key, layers, steps) if key in SLOPES else None
            power[key] = power_gate(key, pilot, seeds, alpha, paper, UNITS[key])
            stop = None if power[key]["passed"] else power[key]["why"]
            if key in PARTS:
                per_kl = -IMPLIED["A_per_kl" if key == "3a" else "F_per_kl"]
                power[key]["paper_effect_text"] = f"paper-implied {per_kl:+.4g} × the rise of H per layer that Algorithm 1 measures"
                if pilot is None or key not in pilot.sd:
                    stop = f"power unknown: no pilot measured the between-seed spread of finding {key} (pilot.sd.{key})"
        rows.append({"finding": key, "title": FINDINGS[key], "testable": stop is None, "why": stop})
    return power, rows
