"""The report section of closing the loop: findings 2 and 3 from the decay study's checkpoints."""

from __future__ import annotations


def num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def interval(ci: list[float] | None, fmt: str = ".2f") -> str:
    return "-" if ci is None else f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def slope_line(name: str, s: dict, paper: str) -> str:
    """One slope across seeds (`judge.seeds.slopes_across_seeds` + verdict) in words."""
    per = ", ".join(f"{x:+.3g}" for x in s["per_seed"]) or "-"
    return (f"- {name}: mean {num(s['mean'], '+.3g')}, 95% CI {interval(s['ci'], '+.3g')}, p = {num(s['p'], '.3f')} "
            f"(per seed: {per}); paper: {paper}; verdict **{s['verdict']}**")


def rows_note(c: dict) -> str:
    """Where a task has fewer rows than asked (the world gives no more), which and how many."""
    short = {t: n for t, n in c.get("rows_per_task", {}).items() if n < c["tasks_per_kind"]}
    return f" (all the world gives: {', '.join(f'{t} {n}' for t, n in short.items())})" if short else ""


def floor_text(k: dict) -> str:
    """D before continual learning against the prior-only guess (`judge.stats.against_floor`), in words."""
    where = ("above it: the models know more than the priors, and F measures the loss of that" if k["above"] else
             "at or below it: these models show no downstream knowledge beyond the answer priors, so F measures a shift "
             "of their preferences, not a loss of knowledge")
    return (f"D before continual learning: median {k['median']:.3f}, against {k['floor']:.3f} for a guess that knows no "
            f"fact, only how often each answer occurs (each task's wrong choices are drawn from that prior); "
            f"{k['margin']:+.3f}, {where}.")


def loop_section(loop: dict) -> str:
    """Markdown for the report: the design, A/ΔP/F per starting point, the slopes across seeds, resuscitation."""
    c = loop["continual"]
    lines = ["### Closing the loop: findings 2 and 3 from the decay study's checkpoints\n",
             f"Preregistered: the **{loop['arm']}** arm, pretraining seeds {', '.join(map(str, loop['seeds']))}, starting at "
             f"{', '.join(f'{f:g}' for f in loop['fractions'])} of training"
             + (f", plus the final checkpoints of {', '.join(loop['loop_arms'])} (other H at the same step: the step/H "
                "collinearity broken)" if loop["loop_arms"] else "; no other arm's final checkpoints (loop_arms empty: the "
                "slopes are over one arm's steps, where H and step move together)") + ".",
             f"Continual rows of {c['seq_len']} tokens (pretrained on {c['pretrain_seq_len']}); continual lr {c['lr']:g} "
             f"(the arm's pretraining peak lr {c['pretrain_peak_lr']:g}); {c['steps']} steps; {c['knowledge_facts']} facts per "
             f"passage; {c['tasks_per_kind']} rows per downstream task{rows_note(c)}.\n"]
    if loop["note"]:
        lines.append(f"**{loop['note']}.**\n")
    if loop["points"]:
        lines += ["| arm | seed | start | step | H (seen) | A (%) | ΔP | D before | F (%) | SE(F) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for p in loop["points"]:
            start = f"resuscitated p = {p['resuscitated']:g}" if p.get("resuscitated") is not None else f"{p['fraction']:g}"
            lines.append(f"| {p['arm']} | {p['seed']} | {start} | {p['step']} | {num(p['H'], '.4f')} | {num(p['A'])} | "
                         f"{num(p['dP'], '.4f')} | {num(p.get('D_before'), '.3f')} | {num(p['F'])} | {num(p['F_se'])} |")
        lines.append("")
        if loop.get("downstream_knowledge"):
            lines.append(floor_text(loop["downstream_knowledge"]) + "\n")
    lines += ["Per pretraining seed, the OLS slope over the starting points; across seeds, the mean, its 95% t-interval "
              f"and a two-sided t-test (α = {loop['alpha']}; not judged below {loop['min_seeds']} seeds):",
              slope_line("slope of A on H", loop["slope_A_on_H"], "> 0 (lower H, less acquisition)"),
              slope_line("slope of raw ΔP on H", loop["slope_dP_on_H"], "> 0"),
              slope_line("slope of F on H", loop["slope_F_on_H"], "< 0 (lower H, more forgetting)")]
    se = loop["F_se"]
    if se and se["max"] is not None:
        ok = "below" if se["max"] < se["target"] else "NOT below"
        lines.append(f"- F's standard error ({se['estimate']}): at most {se['max']:.2f} points (median {se['median']:.2f}), {ok} "
                     f"the target of {se['target']:g}; {se['method']}.")
    lines.append("")
    for r in loop["resuscitation"]:
        dA, dF = r["delta_A"], r["delta_F"]
        nums = (f"H {r['H_before']:.4f} → {r['H_after']:.4f} (held-out documents, mean over seeds); "
                f"ΔA = {num(dA and dA['mean'], '+.2f')} {interval(dA and dA['ci'], '+.2f')}, "
                f"ΔF = {num(dF and dF['mean'], '+.2f')} {interval(dF and dF['ci'], '+.2f')}")
        lines.append(f"- resuscitation p = {r['amplify']:g}: {nums}; finding 3 on A **{r['verdict_A']}**, on F **{r['verdict_F']}**"
                     + ("" if r["tested"] else " (H did not rise: the outcome is not judged)"))
    for s in loop.get("resuscitation_skipped", []):
        lines.append(f"- resuscitation skipped on {s['arm']}: {s['reason']}.")
    return "\n".join(lines) + "\n\n"
