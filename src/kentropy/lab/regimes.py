"""The regimes study: where does knowledge entropy decay, and where does it not?

A first trial at small scale (10 epochs over a small corpus) saw entropy fall and then rise as
the learning rate decayed. This study pretrains the lab model under varied data repetition,
model width and weight decay (each a short pretraining with the same token budget) and
under a constant learning rate, and applies the same decay test (`analysis.entropy_decay`) to each trajectory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kentropy.io import write_atomic  # noqa: E402
from kentropy.lab import analysis  # noqa: E402
from kentropy.lab.config import LabConfig  # noqa: E402
from kentropy.lab.stages import Done, Stages  # noqa: E402


def regimes(cfg: LabConfig) -> dict[str, dict]:
    """Name -> LabConfig overrides. One factor changes at a time from the reference."""
    base = {"pretrain_tokens": cfg.regime_tokens, "checkpoints": 8}
    wide = {"hidden": cfg.hidden * 2, "heads": cfg.heads * 2, "ffn": cfg.ffn * 2}
    narrow = {"hidden": max(cfg.hidden // 2, cfg.hidden // cfg.heads), "heads": max(1, cfg.heads // 2), "ffn": max(8, cfg.ffn // 2)}
    return {
        "reference": base,
        "repeat x8": base | {"repeat": 8},
        "narrow (width / 2)": base | narrow,
        "wide (width x 2)": base | wide,
        "no weight decay": base | {"weight_decay": 0.0},
        "weight decay 1.0": base | {"weight_decay": 1.0},  # a long run's cumulative decay, compressed
        "constant lr": base | {"schedule": "constant"},  # does the rise come from the learning-rate decay?
    }


def regimes_study(stages: Stages, cfg: LabConfig, tok: Done, device: str) -> dict:
    from kentropy.lab.pipeline import corpora_stage, measure_stage, pretrain_stage

    out = {}
    for i, (name, over) in enumerate(regimes(cfg).items()):
        rc = dataclasses.replace(cfg, **over)
        corp = corpora_stage(stages, rc, tok, name=f"regime{i}-corpora")
        pre = pretrain_stage(stages, rc, tok, corp, device, name=f"regime{i}-pretrain")
        meas = measure_stage(stages, rc, pre, corp, device, name=f"regime{i}-measure")
        res = sorted(meas.result["results"], key=lambda r: r["step"])
        steps, h = [r["step"] for r in res], [r["knowledge_entropy"] for r in res]
        out[name] = {"overrides": over, "steps": steps, "knowledge_entropy": h, "final_loss": pre.result["loss"][-1][1],
                     "decay": analysis.entropy_decay(steps, h)}
    return out


def regimes_section(result: dict, fig_dir: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in result.items():
        ax.plot(r["steps"], r["knowledge_entropy"], marker=".", label=name)
    ax.set(xlabel="pretraining step", ylabel="knowledge entropy", title="Knowledge entropy by regime")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = fig_dir / "regimes.png"
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    lines = ["## Regimes: where does knowledge entropy decay?\n", f"![regimes](figures/{path.name})\n",
             "| regime | change | H first → last trained checkpoint | Spearman ρ | largest rise | final loss | decay |",
             "|---|---|---|---|---|---|---|"]
    for name, r in result.items():
        d = r["decay"]
        change = ", ".join(f"{k}={v}" for k, v in r["overrides"].items() if k not in ("pretrain_tokens", "checkpoints")) or "-"
        rho = "-" if d["spearman"]["rho"] is None else f"{d['spearman']['rho']:.2f}"
        lines.append(f"| {name} | {change} | {d['first']:.4f} → {d['last']:.4f} | {rho} | {d['max_rise']:.4f} | "
                     f"{r['final_loss']:.3f} | {d['verdict']} |")
    held = [n for n, r in result.items() if r["decay"]["verdict"] != "did not hold"]
    failed = [n for n, r in result.items() if r["decay"]["verdict"] == "did not hold"]
    lines.append(f"\nDecay (at least in direction) in: {', '.join(held) or 'none'}. Not in: {', '.join(failed) or 'none'}.\n")
    return "\n".join(lines) + "\n"
