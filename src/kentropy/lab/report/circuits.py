"""The circuits study's section of the report: the metrics table, two figures and the findings table."""

from __future__ import annotations

from pathlib import Path

from kentropy.circuits.plot import plot_circuits
from kentropy.lab.judge.circuits import SPLITS
from kentropy.lab.judge.verdicts import DID_NOT_HOLD, NOT_MEASURABLE
from kentropy.lab.report.figures import save, subplots
from kentropy.lab.report.fmt import fmt
from kentropy.lab.stages.circuits import ROLES


def _measured(result: dict) -> list[str]:
    return [s for s in SPLITS if not result["splits"][s]["skipped"]]


def _shift_figure(result: dict, path: Path) -> None:
    steps = [c["step"] for c in result["checkpoints"]]
    fig, axes = subplots(1, 2, figsize=(10, 3.8))
    for s in _measured(result):
        vals = [c["splits"][s] for c in result["checkpoints"]]
        axes[0].plot(steps[1:], [None if v["edge_jaccard_prev"] is None else 1 - v["edge_jaccard_prev"] for v in vals[1:]],
                     marker="o", label=s)
        axes[1].plot(steps, [v["lower_half_share"] for v in vals], marker="o", label=s)
    axes[0].set(xlabel="continual-training step", ylabel="1 - edge Jaccard with previous checkpoint",
                title="How much the circuit changes (formation -> optimization)")
    axes[1].set(xlabel="continual-training step", ylabel=f"share of edges into layers 0-{result['layers'] // 2 - 1}",
                title="Edges into the lower half of layers (deep -> shallow)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def circuits_section(result: dict, figures_dir: Path) -> str:
    """Markdown section with the metrics table, two figures (saved in `figures_dir`) and the findings table."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    conf, L = result["config"], []
    add = L.append
    add("## Knowledge circuits (Ou et al. 2025)\n")
    rel = ", ".join(result["splits"]["related"]["relations"]) or "-"
    add(f"A knowledge circuit is the subgraph of attention heads and MLPs that carries a factual recall. It is found with "
        f"EAP-IG ({conf['ig_steps']} integrated-gradient steps) on clean prompts \"subject + relation phrase\" against corrupted "
        f"ones (another subject of equal token length), kept as the top {conf['top_n']} edges with dead nodes pruned, and "
        f"followed over the checkpoints of the continual-learning run from the final pretraining checkpoint (step 0 = the "
        f"start, the last = final). Splits: **new** = the injected fictional entities (recall prompts cut from their "
        f"`{'/'.join(conf['probe_kinds'])}` probes); **related** = facts of the most popular world entities, which the model "
        f"read in pretraining (relations kept apart: {rel}). The lab injects no new facts about known entities, so "
        f"\"related\" is the model's own world knowledge, not newly acquired related knowledge as in the paper. At most "
        f"{conf['examples']} examples per task. Faithfulness = (m(circuit) − m(corrupted)) / (m(clean) − m(corrupted)) with m "
        f"the target logit (example-weighted over a split's tasks); Hit@10 = target in the top 10 with everything outside the "
        f"circuit patched to its corrupted value (model: the unpatched model); Jaccard with the final circuit's nodes / edges; "
        f"heads counted as mover / relation / mixed by their direct logit attribution from subject vs relation tokens (ratio 10).\n")
    for s in SPLITS:
        if result["splits"][s]["skipped"]:
            add(f"- Split **{s}** not measured: {result['splits'][s]['skipped']}.")
    measured = _measured(result)
    if measured:
        fig_main, fig_shift = figures_dir / "circuits.png", figures_dir / "circuits_shift.png"
        plot_circuits([{"model": c["label"], "revision": None, "step": c["step"],
                        "tasks": [{"task": s, **c["splits"][s]} for s in measured]} for c in result["checkpoints"]],
                      str(fig_main))
        _shift_figure(result, fig_shift)
        rel_dir = figures_dir.name
        add(f"\n![circuit metrics per checkpoint]({rel_dir}/{fig_main.name})\n\n![circuit change and layer shift]({rel_dir}/{fig_shift.name})\n")
        add("| step | checkpoint | split | tasks (examples) | faithfulness | Hit@10 circuit | Hit@10 model | node J final | "
            "edge J final | edge J previous | lower-half share | heads mover/relation/mixed |")
        add("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for c in result["checkpoints"]:
            for s in measured:
                v = c["splits"][s]
                roles = "/".join(str(v["role_counts"][r]) for r in ROLES)
                add(f"| {c['step']} | {c['label']} | {s} | {v['tasks']} ({v['examples']}) | {fmt(v['faithfulness'])} | "
                    f"{fmt(v['hit_at_10'])} | {fmt(v['hit_at_10_clean'])} | {fmt(v['node_jaccard'])} | {fmt(v['edge_jaccard'])} | "
                    f"{fmt(v['edge_jaccard_prev'])} | {fmt(v['lower_half_share'])} | {roles} |")
        errors = [(c["label"], t["task"], t["error"]) for c in result["checkpoints"] for s in measured
                  for t in c["splits"][s]["per_task"] if "error" in t]
        for label, task, err in errors:
            add(f"- {label}, task {task}: not analysed ({err}).")
    add("\n| Finding (Ou et al. 2025) | Verdict here | Numbers |")
    add("|---|---|---|")
    for f in result["findings"].values():
        why = f" ({f['why']})" if f["why"] else ""
        stats = "; ".join(f"{k} {s['mean']:+.3g} [{s['ci'][0]:+.3g}, {s['ci'][1]:+.3g}], p = {s['p']:.3g}"
                          for k, s in (f["statistics"] or {}).items() if s["ci"])
        add(f"| {f['finding']} | **{f['verdict']}**{why} | {f['detail']}{'; across runs: ' + stats if stats else ''} |")
    add("\nEach run (a pretraining seed's continual run) gives per finding statistics that are positive in the paper's "
        "direction: (1) at the final checkpoint, the related split's Hit@10 and faithfulness minus the new split's; (2) the "
        "rise of the edge Jaccard with the final circuit from the start to the last checkpoint before the final, and the "
        "circuit's change per step in the first half of the run minus that in the second; (3) the share of circuit edges "
        f"into the lower half of layers (0-{result['layers'] // 2 - 1}) at the final checkpoint minus at the start. Findings 2 "
        "and 3 average the measured splits. Across runs each statistic is tested (two-sided t-test): **held** where all of "
        "a finding's are significant in the paper's direction, **did not hold** where one is significant the other way, "
        f"else **inconclusive**; this study ran {len(result['seeds'])} run(s), and one run is inconclusive.\n")
    for f in result["findings"].values():
        if f["verdict"] == DID_NOT_HOLD:
            add(f"- \"{f['finding']}\" did not reproduce in this lab run ({f['detail']}).")
        elif f["verdict"] == NOT_MEASURABLE:
            add(f"- \"{f['finding']}\" could not be measured here ({f['why']}).")
    add("")
    return "\n".join(L) + "\n"
