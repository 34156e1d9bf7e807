"""The report section of closing the loop: findings 2 and 3 from the decay study's checkpoints."""

from __future__ import annotations

from kentropy.lab.judge.plan import KNOWLEDGE_MARGIN, KNOWLEDGE_SE


def num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def interval(ci: list[float] | None, fmt: str = ".2f") -> str:
    return "-" if ci is None else f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def verdict_text(v: str, why: str | None) -> str:
    return f"**{v}**" + (f" ({why})" if why else "")


def slope_line(name: str, s: dict, paper: str) -> str:
    """One slope across seeds (`judge.findings.slope_finding`) in words, beside the paper-implied slope."""
    per = ", ".join(f"{x:+.3g}" for x in s["per_seed"] or []) or "-"
    implied = "" if s.get("paper_effect") is None else f", at least {s['paper_effect']:+.3g} {s['units']}"
    return (f"- {name}: mean {num(s['mean'], '+.3g')}, 95% CI {interval(s['ci'], '+.3g')}, p = {num(s['p'], '.3f')} "
            f"(per seed: {per}); paper: {paper}{implied}; verdict {verdict_text(s['verdict'], s.get('why'))}")


def resuscitation_lines(f3: dict) -> list[str]:
    """Finding 3 per p of the grid: the seeds where H rose, ΔA and ΔP after (3a), ΔF and ΔD after (3b), each with
    its interval over those seeds and its verdict."""
    out = []
    for e in f3["by_amplify"]:
        def part(key: str, rel: str, absolute: str) -> str:
            x = e[key]
            a, b = x.get(rel), x.get(absolute)
            nums = (f"Δ{rel} {num(a['mean'], '+.3g')} {interval(a['ci'], '+.3g')}, Δ{absolute} {num(b['mean'], '+.3g')} "
                    f"{interval(b['ci'], '+.3g')}" if a and b else "-")
            implied = "" if x["paper_effect"] is None else f" (paper-implied Δ{rel} at least {x['paper_effect']:+.3g})"
            return f"{key} {nums}{implied}: {verdict_text(x['verdict'], x['why'])}"

        rise = "-" if e["kl_rise_per_layer"] is None else f"{e['kl_rise_per_layer']:+.4f}"
        out.append(f"- resuscitation p = {e['amplify']:g}: H rose in seed(s) {', '.join(map(str, e['counted_seeds'])) or 'none'} "
                   f"(not in {', '.join(map(str, e['uncounted_seeds'])) or 'none'}; mean rise {rise} nats per layer); "
                   f"{part('3a', 'A', 'P_after')}; {part('3b', 'F', 'D_after')}")
    return out


def rows_note(c: dict) -> str:
    """Where a task has fewer rows than asked (the world gives no more), which and how many."""
    short = {t: n for t, n in c.get("rows_per_task", {}).items() if n < c["tasks_per_kind"]}
    return f" (all the world gives: {', '.join(f'{t} {n}' for t, n in short.items())})" if short else ""


def floor_text(k: dict) -> str:
    """D before continual learning against the prior-only guess (`judge.stats.against_floor`), in words."""
    where = ("above it; whether that is knowledge enough to forget is the knowledge gate's to say (at least "
             f"{KNOWLEDGE_MARGIN} and {KNOWLEDGE_SE:g} standard errors above the floor, per seed and start)" if k["above"] else
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
              f"and a two-sided t-test (α = {loop['alpha']}), beside the paper-implied slope (`judge.paper`):",
              slope_line("slope of A on H", loop["slope_A_on_H"], "> 0 (lower H, less acquisition)"),
              slope_line("slope of raw ΔP on H", loop["slope_dP_on_H"], "> 0"),
              slope_line("slope of F on H", loop["slope_F_on_H"], "< 0 (lower H, more forgetting)")]
    se = loop["F_se"]
    if se and se["max"] is not None:
        ok = "below" if se["max"] < se["target"] else "NOT below"
        lines.append(f"- F's standard error ({se['estimate']}): at most {se['max']:.2f} points (median {se['median']:.2f}), {ok} "
                     f"the target of {se['target']:g}; {se['method']}.")
    lines.append("")
    lines += resuscitation_lines(loop["resuscitation"])
    res = loop["resuscitation"]
    lines.append(f"- finding 3 over the grid: on A {verdict_text(res['verdict_A'], res['why_A'])}; on F "
                 f"{verdict_text(res['verdict_F'], res['why_F'])}")
    for s in loop.get("resuscitation_skipped", []):
        lines.append(f"- resuscitation skipped on {s['arm']}: {s['reason']}.")
    return "\n".join(lines) + "\n\n"
