"""The report section of closing the loop: continual learning from the decay study's decayed checkpoints."""

from __future__ import annotations


def corr(d: dict | None) -> str:
    """A correlation (`judge.stats.pearson`) in words."""
    return "-" if d is None or d["r"] is None else f"{d['r']:.2f} (p = {d['p']:.3f}, n = {d['n']})"


def loop_section(loop: dict) -> str:
    """Markdown for the report: A and F per starting checkpoint, the correlations, resuscitation."""
    lines = ["### Continual learning from checkpoints whose entropy decayed\n"]
    if not loop["arms"]:
        return "\n".join(lines + [loop["note"] + ".\n"])
    for a in loop["arms"]:
        lines += [f"Arm **{a['name']}** (pretraining seed {a['seed']}): continual learning with the official protocol from "
                  "checkpoints between its entropy peak and the end of pretraining.\n",
                  "| start step | H (seen) | A (%) | F (%) |", "|---|---|---|---|"]
        for r in a["rows"]:
            A = ", ".join(f"{x:.2f}" for x in r["A"])
            F = ", ".join("-" if x is None else f"{x:.2f}" for x in r["F"])
            lines.append(f"| {r['step']} | {r['knowledge_entropy']:.4f} | {A} | {F} |")
        c = a["acquisition_forgetting"]
        lines += ["", f"- r(H, A) = {corr(c['r_entropy_A'])}, verdict **{c['verdict_A']}** (paper: 0.94); "
                      f"r(H, F) = {corr(c['r_entropy_F'])}, verdict **{c['verdict_F']}** (paper: -0.96).",
                  f"- later checkpoints acquire less: r(step, A) = {corr(c['r_step_A'])}, **{c['verdict_step_A']}**; "
                  f"forget more: r(step, F) = {corr(c['r_step_F'])}, **{c['verdict_step_F']}**."]
        h = a["resuscitation"]
        for p, row in h["by_amplify"].items():  # deltas: mean over seeds of (resuscitated - plain), see analysis
            dF = "-" if row["delta_F"] is None else f"{row['delta_F']['mean']:+.2f}"
            lines.append(f"- resuscitated final checkpoint, P = {p}: ΔA = {row['delta']['mean']:+.2f}, ΔF = {dF}")
        lines.append(f"- finding 3 on A: **{h['verdict_A']}**; on F: **{h['verdict_F']}**\n")
    return "\n".join(lines) + "\n"
