"""The scale ladder's part of the report: per width its regime, throughput (tokens/s, MFU against the
stated peak) and the preregistered contrasts over seeds (ΔKL per layer, t-interval, verdict)."""

from __future__ import annotations


def _ci(ci) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "— (one seed: inconclusive)"


def ladder_section(result: dict) -> str:
    lines = ["# Scale ladder", "",
             "OLMo's block at growing widths, the same tokens per non-embedding parameter and the same Σ lr·wd at every "
             "width, seeds stacked per width. ΔKL per layer = (H[from] − H[to]) / L per seed (positive: entropy fell); "
             "95% t-interval over seeds; Holm across widths.", "",
             f"Peak: {result['peak_source']}.", "",
             "| width | seeds | params | steps | tokens | Σ lr·wd | tokens/s | MFU | final loss | still learning | device |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in result["widths"]:
        mfu = f"{w['mfu']:.1%}" if w["mfu"] is not None else "—"
        loss = sum(s["final_loss"] for s in w["seeds"]) / len(w["seeds"])
        learning = sum(s["still_learning"] for s in w["seeds"])
        lines.append(f"| {w['width']} | {len(w['seeds'])} | {w['non_embedding_parameters']:,} | {w['steps']:,} | {w['tokens']:,} | "
                     f"{w['cumulative_weight_decay']:.2f} | {w['tokens_per_s']:,.0f} | {mfu} | {loss:.3f} | "
                     f"{learning}/{len(w['seeds'])} | {w['device']}, {w['dtype']}{', compiled' if w['compiled'] else ''} |")
    lines += ["", "| width | contrast | steps | ΔKL per layer (mean) | 95% interval | verdict |", "|---|---|---|---|---|---|"]
    for w in result["widths"]:
        for c in w["contrasts"]:
            lines.append(f"| {w['width']} | {c['name']} | {c['from_step']} → {c['to_step']} | {c['mean']:+.4f} | {_ci(c['ci'])} | "
                         f"{c['verdict']} |")
    lines += ["", f"The widest width {'is' if result['widest_still_learning'] else 'is NOT'} still learning at the end "
              "(its mean training loss over the last 10% of steps is below that of the 10% before, in every seed).", ""]
    return "\n".join(lines)
