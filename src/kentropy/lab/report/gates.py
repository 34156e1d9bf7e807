"""What a design can test, said first: the testable table (printed with the plan before anything runs, first in
the report and first in the closing summary), the gates with their numbers, and the deviations.

The table lists each finding with `testable: yes` or `no (why)`; where the demo (`kentropy lab --preset quick`,
`make demo`) cannot test a finding, its verdict reads `not measurable in the demo` and names the decay study
(`make decay`), the lab's design for findings 1-3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kentropy.lab.judge.plan import FINDINGS, KNOWLEDGE_MARGIN, KNOWLEDGE_SE, POWER_TARGET
from kentropy.lab.judge.verdicts import NOT_MEASURABLE

DEMO = "quick"  # the preset `make demo` runs
DECAY_STUDY = "`make decay` (the decay study) is the lab's design for it"


def verdict_cell(verdict: str, testable: bool, demo: bool) -> str:
    """A verdict as the testable table shows it: in the demo, a finding it cannot test reads `not measurable in the
    demo` and names the decay study."""
    if demo and not testable and verdict == NOT_MEASURABLE:
        return f"**not measurable in the demo**; {DECAY_STUDY}"
    return f"**{verdict}**"


def testable_markdown(rows: Sequence[Mapping], demo: bool) -> list[str]:
    """The report's first table: finding, testable (yes / no), why not, verdict (`judge.findings.can_test`'s rows)."""
    lines = ["| finding | testable | why not | verdict |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['finding']}. {r['title']} | {'yes' if r['testable'] else 'no'} | {r['why'] or '-'} | "
                     f"{verdict_cell(r['verdict'], r['testable'], demo)} |")
    return lines


def testable_lines(rows: Sequence[Mapping], demo: bool, prefix: str = "") -> list[str]:
    """The same table for the console; rows without a `verdict` (the plan's, before the runs) get no verdict."""
    out = []
    for r in rows:
        line = f"{prefix}{r['finding']:<3} {r['title'][:56]:<56} testable: {'yes' if r['testable'] else 'no (' + r['why'] + ')'}"
        if "verdict" in r:
            v = r["verdict"]
            line += "; " + ("not measurable in the demo (make decay)" if demo and not r["testable"] and v == NOT_MEASURABLE else v)
        out.append(line)
    return out


def _power_cell(g: Mapping) -> str:
    if g.get("per_amplify"):
        return "; ".join(f"p = {p}: {_power_cell(x)}" for p, x in g["per_amplify"].items())
    sd = "no pilot" if g.get("sd") is None else f"pilot sd {g['sd']:.4g}"
    mde = "-" if g.get("mde") is None else f"{g['mde']:.4g}"
    if g.get("paper_effect") is not None:
        against = f"paper-implied {g['paper_effect']:+.4g}"
    elif g.get("sesoi") is not None:
        against = f"the SESOI {g['sesoi']:g}"
    else:
        against = g.get("paper_effect_text") or "no paper-implied size"
    power = "" if g.get("power") is None else f" (power {g['power']:.2f})"
    return f"{sd}, {g.get('seeds')} seeds: MDE {mde} {g.get('units', '')} vs {against}{power}"


def _knowledge_cell(g: Mapping) -> str:
    if not g.get("applies", True):
        return "n/a"
    parts = []
    for which in ("whole", "head"):
        rs = [r for r in g[which] if r["margin"] is not None]
        if rs:
            worst = min(rs, key=lambda r: r["margin"] - max(KNOWLEDGE_MARGIN, KNOWLEDGE_SE * r["se"]))
            parts.append(f"{which}: {sum(r['passed'] for r in g[which])}/{len(g[which])} passed, least margin "
                         f"{worst['margin']:+.3f} (D {worst['D_before']:.3f} vs floor {worst['floor']:.3f}, SE {worst['se']:.3f})")
        else:
            parts.append(f"{which}: not measured")
    return "; ".join(parts)


def _manipulation_cell(g: Mapping) -> str:
    if not g.get("applies", True):
        return "n/a"
    return "; ".join(f"p = {p}: H rose in {len(e['counted'])}/{len(e['seeds'])} seeds" for p, e in g["per_amplify"].items())


def gates_markdown(gates: Mapping[str, Mapping]) -> list[str]:
    """Per finding its gates with their numbers (`judge/gates.py`), each passed or not."""
    def mark(g: Mapping) -> str:
        return "n/a" if not g.get("applies", True) else ("passed" if g["passed"] else "**failed**")

    lines = [f"Knowledge: D before continual learning above the prior-only floor by ≥ {KNOWLEDGE_MARGIN} and ≥ {KNOWLEDGE_SE:g} SE "
             f"per seed and start, on the whole task set and the head band; power: ≥ {POWER_TARGET:.0%} against the "
             "paper-implied effect, from a pilot's between-seed spread; manipulation: Algorithm 1's p counted where H rose.\n",
             "| finding | regime | knowledge | power | manipulation |", "|---|---|---|---|---|"]
    for key, g in gates.items():
        reg = g.get("regime")
        reg_cell = "n/a" if reg is None or not reg.get("applies", True) else (
            f"{mark(reg)}: {reg['tokens_per_parameter']:.3g} tokens/param, Σ lr·wd {reg['cumulative_weight_decay']:.3g}")
        k, p, m = g["knowledge"], g["power"], g["manipulation"]
        lines.append(f"| {key} | {reg_cell} | {mark(k)}{'' if not k.get('applies', True) else ': ' + _knowledge_cell(k)} | "
                     f"{mark(p)}: {_power_cell(p)} | {mark(m)}{'' if not m.get('applies', True) else ': ' + _manipulation_cell(m)} |")
    return lines


def power_plan_lines(gates: Mapping[str, Mapping], prefix: str = "[lab]   ") -> list[str]:
    """The power gates as the plan prints them before the main runs: MDE beside the paper-implied effect."""
    out = []
    for key, g in gates.items():
        out.append(f"{prefix}{key:<3} {FINDINGS[key][:56]:<56} {_power_cell(g)}"
                   + ("" if g.get("passed", True) else ": not measurable"))
    return out
