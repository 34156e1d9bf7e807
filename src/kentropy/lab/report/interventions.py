"""The report's section on plasticity interventions: per start (the core model, a decayed arm), over its pretraining
seeds, one table of H, A, F, P after and D after with intervals per method, the paired differences from no
intervention and from Algorithm 1 with their verdicts, each method's gates, and which methods gained."""

from __future__ import annotations

from kentropy.lab.report.fmt import fmt, fmt_ci


def _ci(c: dict) -> str:
    return "-" if c["mean"] is None else fmt_ci(c)


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _diff(d: dict | None) -> str:
    """`mean [lo, hi], p_Holm = x (verdict)` of a paired difference."""
    if d is None:
        return "-"
    if "mean" not in d:
        return d["verdict"]
    ci = "" if d["ci"] is None else f" [{d['ci'][0]:.3g}, {d['ci'][1]:.3g}]"
    p = "" if d.get("p_holm") is None else f", p_Holm = {d['p_holm']:.3g}"
    return f"{d['mean']:+.3g}{ci}{p} ({d['verdict']})"


def _manipulation_cell(m: dict) -> str:
    g = m["manipulation"]
    if not g["applies"]:
        return "n/a"
    per = "; ".join(f"seed {s}: {'passed' if c['passed'] else 'failed (' + c['why'] + ')'}" for s, c in g["per_seed"].items())
    after = [x for x in m["knowledge_entropy_after_edit"] if x is not None]
    return (f"H after the edit {fmt(_mean(after))}; " if after else "") + per


def _list(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def start_table(s: dict) -> list[str]:
    k = s["knowledge"]
    lines = [f"### From the {s['name']}'s final checkpoints (pretraining seeds {', '.join(map(str, s['seeds']))}, step {s['step']}, "
             f"H = {fmt(_mean(s['knowledge_entropy']))} on average)", "",
             f"Knowledge gate (for F and D after): {'passed' if k['passed'] else 'failed: ' + k['why']}.", "",
             "| method | manipulation (per pretraining seed) | H at the end | A (%) | F (%) | P after | D after "
             "| vs none: A, P after → acquisition | vs none: F, D after → retention | vs Algorithm 1: acquisition / retention |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in s["methods"]:
        vn, va = m.get("vs_none", {}), m.get("vs_algorithm_1", {})
        acq = "-" if not vn else f"{_diff(vn['A'])}; {_diff(vn['P_after'])} → **{vn['acquisition']}**"
        ret = "-" if not vn else f"{_diff(vn['F'])}; {_diff(vn['D_after'])} → **{vn['retention']}**"
        a1 = "-" if not va else f"**{va['acquisition']}** / **{va['retention']}**"
        lines.append(f"| {m['method']} | {_manipulation_cell(m)} | {fmt(_mean(m['knowledge_entropy_final']))} | {_ci(m['A'])} | "
                     f"{_ci(m['F'])} | {_ci(m['P_after'])} | {_ci(m['D_after'])} | {acq} | {ret} | {a1} |")
    b = s["beat"]
    lines += ["",
              f"- Gained over no intervention: in acquisition (A and P after) {_list(b['vs_none']['acquisition'])}; "
              f"in retention (F and D after) {_list(b['vs_none']['retention'])}.",
              f"- Gained over Algorithm 1: in acquisition {_list(b['vs_algorithm_1']['acquisition'])}; in retention "
              f"{_list(b['vs_algorithm_1']['retention'])}.", ""]
    for m in s["methods"]:
        counts = [n for seed in m.get("recycled_neurons", []) for n in seed if n is not None]
        if counts:
            lines += [f"- {m['method']} recycled {', '.join(map(str, counts))} neurons in all (per run).", ""]
    not_tested = [m["method"] for m in s["methods"] if m["manipulation"]["applies"] and not m["manipulation"]["passed"]]
    if not_tested:
        lines += [f"- Not tested (the manipulation passed in no pretraining seed, so the outcome is shown but not judged): "
                  f"{', '.join(not_tested)}.", ""]
    return lines


def interventions_section(result: dict) -> str:
    p, seeds = result["params"], result["seeds"]
    lines = ["## Plasticity interventions", "",
             f"Every method starts from the same final checkpoint of each pretraining seed (the unit) and then runs the lab's "
             f"continual learning (the same protocol; continual seeds {seeds}, averaged within a pretraining seed). Parameters, "
             f"fixed in the preset before any run: Algorithm 1 ratio {result['algorithm_1']['ratio']:g}, P = {p['amplify']:g}; "
             f"ReDo τ = {p['redo_threshold']:g}; shrink and perturb λ = {p['shrink']:g}, σ = {p['perturb']:g}; rehearsal "
             f"{p['replay_fraction']:g} of every batch's rows from the world's pretraining stream (never injected rows); HFT "
             f"freezes a seeded half of each block's matrices per injection round; continual ReDo every {p['recycle_every']} "
             f"steps at τ = {p['redo_threshold']:g}. H is measured on the held-out world documents. Gates first: an edit counts "
             "only in the seeds where it raised H, continual ReDo where it recycled neurons; F and D after need the knowledge "
             "gate. A difference is paired by pretraining seed (method − reference) over the counted seeds, with a 95% "
             "t-interval and a two-sided paired t-test, Holm-adjusted across the methods compared; `held` = better (A, P after, "
             f"D after higher; F lower) at adjusted p < {result['alpha']:g}, `did not hold` = significantly worse, else "
             "`inconclusive`. A gain needs the relative and the absolute measure both: an edit that lowers P after and D "
             "after is no gain however it moves A and F.", ""]
    for s in result["starts"]:
        lines += start_table(s)
    if result["decay_arms_note"]:
        lines += [f"Decay-study arms: {result['decay_arms_note']}.", ""]
    return "\n".join(lines) + "\n"
