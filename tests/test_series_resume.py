"""Checkpoint series that survive a crash (`kentropy.runtime.series`): kill -9 mid-series, rerun with --resume.

The contract: `kentropy measure A B C --data D --out R.json`, killed after A finished, then rerun with
`--resume`, gives the same R.json (byte for byte) as an uninterrupted run, and every checkpoint not
finished before the kill is measured exactly once after it (counted by the progress lines on stderr).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))


@pytest.fixture(scope="module")
def series(model_dir, sample_texts, tmp_path_factory):
    d = tmp_path_factory.mktemp("series")
    (d / "docs.txt").write_text("\n".join(sample_texts * 12) + "\n")  # a few seconds per checkpoint: the kill lands mid-series
    return {"models": [model_dir("llama", s) for s in (0, 1, 2)], "docs": d / "docs.txt"}


def measure_argv(s, out, *extra):
    return ["measure", *s["models"], "--data", s["docs"], "--seq-len", 32, "--batch-size", 4,
            "--coefficients-out", out.parent / "cbar", "--out", out, *extra]


def measured(err: str, command: str = "measure") -> list[str]:
    """The checkpoints whose work started, from the progress lines `COMMAND CKPT (i/n)` (each at a line start)."""
    return [m.group(1) for m in re.finditer(rf"^{command} (\S+) \(\d+/\d+\)$", err, re.M)]


def files(d: Path) -> dict:
    """Every file under `d`: bytes, or for safetensors (whose header order varies by process) metadata and tensors."""
    from safetensors import safe_open

    def content(p: Path):
        if p.suffix != ".safetensors":
            return p.read_bytes()
        with safe_open(str(p), framework="pt") as f:
            return f.metadata(), {k: f.get_tensor(k).tolist() for k in f.keys()}

    return {str(p.relative_to(d)): content(p) for p in sorted(d.rglob("*")) if p.is_file()}


def test_measure_killed_mid_series_resumes_to_the_same_result(series, tmp_path, capsys):
    out = tmp_path / "R.json"
    code, _, err = run_cli(capsys, *measure_argv(series, out))
    assert code == 0, err
    assert measured(err) == [str(m) for m in series["models"]]
    uninterrupted = files(tmp_path)
    for p in list(tmp_path.rglob("*"))[::-1]:
        p.unlink() if p.is_file() else p.rmdir()

    # kill -9 as soon as the first checkpoint is saved in R.json.partial
    partial = tmp_path / "R.json.partial"
    proc = subprocess.Popen([sys.executable, "-m", "kentropy", *map(str, measure_argv(series, out))], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not partial.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the series finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    finished = json.loads(partial.read_text())["results"]
    assert not out.exists() and 1 <= len(finished) < 3
    done = [str(series["models"][int(i)]) for i in finished]

    # without --resume, or with another config, the unfinished series is refused (and kept)
    code, _, err = run_cli(capsys, *measure_argv(series, out))
    assert code == 2 and "continue it with --resume" in err and partial.is_file(), err
    code, _, err = run_cli(capsys, *measure_argv(series, out, "--resume", "--batch-size", 2))
    assert code == 2 and "config differs" in err and "--batch-size" in err, err

    code, _, err = run_cli(capsys, *measure_argv(series, out, "--resume"))
    assert code == 0, err
    again = measured(err)
    assert sorted(again) == sorted(str(m) for m in series["models"] if str(m) not in done)  # each once, the finished ones never
    assert len(again) == len(set(again))
    assert files(tmp_path) == uninterrupted  # R.json and every Cbar file, byte for byte; no partial, no temp left


@pytest.mark.parametrize("command", ["probe", "evaluate", "circuits"])
def test_series_commands_resume(command, series, model_dir, tokenizer, tmp_path, capsys):
    """Probe, evaluate and circuits share the mechanism: a series with its first checkpoint finished (the
    partial file of a run killed there) is completed by --resume into the uninterrupted result."""
    from kentropy.circuits import tasks_from_triples, write_tasks
    from kentropy.evaluation.downstream import write_task
    from kentropy.knowledge import generate_knowledge

    entries = generate_knowledge(2, n_paraphrases=1, seed=0)
    (tmp_path / "fk.json").write_text(json.dumps(entries))
    facts = [(s, "was born in", t, "born", False) for s, t in zip(["Ostrel", "Sable", "Carran", "Emrik"], ["salt", "fish"] * 2)]
    write_tasks(tmp_path / "tasks.json", tasks_from_triples(facts, tokenizer))
    write_task(str(tmp_path / "lm"), "given", [{"query": "Q", "choices": ["a", "b"], "gold": 0}] * 2)
    models = series["models"][:2]
    inputs = {"probe": ["--knowledge", tmp_path / "fk.json"], "evaluate": ["--tasks", "given", "--task-dir", tmp_path / "lm"],
              "circuits": ["--task", tmp_path / "tasks.json", "--top-n", 20, "--ig-steps", 2]}[command]
    full, out = tmp_path / "full.json", tmp_path / "r.json"
    assert run_cli(capsys, command, *models, *inputs, "--out", full)[0] == 0
    code, _, err = run_cli(capsys, command, models[0], *inputs, "--out", out)  # the first checkpoint alone ...
    assert code == 0, err
    first = json.loads(out.read_text())
    out.unlink()
    cfg = json.loads(full.read_text())["config"] | {"out": str(out)}
    (tmp_path / "r.json.partial").write_text(json.dumps({"config": cfg, "checkpoints": [str(m) for m in models],
                                                         "results": {"0": first["results"][0]}}))  # ... as a killed run left it
    code, _, err = run_cli(capsys, command, *models, *inputs, "--out", out, "--resume")
    assert code == 0, err
    assert measured(err, command) == [str(models[1])]
    got, want = json.loads(out.read_text()), json.loads(full.read_text())
    assert got["results"] == want["results"] and got["config"] == cfg
    assert not (tmp_path / "r.json.partial").exists()


def test_interrupt_after_a_finished_checkpoint_says_how_to_resume(series, tmp_path):
    out = tmp_path / "R.json"
    proc = subprocess.Popen([sys.executable, "-m", "kentropy", *map(str, measure_argv(series, out))], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (tmp_path / "R.json.partial").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the series finished before the signal"
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 130, err[-2000:]
    last = [x for x in err.replace("\r", "\n").splitlines() if x.strip()][-1]
    assert last.startswith("interrupted;") and "R.json.partial" in last and "--resume" in last and "Traceback" not in err


def test_the_partial_file_is_locked_while_the_series_runs(series, tmp_path, capsys):
    """OUT.partial is an output of the running series: another command may not write it (the series would
    delete that file at its end), nor start the same series."""
    out = tmp_path / "R.json"
    proc = subprocess.Popen([sys.executable, "-m", "kentropy", *map(str, measure_argv(series, out))], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline().startswith("measure "), "the series did not start"  # its first progress line
        partial = tmp_path / "R.json.partial"
        code, _, err = run_cli(capsys, "knowledge", "generate", "--entries", 2, "--paraphrases", 1, "--out", partial)
        assert code == 2 and f"--out {partial}: another kentropy command (pid {proc.pid})" in err, err
        code, _, err = run_cli(capsys, *measure_argv(series, partial))  # another series written onto it
        assert code == 2 and f"--out {partial}: another kentropy command" in err, err
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=60)
