"""The measure figure: checkpoints told apart, next-token entropy on its own labelled axis, whole layer numbers."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from kentropy.measurement.plot import checkpoint_labels, measurement_figure, plot_measurements


def result(model: str, revision: str | None = None, layers: int = 2, next_token: float | None = None) -> dict:
    return {"model": model, "revision": revision, "knowledge_entropy": 1.0 * layers, "next_token_entropy": next_token,
            "knowledge_entropy_per_layer": [1.0 + 0.1 * l for l in range(layers)], "attention_entropy": None}


@pytest.mark.parametrize("models, want", [
    ([("runs/a/llama", None), ("runs/b/llama", None)], ["a/llama", "b/llama"]),  # two `llama`s do not look alike
    ([("x/a/llama", None), ("y/a/llama", None), ("z/b/llama", None)], ["x/a/llama", "y/a/llama", "b/llama"]),
    ([("org/pythia", "step1"), ("org/pythia", "step2")], ["step1", "step2"]),  # a series of one model: its revisions
    ([("org/pythia", "step1"), ("org/olmo", "step1")], ["pythia@step1", "olmo@step1"]),
    ([("out/llama/", None), ("llama", None)], ["out/llama", "llama"]),  # the shorter path is all there is of it
    ([("runs/llama", None), ("runs/llama", None)], ["llama #1", "llama #2"]),  # the same checkpoint twice
    ([("", None)], ["#1"]),  # a model without a name
])
def test_checkpoint_labels_tell_every_checkpoint_apart(models, want):
    assert checkpoint_labels([result(m, r) for m, r in models]) == want


def test_next_token_entropy_on_a_labelled_second_axis_and_whole_layer_ticks():
    fig = measurement_figure([result("runs/a/llama", next_token=5.0), result("runs/b/llama", next_token=4.5)])
    try:
        fig.canvas.draw()
        total, per_layer = fig.axes[0], fig.axes[1]
        twin = next(ax for ax in fig.axes if ax not in (total, per_layer))
        assert twin.get_ylabel() == "next-token entropy (nats)" and total.get_ylabel() == "knowledge entropy (nats)"
        assert [t.get_text() for t in total.get_legend().get_texts()] == ["knowledge entropy", "next-token entropy"]
        assert [t.get_text() for t in total.get_xticklabels()] == ["a/llama", "b/llama"]
        ticks = [t for t in per_layer.get_xticks() if per_layer.get_xlim()[0] <= t <= per_layer.get_xlim()[1]]
        assert ticks == [0, 1]  # two layers: 0 and 1, never 0.2, 0.4, ...
        assert per_layer.get_xlabel() == "layer"
    finally:
        plt.close(fig)


def test_plot_writes_and_closes(tmp_path):
    out = plot_measurements([result("m", next_token=None)], str(tmp_path / "f.svg"))
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml") and not plt.get_fignums()
    assert out == str(tmp_path / "f.svg")
