"""The decay study's section of the lab report: what the study can test and its gates first, the preregistered
plan, then per arm what it changes, its Δ over seeds with the 95% interval, the p-values, the verdict and the
effect beside OLMo-1B's range (and the last layer's); the trajectories (measurement-noise bands) and the
mechanism diagnostics as figures. Every number comes from `run_decay_study` and the loop."""

from __future__ import annotations

from pathlib import Path

from kentropy.lab.config import changes_text
from kentropy.lab.judge.paper import last_layer_text, scale_text
from kentropy.lab.report.figures import cmap, save, subplots
from kentropy.lab.report.fmt import fmt
from kentropy.lab.report.gates import gates_markdown, testable_markdown


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _interval(ci: list[float] | None) -> str:
    return "[-]" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _trajectories(result: dict, fig_dir: Path) -> str:
    """H / (L ln m) per arm over steps (linear: the plan's contrasts are in the second half), thin lines per
    seed, bands = measurement noise of the mean (document bootstrap); the plan's fractions marked."""
    fig, axes = subplots(1, 2, figsize=(13, 4.5))
    colors = cmap("tab10")
    for col, key in enumerate(("seen", "held_out")):
        ax = axes[col]
        for i, a in enumerate(result["arms"]):
            s, steps, top = a["series"][key], a["steps"], a["max_entropy"]
            x = [st / steps[-1] for st in steps]
            ax.plot(x, [h / top for h in s["knowledge_entropy"]], color=colors(i % 10), label=a["name"], lw=1.4)
            ax.fill_between(x, [c[0] / top for c in s["knowledge_entropy_ci"]], [c[1] / top for c in s["knowledge_entropy_ci"]],
                            color=colors(i % 10), alpha=0.2)
            for run in s["per_seed"]:
                ax.plot(x, [h / top for h in run["knowledge_entropy"]], color=colors(i % 10), lw=0.5, alpha=0.4)
        for c in result["plan"]["contrasts"]:
            ax.axvline(c["from"], color="grey", lw=0.6, ls=":")
        ax.set(xlabel="fraction of training", ylabel="H / (L ln m)", title=f"{key} (dotted: the plan's 'from' fractions)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save(fig, fig_dir / "decay_study.png", dpi=100)


DIAGNOSTICS = (("kl_to_uniform", "KL to uniform (nats, mean over layers)"), ("top1_share", "top-1 share of Cbar"),
               ("top5_share", "top-5 share of Cbar"),
               ("dormant_fraction", "dormant fraction (Cbar_i < 0.1 mean)"), ("max_over_median", "max / median of |c|"),
               ("first_position_share", "share of Σ|c| at the first position"),
               ("weight_norm_cv", "CV of ‖w_in,i‖·‖w_out,i‖"), ("loss", "training loss"))


def _diagnostics(result: dict, fig_dir: Path) -> str:
    """The mechanism diagnostics per arm over training (means over seeds and layers)."""
    fig, axes = subplots(2, 4, figsize=(16, 7.5))
    axes = [ax for row in axes for ax in row]
    colors = cmap("tab10")
    for j, (key, title) in enumerate(DIAGNOSTICS):
        ax = axes[j]
        for i, a in enumerate(result["arms"]):
            d = a["diagnostics"]
            ys = d["mean"].get(key)
            if ys is None:
                continue
            pts = [(st / d["steps"][-1], sum(y) / len(y) if isinstance(y, list) else y) for st, y in zip(d["steps"], ys)
                   if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors(i % 10), label=a["name"], lw=1.2)
        ax.set(xlabel="fraction of training", title=title)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return save(fig, fig_dir / "decay_diagnostics.png", dpi=100)


def decay_section(result: dict, fig_dir: Path) -> str:
    """Markdown for the report."""
    plan, ref, o = result["plan"], result["paper_reference"], result["olmo_1b"]
    primary = plan["primary"]
    lines = ["## The decay study: does knowledge entropy decay in the paper's regime?\n",
             "What this study can test (finding 1: the reference arm's verdict; every arm's below), each finding's gates computed "
             "before any verdict:\n", *testable_markdown(result["testable"], False), "",
             *gates_markdown(result["gates"]), "",
             "**The analysis plan** (preregistered: part of the preset, printed before the run, never adjusted by it):\n"]
    for c in plan["contrasts"]:
        tag = " (primary: the arm's verdict)" if c["name"] == primary else ""
        lines.append(f"- `{c['name']}`: ΔKL = (H at {c['from']:.0%} − H at {c['to']:.0%} of training) / L{tag}")
    lines += [f"- unit: the pretraining seed; per arm the mean ΔKL over seeds with its 95% t-interval; direction: two-sided "
              f"one-sample t-test; size: a minimum-effect test (ΔKL > SESOI) and TOST against ±{plan['sesoi']:g} KL nats per "
              f"layer (the SESOI); α = {plan['alpha']:g}, Holm across arms, separately for each test and contrast",
              "- verdict, the first that holds: `rose` or `decayed` (adjusted direction p < α; `decayed, at least the SESOI` "
              "where the adjusted minimum-effect p < α too), `no decay` (adjusted TOST p < α), `inconclusive`",
              f"- yardstick, a range: {ref['source']}\n",
              *([f"**Changed after a run was seen** (the plan above was not): {d}\n" for d in result.get("deviations", [])]),
              "| arm | changes from the reference | seeds | non-emb. params | tokens / param | Σ lr·wd | epochs | wall (s) "
              "| tokens/s per run |",
              "|---|---|---|---|---|---|---|---|---|",
              f"| OLMo-1B (paper) | - | - | ~1.2e9 | {o['tokens_per_parameter']:.0f} | {o['cumulative_weight_decay']:.1f} | "
              f"{o['epochs']:.0f} | - | - |"]
    for a in result["arms"]:
        r = a["regime"]
        lines.append(f"| {a['name']} | {changes_text(a['changes'])} | {len(a['seeds'])} | {r['non_embedding_parameters']:,} | "
                     f"{a['tokens_per_parameter']:.0f} | {a['cumulative_weight_decay']:.1f} | {r['epochs']:.0f} | "
                     f"{a['wall_seconds']:.0f} | {', '.join(f'{x:,.0f}' for x in a['tokens_per_s'])} |")
    lines += ["", "ΔKL in nats per layer (positive: H fell, the paper's direction), over seeds; p-values two-sided for the "
              "direction, one-sided for the minimum effect (Δ > SESOI), TOST for equivalence, raw and Holm-adjusted; the last "
              "layer's ΔKL beside it.\n",
              "| arm | contrast | steps | ΔKL per seed | mean [95% CI] | p direction (adj.) | p ≥ SESOI (adj.) | p equiv. (adj.) "
              "| last layer [95% CI] | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for a in result["arms"]:
        for c in a["contrasts"]:
            v = f"**{c['verdict']}**" if c["name"] == primary else c["verdict"]
            last = "-" if c.get("last_layer") is None else f"{c['last_layer']['mean']:+.4f} {_interval(c['last_layer']['ci'])}"
            lines.append(f"| {a['name']} | {c['name']} | {c['from_step']} → {c['to_step']} | "
                         f"{', '.join(f'{d:+.4f}' for d in c['per_seed'])} | {c['mean']:+.4f} {_interval(c['ci'])} | "
                         f"{_p(c['p_direction'])} ({_p(c['p_direction_adjusted'])}) | {_p(c['p_minimum_effect'])} "
                         f"({_p(c['p_minimum_effect_adjusted'])}) | {_p(c['p_equivalence'])} ({_p(c['p_equivalence_adjusted'])}) | "
                         f"{last} | {v} |")
    lines += ["", f"Effect sizes beside the paper's range (primary contrast `{primary}`); "
                  f"{last_layer_text(result['arms'][0]['layers'])}:\n"]
    lines += [f"- {a['name']}: **{a['verdict']}**; {a['effect']['text']}" for a in result["arms"]]
    lines += ["", "Leading diagnostics at the end of training (means over seeds and layers; `seen` series): "
              "KL to uniform, top-1 / top-5 share of Cbar, dormant fraction, max/median of |c|, share of Σ|c| at the first "
              "position, CV of the per-neuron weight norms, training loss.\n",
              "| arm | KL | top-1 | top-5 | dormant | max/median | first position | CV ‖w_in‖·‖w_out‖ | loss |",
              "|---|---|---|---|---|---|---|---|---|"]
    for a in result["arms"]:
        m = a["diagnostics"]["mean"]
        last = lambda k: (lambda y: "-" if y is None else fmt(sum(y) / len(y) if isinstance(y, list) else y))(  # noqa: E731
            m[k][-1] if m.get(k) else None)
        lines.append(f"| {a['name']} | {last('kl_to_uniform')} | {last('top1_share')} | {last('top5_share')} | "
                     f"{last('dormant_fraction')} | {last('max_over_median')} | {last('first_position_share')} | "
                     f"{last('weight_norm_cv')} | {last('loss')} |")
    lines += ["", f"KL to uniform per layer, for scale: {scale_text()}.",
              "", f"![decay study]({_trajectories(result, fig_dir)})\n",
              "Bands: 95% bootstrap intervals over the measuring documents, measurement noise only (no part of a verdict).\n",
              f"![decay diagnostics]({_diagnostics(result, fig_dir)})\n"]
    return "\n".join(lines) + "\n"
