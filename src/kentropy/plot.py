"""Figures from measure results: total entropy per checkpoint and a per-layer panel (paper Figs. 2, 3, 8)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kentropy.errors import KentropyError  # noqa: E402
from kentropy.io import read_json, write_atomic  # noqa: E402


def checkpoint_label(r: dict) -> str:
    return r["revision"] if r.get("revision") else r["model"].rstrip("/").split("/")[-1]


def plot_measurements(results: list[dict], out: str) -> str:
    """Two panels per measured metric family: total per checkpoint, and per layer per checkpoint."""
    if not results:
        raise KentropyError("no results to plot")
    labels = [checkpoint_label(r) for r in results]
    metrics = [("knowledge_entropy", "Knowledge entropy")]
    if results[0].get("attention_entropy") is not None:
        metrics.append(("attention_entropy", "Attention entropy"))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for row, (key, title) in enumerate(metrics):
        ax = axes[row][0]
        ax.plot(range(len(results)), [r[key] for r in results], marker="o")
        ax.set_xticks(range(len(results)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{title} (sum over layers)")
        ax.set_xlabel("checkpoint")
        ax = axes[row][1]
        for i, r in enumerate(results):
            ax.plot(r[f"{key}_per_layer"], color=cmap(i / max(1, len(results) - 1)), label=labels[i], marker=".")
        ax.set_title(f"{title} per layer")
        ax.set_xlabel("layer")
        ax.legend(fontsize=7, ncol=2)
    if results[0].get("next_token_entropy") is not None:
        axes[0][0].twinx().plot(range(len(results)), [r["next_token_entropy"] for r in results], "r--", marker="x", label="next-token")
    fig.tight_layout()
    write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return out


def plot_file(result_json: str, out: str) -> str:
    data = read_json(result_json, "RESULT")
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise KentropyError(f"{result_json}: no 'results' list (expected the output of kentropy measure)")
    return plot_measurements(data["results"], out)
