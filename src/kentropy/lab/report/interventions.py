"""The report's section on plasticity interventions: per start, one table of H, A and F with intervals per
method, the paired differences from no intervention and from Algorithm 1, and which methods beat them."""

from __future__ import annotations

from kentropy.lab.report.fmt import fmt, fmt_ci


def _ci(c: dict) -> str:
    return "-" if c["mean"] is None else fmt_ci(c)


def _diff(d: dict | None) -> str:
    """`mean [lo, hi], p_Holm = x (verdict)` of a paired difference."""
    if d is None:
        return "-"
    if "mean" not in d:
        return d["verdict"]
    ci = "" if d["ci"] is None else f" [{d['ci'][0]:.2f}, {d['ci'][1]:.2f}]"
    p = "" if d.get("p_holm") is None else f", p_Holm = {d['p_holm']:.3g}"
    return f"{d['mean']:+.2f}{ci}{p} ({d['verdict']})"


def _edit_cell(m: dict) -> str:
    check = m["manipulation"]
    if check is None:
        return "-"
    if m["knowledge_entropy_after_edit"] is None:
        return f"not applied: {check['note']}"
    word = "raised H" if check["raised_entropy"] else "did NOT raise H: not tested"
    return f"{fmt(m['knowledge_entropy_after_edit'])} ({word})"


def _list(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def start_table(s: dict) -> list[str]:
    lines = [f"### From the {s['name']}'s final checkpoint (step {s['step']}, H = {fmt(s['knowledge_entropy'])})", "",
             "| method | H after the edit | H at the end (mean over seeds) | A (%) [95% CI] | F (%) [95% CI] "
             "| ΔA vs none | ΔF vs none | ΔA vs Algorithm 1 | ΔF vs Algorithm 1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in s["methods"]:
        hf = m["knowledge_entropy_final"]
        h_end = fmt(sum(hf) / len(hf)) if hf else "-"
        vs_none, vs_a1 = m.get("vs_none", {}), m.get("vs_algorithm_1", {})
        lines.append(f"| {m['method']} | {_edit_cell(m)} | {h_end} | {_ci(m['A'])} | {_ci(m['F'])} | {_diff(vs_none.get('A'))} "
                     f"| {_diff(vs_none.get('F'))} | {_diff(vs_a1.get('A'))} | {_diff(vs_a1.get('F'))} |")
    b = s["beat"]
    lines += ["",
              f"- Beat no intervention: on A (more acquisition) {_list(b['vs_none']['A'])}; "
              f"on F (less forgetting) {_list(b['vs_none']['F'])}.",
              f"- Beat Algorithm 1: on A {_list(b['vs_algorithm_1']['A'])}; on F {_list(b['vs_algorithm_1']['F'])}.",
              ""]
    for m in s["methods"]:
        counts = [n for n in m.get("recycled_neurons", []) if n is not None]
        if counts:
            lines += [f"- {m['method']} recycled {', '.join(map(str, counts))} neurons in all (per seed).", ""]
    not_tested = [m["method"] for m in s["methods"] if m["manipulation"] is not None and not m["manipulation"]["raised_entropy"]]
    if not_tested:
        lines += [f"- Not tested (the edit did not raise H as intended, so its outcome is shown but not judged): "
                  f"{', '.join(not_tested)}.", ""]
    return lines


def interventions_section(result: dict) -> str:
    p, seeds = result["params"], result["seeds"]
    lines = ["## Plasticity interventions", "",
             f"Every method starts from the same final checkpoint and then runs the lab's continual learning (the same "
             f"protocol and seeds {seeds}). Parameters, fixed in the preset before any run: Algorithm 1 ratio "
             f"{result['algorithm_1']['ratio']:g}, P = {p['amplify']:g}; ReDo τ = {p['redo_threshold']:g}; shrink and perturb "
             f"λ = {p['shrink']:g}, σ = {p['perturb']:g}; rehearsal {p['replay_fraction']:g} of every batch's rows from the "
             f"world's pretraining stream (never injected rows); HFT freezes a seeded half of each block's matrices per "
             f"injection round; continual ReDo every {p['recycle_every']} steps at τ = {p['redo_threshold']:g}. "
             f"H is measured on the held-out world documents. A difference is the paired one over seeds (method − reference) "
             f"with a 95% t-interval and a two-sided paired t-test, Holm-adjusted across the methods compared; a method "
             f"beats the reference (`held`) when it is better (A higher, F lower) at adjusted p < {result['alpha']:g}. "
             f"An edit must raise H first: one that did not is `not tested`.", ""]
    for s in result["starts"]:
        lines += start_table(s)
    if result["decay_arms_note"]:
        lines += [f"Decay-study arms: {result['decay_arms_note']}.", ""]
    return "\n".join(lines) + "\n"
