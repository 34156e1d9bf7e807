"""The decay study's section of the lab report: regime table beside OLMo-1B, trajectories with
intervals, verdicts per arm, and what each arm rules out. Every number comes from `run_decay_study`."""

from __future__ import annotations

from pathlib import Path

from kentropy.lab.judge.verdicts import DECAYS, DID_NOT_HOLD
from kentropy.lab.report.figures import cmap, save, subplots
from kentropy.lab.report.fmt import fmt

# what an arm that does not decay rules out, by the factor it changes
RULES_OUT = {
    "arch": "the FFN activation ({value}) alone does not make knowledge entropy decay here",
    "init": "OLMo's initialization ({value}) alone does not produce the decay",
    "weight_decay": "weight decay {value} (cumulative {cwd:.1f}) does not produce it",
    "schedule": "the {value} schedule does not produce it",
    "hidden": "width {value} at equal tokens per parameter does not produce it",
    "unique_fraction": "repeating a small world {epochs:.0f}x does not produce it",
}


def _figure(result: dict, fig_dir: Path) -> str:
    """Top: whole trajectories (H / L ln m, log steps, 95% bootstrap bands, thin lines per seed).
    Bottom: the same from each arm's collapse on, where a decay would show."""
    arms = result["arms"]
    fig, axes = subplots(2, 2, figsize=(13, 8.5))
    colors = cmap("tab10")
    for col, (key, title) in enumerate((("seen", "first pretraining batches (seen; the paper's data)"),
                                        ("held_out", "held-out world text"))):
        for row in (0, 1):
            ax = axes[row][col]
            for i, a in enumerate(arms):
                s = a["series"][key]
                keep = [j for j, st in enumerate(a["steps"]) if row == 0 or st >= a["collapse_step"]]
                steps = [max(a["steps"][j], 1) for j in keep]
                norm = lambda xs: [xs[j] / a["max_entropy"] for j in keep]  # noqa: E731
                ax.plot(steps, norm(s["knowledge_entropy"]), marker=".", color=colors(i % 10), label=a["name"], lw=1.4)
                ax.fill_between(steps, norm([c[0] for c in s["knowledge_entropy_ci"]]), norm([c[1] for c in s["knowledge_entropy_ci"]]),
                                color=colors(i % 10), alpha=0.2)
                for run in s["per_seed"]:
                    ax.plot(steps, norm(run["knowledge_entropy"]), color=colors(i % 10), lw=0.5, alpha=0.5)
            ax.set(xscale="log", xlabel="pretraining step (log; init at 1)", ylabel="H / (L ln m)",
                   title=title if row == 0 else f"{title}: from each arm's collapse on")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save(fig, fig_dir / "decay_study.png", dpi=100)


def rules_out(arm: dict) -> str | None:
    """The mechanism an arm that did not decay rules out (None for the reference or an arm that decays)."""
    if arm["verdict"] != DID_NOT_HOLD or not arm["overrides"]:
        return None
    keys = [k for k in RULES_OUT if k in arm["overrides"]]
    if not keys:
        return None
    k = keys[0]
    return RULES_OUT[k].format(value=arm["overrides"][k], cwd=arm["cumulative_weight_decay"], epochs=arm["regime"]["epochs"])


def decay_section(result: dict, fig_dir: Path) -> str:
    """Markdown for the report."""
    fig = _figure(result, fig_dir)
    o = result["olmo_1b"]
    lines = ["## The decay study: does knowledge entropy decay in the paper's regime?\n",
             "Tiny models pretrained into OLMo-1B's regime (tokens per non-embedding parameter, cumulative weight "
             "decay), one factor changed per arm. H is measured at log-spaced checkpoints on the rows of each run's "
             "first pretraining batches (the paper's measuring data) and on held-out world text; intervals are 95% "
             "bootstrap intervals over the measuring documents (paired across checkpoints for changes).\n",
             f"![decay study]({fig})\n",
             "| arm | change | seeds | non-emb. params | tokens / param | Σ lr·wd | 1/(lr·wd) share of run | epochs | wall (s) | tokens/s per run |",
             "|---|---|---|---|---|---|---|---|---|---|",
             f"| OLMo-1B (paper) | - | - | ~1.2e9 | {o['tokens_per_parameter']:.0f} | {o['cumulative_weight_decay']:.1f} | "
             f"{o['equilibrium_share']:.3f} | {o['epochs']:.0f} | - | - |"]
    for a in result["arms"]:
        r = a["regime"]
        change = ", ".join(f"{k}={v}" for k, v in a["overrides"].items()) or "-"
        eq = fmt(r["equilibrium_share"]) if r["equilibrium_share"] is not None else "∞"
        lines.append(f"| {a['name']} | {change} | {len(a['seeds'])} | {r['non_embedding_parameters']:,} | "
                     f"{a['tokens_per_parameter']:.0f} | {a['cumulative_weight_decay']:.1f} | {eq} | {r['epochs']:.0f} | "
                     f"{a['wall_seconds']:.0f} | {', '.join(f'{x:,.0f}' for x in a['tokens_per_s'])} |")
    lines += ["", "Verdict per arm (trained checkpoints after warmup; the peak is taken after the early collapse "
              "where H recovers from it; `held`: every seed falls from its peak to the end with a 95% interval "
              "below 0 and loses at least 10% of its recovery from the collapse; `direction only`: falls that much in every "
              "seed, some interval reaches 0; `did not hold`: some seed ends at its peak or loses less than 10%).\n",
              "| arm | H init → collapse → peak → end (seen) | peak step | change peak→end [95% CI] | share of the recovery lost | per seed | verdict (seen) | verdict (held-out) | attention H peak→end | next-token H peak→end | final loss |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in result["arms"]:
        s, h = a["series"]["seen"], a["series"]["held_out"]
        steps = a["steps"]
        i_peak, i_col = steps.index(a["peak_step"]), steps.index(a["collapse_step"])
        traj = " → ".join(fmt(a["knowledge_entropy"][i]) for i in (0, i_col, i_peak, len(steps) - 1))
        seeds = "; ".join(f"{c:+.4f} [{lo:+.4f}, {hi:+.4f}]" for c, (lo, hi) in zip(s["changes"], s["change_cis"]))
        att = f"{fmt(s['attention_entropy'][i_peak])} → {fmt(s['attention_entropy'][-1])}"
        nt = f"{fmt(s['next_token_entropy'][i_peak])} → {fmt(s['next_token_entropy'][-1])}"
        rise = a["knowledge_entropy"][i_peak] - a["knowledge_entropy"][i_col]
        # how much of the climb back from the collapse the fall undoes (> 100%: it ends below the collapse)
        lost = "-" if a["change"] >= 0 or rise <= 0 else (">100%" if -a["change"] > rise else f"{-a['change'] / rise:.0%}")
        lines.append(f"| {a['name']} | {traj} | {a['peak_step']} | {a['change']:+.4f} [{a['change_ci'][0]:+.4f}, "
                     f"{a['change_ci'][1]:+.4f}] | {lost} | {seeds} | **{a['verdict']}** | {h['verdict']} | {att} | {nt} | "
                     f"{', '.join(fmt(x) for x in a['final_loss'])} |")
    decays = [a["name"] for a in result["arms"] if a["verdict"] in DECAYS]
    lines.append("")
    if decays:
        lines.append(f"Knowledge entropy falls after its peak (at least in direction) in: {', '.join(decays)}.")
    else:
        lines.append("**No arm decays**: in every arm knowledge entropy ends at or near its post-collapse peak.")
    ruled = [(a["name"], rules_out(a)) for a in result["arms"]]
    ruled = [(n, t) for n, t in ruled if t]
    if ruled:
        lines.append("\nWhat the arms that did not decay rule out (within this regime and scale):\n")
        lines += [f"- {n}: {t}." for n, t in ruled]
    lines.append("\nThe plain-FFN arms (GELU, ReLU) are Nemotron blocks: they also change RMSNorm to LayerNorm1P. "
                 "Arms other than the reference and the narrow one run at fewer tokens per parameter than the reference "
                 "(see the table), so a difference from the reference may also come from the length of the run.\n")
    return "\n".join(lines) + "\n"
