"""The gates: whether a design can tell, computed before any verdict, never from which way it tells.

Every finding carries `{"knowledge", "power", "manipulation"}` (and finding 1 of the core study `regime`), each
with `passed` (a bool); a gate that does not bear on a finding is `{"applies": false, "passed": true, "why"}`.
`blocked` reads them in order (design, regime, power, knowledge, manipulation: what the plan fixes, then what
the runs show before their outcome; `design` is failed where a study could not run the finding at all): the first that failed gives the finding's verdict, `not measurable` or `not tested`,
with its `why`, and the ladder is not run.

- **knowledge** (`knowledge_gate`): per pretraining seed and starting checkpoint, D before continual learning
  minus the prior-only floor (the D of a guess that knows the answer priors and no fact) is at least
  `KNOWLEDGE_MARGIN` and at least `KNOWLEDGE_SE` standard errors of D, on the whole task set and on the head
  band: the rows whose subject is among the most-written `head_band` of the entities. Failing it, the models
  hold no knowledge to forget, and A and F read surface statistics.
- **power** (`power_gate`): from a pilot's between-seed standard deviation (`plan.Pilot`, fixed in the preset),
  the minimum detectable effect at `POWER_TARGET` power beside the paper-implied effect (`judge.paper`) in the
  same units, and the power against it; below the target the finding is `not measurable (power P)`, with the
  seeds that would reach it. Without a pilot the power is unknown: not passed. Where the paper implies no size
  (finding 2e, the interventions), the gate does not apply: their ladder never reads a null as `did not hold`.
- **manipulation** (`manipulation_gate`): Algorithm 1 over the preregistered grid of p; a p counts only in the
  seeds where the measured H rose (finding 3's power is that of those seeds); a p that counts in no seed is
  `not tested`.
- **regime** (`regime_gate`, finding 1 of the core study): the pretraining is in the paper's regime (`REGIME`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from kentropy.lab.judge.plan import AMPLIFY_GRID, KNOWLEDGE_MARGIN, KNOWLEDGE_SE, POWER_TARGET, REGIME, Pilot
from kentropy.lab.judge.power import minimum_detectable_effect, power, seeds_needed
from kentropy.lab.judge.stats import downstream_se
from kentropy.lab.judge.verdicts import NOT_MEASURABLE, NOT_TESTED

ORDER = ("design", "regime", "power", "knowledge", "manipulation")  # the order `blocked` reads them in: the design first


def not_applicable(why: str) -> dict:
    """A gate that does not bear on a finding: it passes, and says why it does not apply."""
    return {"applies": False, "passed": True, "why": why}


# ---- knowledge --------------------------------------------------------------------------------------
def _band(downstream: Mapping, metadata: Mapping, max_rank: int | None) -> list[tuple[str, float, int, float]]:
    """Per task (name, score, rows, floor): over every row (`max_rank` None: the task's score, rows and prior-only
    floor), or over the rows whose subject's popularity rank is at most `max_rank` (from the per-document `rows` and
    the task metadata's `row_ranks` and `row_prior_guess`; a task with fewer than 2 such rows is left out)."""
    out = []
    for name, t in downstream["tasks"].items():
        meta = metadata[name.removeprefix("lab_")]
        if max_rank is None:
            out.append((name, t["score"], t["n"], meta["prior_guess"]))
            continue
        if "rows" not in t or "row_ranks" not in meta or len(t["rows"]) != len(meta["row_ranks"]):
            continue
        keep = [i for i, r in enumerate(meta["row_ranks"]) if r <= max_rank]
        if len(keep) >= 2:
            out.append((name, math.fsum(t["rows"][i] for i in keep) / len(keep), len(keep),
                        math.fsum(meta["row_prior_guess"][i] for i in keep) / len(keep)))
    return out


def knowledge_record(seed, start, downstream: Mapping, metadata: Mapping, max_rank: int | None = None) -> dict:
    """One seed and start: `D_before` (the mean of the tasks' scores), `floor` (the mean of their prior-only floors),
    `margin` = D_before − floor, `se` = SE(D_before) (`stats.downstream_se`; the floor is exact), `passed` = margin ≥ KNOWLEDGE_MARGIN and margin ≥ KNOWLEDGE_SE · se, and `tasks` (the
    tasks scored). With `max_rank`, over the head band's rows only; no task with 2 such rows: not passed."""
    band = _band(downstream, metadata, max_rank)
    if not band:
        return {"seed": seed, "start": start, "D_before": None, "floor": None, "margin": None, "se": None, "tasks": [],
                "passed": False}
    k = len(band)
    d = math.fsum(s for _, s, _, _ in band) / k
    floor = math.fsum(f for _, _, _, f in band) / k
    se = downstream_se({"tasks": {name: {"score": s, "n": n} for name, s, n, _ in band}})
    margin = d - floor
    return {"seed": seed, "start": start, "D_before": d, "floor": floor, "margin": margin, "se": se,
            "tasks": [name for name, *_ in band], "passed": bool(margin >= KNOWLEDGE_MARGIN and margin >= KNOWLEDGE_SE * se)}


def head_ranks(metadata: Mapping, head_band: float) -> int:
    """The popularity rank at which the head band ends: the most-written `head_band` of the world's entities."""
    entities = next(iter(metadata.values()))["popularity_band"]["of_entities"]
    return max(1, round(head_band * entities))


def knowledge_gate(starts: Sequence[Mapping], metadata: Mapping, head_band: float) -> dict:
    """The knowledge gate over every seed and starting checkpoint (`starts`: {"seed", "start", "downstream"}, the
    downstream result before continual learning with per-document `rows`): `whole` and `head` records
    (`knowledge_record`), `head_band` (its fraction of the entities and the rank it ends at), the thresholds, and
    `passed`: every record passes on both. Without starts: not passed."""
    max_rank = head_ranks(metadata, head_band)
    whole = [knowledge_record(s["seed"], s["start"], s["downstream"], metadata) for s in starts]
    head = [knowledge_record(s["seed"], s["start"], s["downstream"], metadata, max_rank) for s in starts]
    passed = bool(starts) and all(r["passed"] for r in whole + head)
    failed = [f"seed {r['seed']} at {r['start']} ({which})" for which, rs in (("whole", whole), ("head band", head)) for r in rs
              if not r["passed"]]
    return {"whole": whole, "head": head, "head_band": {"fraction": head_band, "max_rank": max_rank},
            "margin_at_least": KNOWLEDGE_MARGIN, "se_multiple": KNOWLEDGE_SE, "passed": passed,
            "why": None if passed else ("no knowledge to forget: D before continual learning is not above the prior-only floor "
                                        f"by {KNOWLEDGE_MARGIN} and {KNOWLEDGE_SE:g} SE at "
                                        + (", ".join(failed[:4]) + (f" and {len(failed) - 4} more" if len(failed) > 4 else "")
                                           if failed else "any start (none was measured)"))}


# ---- power ------------------------------------------------------------------------------------------
def power_gate(finding: str, pilot: Pilot | None, seeds: int, alpha: float, paper_effect: float | None, units: str) -> dict:
    """The power gate of `finding` for a design of `seeds` pretraining seeds tested at `alpha` (`judge.power`): `sd`
    (the pilot's), `mde` (the effect detected with POWER_TARGET probability), `paper_effect` (signed, at least; in
    `units`), `power` against it, `passed` (power ≥ POWER_TARGET), `seeds_needed` (the fewest seeds that reach it)
    and `why` where not passed. No paper-implied effect: the gate does not apply (the MDE is still given)."""
    sd = pilot.sd.get(finding) if pilot else None
    base = {"finding": finding, "units": units, "paper_effect": paper_effect, "seeds": seeds, "alpha": alpha,
            "target": POWER_TARGET, "sd": sd, "pilot": pilot.source if pilot else None}
    mde = minimum_detectable_effect(sd, seeds, alpha, POWER_TARGET) if sd and seeds >= 2 else None
    if paper_effect is None:
        return {**base, "mde": mde, "power": None, "seeds_needed": None,
                **not_applicable("the paper implies no size here: the ladder reads no null as did not hold")}
    if sd is None:
        return {**base, "applies": True, "mde": None, "power": None, "seeds_needed": None, "passed": False,
                "why": f"power unknown: no pilot measured the between-seed spread of finding {finding} (pilot.sd.{finding})"}
    if seeds < 2:
        return {**base, "applies": True, "mde": None, "power": None, "seeds_needed": seeds_needed(paper_effect, sd, alpha, POWER_TARGET),
                "passed": False, "why": f"{seeds} seed(s): no test across seeds"}
    p = power(paper_effect, sd, seeds, alpha)
    need = seeds_needed(paper_effect, sd, alpha, POWER_TARGET)
    passed = p >= POWER_TARGET
    design = f"{need} seeds would reach it" if need else "no design of up to 1000 seeds at this spread reaches it"
    return {**base, "applies": True, "mde": mde, "power": p, "seeds_needed": need, "passed": passed,
            "why": None if passed else f"power {p:.2f} against the paper-implied {paper_effect:+.4g} {units} with {seeds} seeds "
                                       f"(MDE {mde:.4g}); {design}"}


# ---- manipulation -----------------------------------------------------------------------------------
def manipulation_gate(records: Sequence[Mapping]) -> dict:
    """Algorithm 1's check over its grid (`records`: {"amplify", "seed", "H_before", "H_after"} per p and seed):
    `per_amplify` {p: {"seeds": {seed: {"H_before", "H_after", "passed" = H rose}}, "counted": [seeds where H rose],
    "passed"}}, `grid` (the p run), `covers_paper_grid` (AMPLIFY_GRID among them), `passed` (some p counted in a seed)."""
    per: dict[str, dict] = {}
    for r in sorted(records, key=lambda r: r["amplify"]):
        e = per.setdefault(f"{r['amplify']:g}", {"seeds": {}, "counted": []})
        rose = r["H_after"] > r["H_before"]
        e["seeds"][str(r["seed"])] = {"H_before": r["H_before"], "H_after": r["H_after"], "passed": rose}
        if rose:
            e["counted"].append(r["seed"])
    for e in per.values():
        e["passed"] = bool(e["counted"])
    grid = sorted({r["amplify"] for r in records})
    passed = any(e["passed"] for e in per.values())
    return {"per_amplify": per, "grid": grid, "covers_paper_grid": set(AMPLIFY_GRID) <= set(grid), "passed": passed,
            "why": None if passed else "Algorithm 1 raised the measured H at no p in any seed"}


def amplify_gate(manipulation: Mapping, amplify: float) -> dict:
    """One p's entry of a manipulation gate, with `why` where it counted in no seed."""
    e = manipulation["per_amplify"][f"{amplify:g}"]
    return {**e, "why": None if e["passed"] else f"p = {amplify:g} raised the measured H in no seed"}


# ---- regime -----------------------------------------------------------------------------------------
def regime_gate(tokens_per_parameter: float, cumulative_weight_decay: float) -> dict:
    """Whether a pretraining run is in the paper's regime (`REGIME`: tokens per non-embedding parameter and
    Σ lr_t·wd, at least)."""
    low = [f"{tokens_per_parameter:.3g} tokens per parameter < {REGIME['tokens_per_parameter']:g}"] * (
        tokens_per_parameter < REGIME["tokens_per_parameter"])
    low += [f"Σ lr·wd {cumulative_weight_decay:.3g} < {REGIME['cumulative_weight_decay']:g}"] * (
        cumulative_weight_decay < REGIME["cumulative_weight_decay"])
    return {"tokens_per_parameter": tokens_per_parameter, "cumulative_weight_decay": cumulative_weight_decay,
            "at_least": dict(REGIME), "passed": not low,
            "why": None if not low else f"not in the paper's regime ({'; '.join(low)}; OLMo-1B: ~2,500 and ~16)"}


def blocked(gates: Mapping) -> tuple[str, str] | None:
    """(verdict, why) of the first failed gate in ORDER: `not tested` for a manipulation, else `not measurable`;
    None where every gate passed."""
    for name in ORDER:
        g = gates.get(name)
        if g is not None and not g["passed"]:
            return (NOT_TESTED if name == "manipulation" else NOT_MEASURABLE), g["why"]
    return None
