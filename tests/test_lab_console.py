"""The lab's console: one line per stage, one bar for the stage that runs, nothing from the libraries;
`--report-to` puts each training stage's curves beside its run without touching the cache keys.

    pytest -q tests/test_lab_console.py             # the stage engine alone: seconds
    pytest -q -m slow tests/test_lab_console.py     # the smoke lab as a user runs it
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kentropy.lab.cache import Stages

ROOT = Path(__file__).resolve().parents[1]
# what the libraries print when they are let through: datasets, lm-eval, transformers, tqdm's rate
LIBRARY_LINES = ("Generating", "Running loglikelihood requests", "Tokenizing", "Map", "Loading checkpoint shards",
                 "estimated memory", "train run", "resuming ")
BAR_RATE = re.compile(r"(it/s|s/it)(, [^\]]*)?\]")


def frames(err: str) -> list[str]:
    """Every line and every bar frame (a bar redraws its line after `\\r`)."""
    return [f for f in re.split(r"[\r\n]", err) if f.strip()]


def test_stage_line_once_library_bar_off_stderr_to_log(tmp_path, capsys):
    from tqdm import tqdm

    def fn(d: Path) -> dict:
        for _ in tqdm(range(3), desc="Map"):  # made outside kentropy: a library's bar
            pass
        print("note: said inside the stage", file=sys.stderr)
        return {"ok": 1}

    done = Stages(tmp_path).run("alpha", {"a": 1}, fn)
    err = capsys.readouterr().err
    lines = frames(err)
    assert [x for x in lines if x.startswith("[lab] alpha: ran in ")] == [lines[-1]]
    assert "Map" not in err and "note: said" not in err
    assert "note: said inside the stage" in (done.dir / "stderr.log").read_text()
    assert all(x.startswith("[lab] alpha") for x in lines)  # the stage's own bar and line only

    quiet = Stages(tmp_path).run("gamma", {}, lambda d: {})
    assert not (quiet.dir / "stderr.log").exists()  # a stage that says nothing leaves no log
    capsys.readouterr()

    again = Stages(tmp_path).run("alpha", {"a": 1}, fn)
    assert frames(capsys.readouterr().err) == ["[lab] alpha: cached"]
    assert again.result == {"ok": 1} and again.dir == done.dir


def test_a_failing_stage_restores_stderr_and_tqdm(tmp_path):
    import tqdm.std

    init = tqdm.std.tqdm.__dict__["__init__"]
    stderr = sys.stderr

    def fn(d: Path) -> dict:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        Stages(tmp_path).run("beta", {}, fn)
    assert sys.stderr is stderr and tqdm.std.tqdm.__dict__["__init__"] is init
    assert not list(tmp_path.glob("stages/beta-*/result.json"))


def test_lab_report_to_refused_before_any_output(tmp_path, capsys):
    from conftest import run_cli

    out = tmp_path / "lab"
    code, _, err = run_cli(capsys, "lab", "--preset", "smoke", "--out", out, "--report-to", "mlflow")
    assert code == 2 and [x for x in err.splitlines() if x.startswith("error:")] == [err.strip()], err
    assert "--report-to mlflow: choose" in err and not out.exists()


def lab(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "kentropy", "lab", "--preset", "smoke", "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_smoke_lab_console_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "lab"
    r = lab(out, "--report-to", "tensorboard")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = frames(r.stderr)
    for text in LIBRARY_LINES:
        assert not any(text in x for x in lines), text
    bars = [x for x in lines if BAR_RATE.search(x)]
    assert bars and all(x.startswith("[lab] ") for x in bars), [x for x in bars if not x.startswith("[lab] ")][:3]
    assert any(re.match(r"\[lab\] pretrain-seed0: .*\b40/40\b", x) for x in bars)  # train's own bar drives the stage's
    names = sorted(p.name.rsplit("-", 1)[0] for p in (out / "stages").iterdir())
    assert len(names) == len(set(names)) >= 9
    for name in names:
        ran = [x for x in lines if x.startswith(f"[lab] {name}: ")and not BAR_RATE.search(x)]
        assert len(ran) == 1 and re.fullmatch(rf"\[lab\] {re.escape(name)}: ran in \d+\.\d s", ran[0]), ran
    assert [x for x in lines if not x.startswith("[lab] ")] == [], "only the lab's lines reach stderr"

    # the pretraining stage's curves, read back from its event files, are its metrics.jsonl
    run = next((out / "stages").glob("pretrain-seed0-*")) / "run"
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = {x["step"] + 1: x["loss"] for x in logged if "loss" in x}
    seen = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(seen) == sorted(losses) == list(range(1, 41))
    assert all(seen[s] == pytest.approx(losses[s], rel=1e-6) for s in losses)
    assert {"train/lr", "train/grad_norm", "train/tokens_per_s"} <= set(acc.Tags()["scalars"])
    cont = next((out / "stages").glob("continual-pre0-step40-seed0-*")) / "run"
    acc = EventAccumulator(str(cont / "tensorboard"))
    acc.Reload()
    assert "probe/P" in acc.Tags()["scalars"]

    # --report-to is not part of any stage's identity: another value finds every stage cached
    again = lab(out, "--report-to", "none")
    assert again.returncode == 0, again.stderr[-3000:]
    lines = frames(again.stderr)
    cached = sorted(x for x in lines if x.endswith(": cached"))
    assert cached == sorted(f"[lab] {n}: cached" for n in names), (cached, again.stderr[-4000:])
    assert not any(" ran in " in x for x in lines)
