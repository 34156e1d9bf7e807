"""The lab under kill -9: a smoke lab killed at seeded random moments (inside stages drawn at random, at a
random point of their run) and rerun each time ends with the results of an uninterrupted run, and no
stage that had finished runs again.

    pytest -q -m slow tests/test_lab_kill.py
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KILLS = 3
# what differs between two runs of the same lab: where it is and how long it took
TIMING_KEYS = ("seconds", "tokens_per_s", "timings")


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "kentropy", "lab", "--preset", "smoke", "--out", str(out)]


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")


def stage_lines(err: str) -> list[str]:
    """The stage lines of a run's stderr (a bar's frames are split off at their `\\r`)."""
    return [x for x in re.split(r"[\r\n]", err) if re.match(r"\[lab\] \S+: (ran in|cached)", x)]


def finished(out: Path) -> dict[str, tuple[int, int]]:
    """Every finished stage's result file: (inode, mtime) - rewritten if the stage ran again."""
    return {p.parent.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("stages/*/result.json")}


def comparable(x, out: Path):
    """A results.json with the lab directory's path, the stage hashes in paths and the wall times taken out."""
    if isinstance(x, dict):
        return {k: comparable(v, out) for k, v in x.items() if not any(t in k for t in TIMING_KEYS)}
    if isinstance(x, list):
        return [comparable(v, out) for v in x]
    if isinstance(x, str):  # a stage's hash covers the absolute paths it reads
        return re.sub(r"-[0-9a-f]{12}(?=/|$)", "-HASH", x.replace(str(out), "LAB"))
    return x


def kill_during(p: subprocess.Popen, log: Path, stage: str, delay: float) -> bool:
    """SIGKILL `p` `delay` seconds after its stage `stage` started (its bar's first frame); False if it ended first."""
    while p.poll() is None and f"[lab] {stage}:" not in log.read_text(errors="replace"):
        time.sleep(0.1)
    try:
        p.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return True


@pytest.mark.slow
def test_smoke_lab_killed_and_resumed_equals_an_uninterrupted_run(tmp_path):
    ref = tmp_path / "ref"
    r = subprocess.run(command(ref), capture_output=True, text=True, env=env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    took = {x.split(":")[0][len("[lab] "):]: float(x.split()[-2]) for x in stage_lines(r.stderr)}  # in running order

    # where to kill: KILLS stages that take a while, in running order, each at a random point of its run
    rng = random.Random(21)
    slow = [name for name, seconds in took.items() if seconds >= 1.0]
    targets = sorted(rng.sample(slow, KILLS), key=list(took).index)
    out = tmp_path / "killed"
    before, runs, kills = {}, [], 0
    for stage in targets:
        log = tmp_path / f"stderr-{len(runs)}.txt"  # a file, not a pipe: a full pipe would stall the lab
        with open(log, "w") as f:
            p = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=f, env=env(), start_new_session=True)
            kills += kill_during(p, log, stage, rng.uniform(0.1, 0.9) * took[stage])
        runs.append(stage_lines(log.read_text()))
        now = finished(out)
        assert {k: now[k] for k in before} == before, "a finished stage ran again"
        before = now
    r = subprocess.run(command(out), capture_output=True, text=True, env=env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    runs.append(stage_lines(r.stderr))
    assert kills >= 2, "the lab finished its stages before the kills: a kill must land inside a stage"
    assert {k: finished(out)[k] for k in before} == before, "a finished stage ran again"

    # every stage ran to its end once: later tries find it cached
    ran = [x.split(":")[0] for lines in runs for x in lines if ": ran in " in x]
    assert sorted(set(ran)) == sorted(ran)
    assert {d.rsplit("-", 1)[0] for d in finished(out)} == {d.rsplit("-", 1)[0] for d in finished(ref)}

    got = comparable(json.loads((out / "results.json").read_text()), out)
    want = comparable(json.loads((ref / "results.json").read_text()), ref)
    assert got == want
