"""What kentropy's outputs look like on disk: figure formats by suffix, one file mode for every output
(safetensors included), and an `error:` line that starts a line even after a progress bar."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    p = tmp_path_factory.mktemp("plot") / "r.json"
    p.write_text(json.dumps({"results": [{"model": "m", "revision": r, "knowledge_entropy": h, "knowledge_entropy_per_layer": [h / 2] * 2}
                                         for r, h in (("a", 6.0), ("b", 5.5))]}))
    return p


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_plot_writes_the_format_its_suffix_names(suffix, magic, result, tmp_path, capsys):
    out = tmp_path / f"fig{suffix}"
    code, _, err = run_cli(capsys, "plot", result, "--out", out)
    assert code == 0, err
    assert out.read_bytes().startswith(magic)


def test_every_output_file_has_the_same_mode(model_dir, sample_texts, tmp_path, capsys):
    """JSON, safetensors (Cbar files, a resuscitated model) and config files: all 0666 less the umask."""
    (tmp_path / "docs.txt").write_text("\n".join(sample_texts[:8]) + "\n")
    model = model_dir("llama", 0)
    assert run_cli(capsys, "measure", model, "--data", tmp_path / "docs.txt", "--seq-len", 32, "--out", tmp_path / "r.json",
                   "--coefficients-out", tmp_path / "cbar")[0] == 0
    assert run_cli(capsys, "resuscitate", model, "--coefficients", tmp_path / "cbar", "--ratio", 0.5, "--amplify", 1,
                   "--out", tmp_path / "res")[0] == 0
    mask = os.umask(0)
    os.umask(mask)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "docs.txt"]
    assert any(p.suffix == ".safetensors" for p in files) and any(p.suffix == ".json" for p in files)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o666 & ~mask for p in files}


def test_error_line_starts_a_line_after_a_progress_bar(model_dir, sample_texts, tmp_path):
    """stderr is a file: the bar's last `\\r` update has no newline, and `grep '^error:'` must still find the error."""
    (tmp_path / "docs.txt").write_text("\n".join(sample_texts * 4) + "\n")
    import shutil

    bad = shutil.copytree(model_dir("llama", 0), tmp_path / "bad-model")
    # the second checkpoint fails after the first one's bar: its files pass every check made before the first loads
    # (a whole safetensors file), but its tensors are another family's, which only loading it finds
    shutil.copy(Path(model_dir("gpt2", 0)) / "model.safetensors", bad / "model.safetensors")
    with (tmp_path / "err.txt").open("w") as f:
        p = subprocess.run([sys.executable, "-m", "kentropy", "measure", str(model_dir("llama", 0)), str(bad), "--data",
                            str(tmp_path / "docs.txt"), "--seq-len", "32", "--batch-size", "2", "--out", str(tmp_path / "r.json")],
                           env=ENV, stdout=subprocess.DEVNULL, stderr=f, timeout=300)
    err = (tmp_path / "err.txt").read_bytes().decode()  # not read_text: it would turn each \r into a newline
    assert p.returncode == 2, err
    assert "\r" in err  # a bar was drawn
    assert [x for x in err.split("\n") if x.startswith("error:")] == [next(x for x in err.split("\n") if "error:" in x)], err


def test_every_path_flag_is_an_input_or_an_output():
    """Every string flag of every command is classified: an output (checked, locked), an input (kept apart from
    the outputs), or a flag that names no path. A new path flag fails here until it is placed."""
    import dataclasses
    import typing

    from kentropy.cli import app as cli
    from kentropy.circuits.series import CircuitsConfig
    from kentropy.edits.intervene import InterveneConfig
    from kentropy.edits.resuscitate import ResuscitateConfig
    from kentropy.evaluation.downstream import EvaluateConfig
    from kentropy.knowledge.commands import GenerateConfig, PlanConfig, ProbeConfig
    from kentropy.lab.pipeline import LabRunConfig
    from kentropy.measurement.workflow import MeasureConfig
    from kentropy.training.loop import TrainConfig

    configs = [MeasureConfig, cli.PlotConfig, EvaluateConfig, ResuscitateConfig, InterveneConfig, ProbeConfig, GenerateConfig,
               PlanConfig, CircuitsConfig, TrainConfig, LabRunConfig]
    assert len(configs) == len(cli.app.registered_commands) + len(cli.knowledge_app.registered_commands)
    not_paths = {"metrics", "activation", "device", "device_map", "dtype", "tasks", "method", "schedule", "report_to", "preset",
                 "probe_kinds", "convention", "metric", "ig_range", "facts", "qkv", "bos"}
    for cfg in configs:
        hints = typing.get_type_hints(cfg)
        strings = {f.name for f in dataclasses.fields(cfg) if "str" in str(hints[f.name])}
        unplaced = strings - set(cli.OUTPUT_FIELDS) - set(cli.INPUT_FIELDS) - not_paths
        assert not unplaced, (cfg.__name__, unplaced)
