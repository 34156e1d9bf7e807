"""Figures from measure results: total entropy per checkpoint and a per-layer panel (paper Figs. 2, 3, 8);
for mixture-of-experts models, an expert-usage panel (expert masses, and H_l split into its two parts)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kentropy.errors import KentropyError  # noqa: E402
from kentropy.io import read_json, write_atomic  # noqa: E402


FORMATS = ("png", "pdf", "svg")  # matplotlib writes each natively


def figure_format(out: str, flag: str = "--out") -> str:
    """The file format of `out`, from its suffix: png, pdf or svg (anything else is refused)."""
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise KentropyError(f"{flag} {out}: choose a .png, .pdf or .svg file (the suffix sets the format)")
    return suffix


# what other commands' results look like, to say what a file is when it is not a measure result
OTHER_RESULTS = {"probe": ("mem", "gen", "hard_gen"), "evaluate": ("tasks", "D"), "circuits": ("tasks", "graph")}


def check_measure_results(data, path: str) -> list[dict]:
    """The `results` of a `kentropy measure` JSON, every field the figures read checked (one-line errors)."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), list) or not data["results"]:
        raise KentropyError(f"RESULT {path}: no 'results' list (expected the output of kentropy measure)")
    results = data["results"]
    for i, r in enumerate(results):
        where = f"RESULT {path}: results[{i}]"
        if not isinstance(r, dict):
            raise KentropyError(f"{where}: not an object")
        if "knowledge_entropy" not in r:
            other = next((c for c, keys in OTHER_RESULTS.items() if all(k in r for k in keys)), None)
            raise KentropyError(f"{where}: no 'knowledge_entropy' (expected the output of kentropy measure"
                                + (f"; this is the output of kentropy {other})" if other else ")"))
        if not isinstance(r.get("model"), str):
            raise KentropyError(f"{where}: no 'model' name")
        for key in ("knowledge_entropy", "attention_entropy", "next_token_entropy"):
            v = r.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise KentropyError(f"{where}.{key}: not a number ({v!r})")
        for key in ("knowledge_entropy_per_layer", "attention_entropy_per_layer"):
            v = r.get(key)
            if key.startswith("knowledge") or r.get("attention_entropy") is not None:
                if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                    raise KentropyError(f"{where}.{key}: expected a list of numbers")
    if any((r.get("attention_entropy") is None) != (results[0].get("attention_entropy") is None) for r in results):
        raise KentropyError(f"RESULT {path}: attention entropy is measured for some checkpoints only")
    return results


def checkpoint_labels(results: list[dict]) -> list[str]:
    """One label per result that tells every checkpoint apart: the revision alone for revisions of one model,
    else the shortest ending of each model path that no other result shares (`a/llama`, `b/llama`), with
    `@revision` where there is one; a checkpoint measured twice, or without a name, gets its position (`#2`)."""
    if len({r["model"] for r in results}) == 1 and all(r.get("revision") for r in results):
        labels = [r["revision"] for r in results]
    else:
        parts = [[p for p in r["model"].split("/") if p] or [r["model"]] for r in results]
        depth = [1] * len(results)
        while True:
            labels = ["/".join(p[-d:]) + (f"@{r['revision']}" if r.get("revision") else "") for p, d, r in zip(parts, depth, results)]
            clash = [i for i, x in enumerate(labels) if depth[i] < len(parts[i])
                     and any(y == x and (parts[j], results[j].get("revision")) != (parts[i], results[i].get("revision"))
                             for j, y in enumerate(labels))]
            if not clash:
                break
            for i in clash:
                depth[i] += 1
    return [f"{x} #{i + 1}".strip() if labels.count(x) > 1 or not x else x for i, x in enumerate(labels)]


def plot_measurements(results: list[dict], out: str) -> str:
    """Write `measurement_figure(results)` to `out` (atomically; the suffix sets the format)."""
    fig = measurement_figure(results)
    try:
        write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=120, format=figure_format(out)))
    finally:
        plt.close(fig)
    return out


def measurement_figure(results: list[dict]):
    """Two panels per measured metric family: total per checkpoint, and per layer per checkpoint."""
    if not results:
        raise KentropyError("no results to plot")
    labels = checkpoint_labels(results)
    metrics = [("knowledge_entropy", "Knowledge entropy")]
    if results[0].get("attention_entropy") is not None:
        metrics.append(("attention_entropy", "Attention entropy"))
    moe = results[-1].get("expert_mass_per_layer") is not None
    rows = len(metrics) + moe
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.6 * rows), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for row, (key, title) in enumerate(metrics):
        ax = axes[row][0]
        ax.plot(range(len(results)), [r[key] for r in results], marker="o")
        ax.set_xticks(range(len(results)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{title} (sum over layers)")
        ax.set_xlabel("checkpoint")
        ax.set_ylabel(f"{title.lower()} (nats)")
        ax = axes[row][1]
        for i, r in enumerate(results):
            ax.plot(r[f"{key}_per_layer"], color=cmap(i / max(1, len(results) - 1)), label=labels[i], marker=".")
        ax.set_title(f"{title} per layer")
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{title.lower()} (nats)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
        ax.legend(fontsize=7, ncol=2)
    if moe:
        expert_usage(axes[-1], results, labels)
    if results[0].get("next_token_entropy") is not None:
        next_token(axes[0][0], [r.get("next_token_entropy") for r in results])
    fig.tight_layout()
    return fig


def next_token(ax, values: list[float | None]) -> None:
    """Next-token entropy per checkpoint on a second y axis of `ax` (its own scale, labelled, in red),
    with one legend for both lines."""
    twin = ax.twinx()
    twin.plot(range(len(values)), [math.nan if v is None else v for v in values], "r--", marker="x",
              label="next-token entropy")  # an encoder in the series has none: a gap
    twin.set_ylabel("next-token entropy (nats)", color="r")
    twin.tick_params(axis="y", colors="r")
    ax.lines[0].set_label("knowledge entropy")
    lines = ax.lines[:1] + twin.lines
    ax.legend(lines, [x.get_label() for x in lines], fontsize=7, loc="best")


def expert_usage(axes, results: list[dict], labels: list[str]) -> None:
    """Left: expert masses per MoE layer (last checkpoint; the shared expert is the last column).
    Right: per layer, the entropy of the expert masses and the within-expert part, per checkpoint."""
    last = results[-1]
    layers = [l for l, mass in enumerate(last["expert_mass_per_layer"]) if mass is not None]
    ax = axes[0]
    im = ax.imshow([last["expert_mass_per_layer"][l] for l in layers], aspect="auto", cmap="magma")
    ax.set_yticks(range(len(layers)), [str(l) for l in layers], fontsize=7)
    shared = " (last column: shared)" if last.get("experts", {}).get("shared_expert_dim") else ""
    ax.set_title(f"Expert mass, {labels[-1]}{shared}")
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.figure.colorbar(im, ax=ax)
    ax = axes[1]
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(results):
        color = cmap(i / max(1, len(results) - 1))
        split = [(l, r["expert_entropy_per_layer"][l], r["within_expert_entropy_per_layer"][l])
                 for l in range(len(r["expert_entropy_per_layer"])) if r["expert_entropy_per_layer"][l] is not None]
        ax.plot([x[0] for x in split], [x[1] for x in split], color=color, marker="o", label=f"{labels[i]} experts")
        ax.plot([x[0] for x in split], [x[2] for x in split], color=color, marker="x", ls="--", label=f"{labels[i]} within")
    ax.set_title("H_l = expert-mass entropy + within-expert entropy")
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, ncol=2)


def plot_file(result_json: str, out: str) -> str:
    figure_format(out)
    return plot_measurements(check_measure_results(read_json(result_json, "RESULT"), result_json), out)
