"""Figure of `kentropy circuits` results: each metric against the checkpoint (Ou et al. 2025, Figs. 2-5)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kentropy.errors import KentropyError  # noqa: E402
from kentropy.io import write_atomic  # noqa: E402

LINES = (("faithfulness", "Faithfulness"), ("hit_at_10", "Hit@10 (circuit)"),
         ("node_jaccard", "Node Jaccard with final"), ("edge_jaccard", "Edge Jaccard with final"))


def _x(results: list[dict]) -> tuple[list[float], str, list[str]]:
    labels = [r["revision"] or r["model"].rstrip("/").split("/")[-1] for r in results]
    steps = [r.get("step") for r in results]
    if all(s is not None for s in steps) and len(set(steps)) == len(steps):
        return steps, "training step", labels
    return list(range(len(results))), "checkpoint", labels


def plot_circuits(results: list[dict], out: str) -> str:
    """Six panels: four metrics per task, per-layer edge shares (mean over tasks), head-role counts."""
    if not results or not results[0]["tasks"]:
        raise KentropyError("no circuit results to plot")
    x, xlabel, labels = _x(results)
    names = [t["task"] for t in results[0]["tasks"]]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (key, title) in zip(axes.flat, LINES):
        for name in names:
            ys = [next(t[key] for t in r["tasks"] if t["task"] == name) for r in results]
            ax.plot(x, ys, marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
    axes.flat[0].legend(fontsize=7)

    ax = axes.flat[4]
    bins = len(results[0]["tasks"][0]["layer_shares"])
    shares = [[sum(t["layer_shares"][b] for t in r["tasks"]) / len(r["tasks"]) for r in results] for b in range(bins)]
    im = ax.imshow(shares, aspect="auto", origin="lower", cmap="viridis")
    ax.set_yticks(range(bins), [str(b) for b in range(bins - 1)] + ["logits"], fontsize=7)
    ax.set_xticks(range(len(results)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_title("Share of circuit edges per layer (mean over tasks)")
    ax.set_ylabel("layer of the downstream node")
    fig.colorbar(im, ax=ax)

    ax = axes.flat[5]
    for role in ("mover", "relation", "mixed"):
        ax.plot(x, [sum(t["role_counts"][role] for t in r["tasks"]) for r in results], marker="o", label=role)
    ax.set_title("Circuit heads by role (all tasks)")
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out
