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


# ---- a lab copied elsewhere, a stage removed: it resumes there, on its own files only -----
@pytest.mark.slow
def test_a_copied_lab_resumes_there_and_reads_only_its_own_files(tmp_path):
    """`cp -r lab2 lab3`, stages removed from lab3, the original moved out of reach, lab3 rerun from another
    working directory: the removed stages run again on lab3's own checkpoints (under the same hashes), every
    other stage is cached, and the results equal those of the uninterrupted run in place."""
    import shutil

    ref = tmp_path / "lab2"
    r = subprocess.run(command(ref), capture_output=True, text=True, env=env(), timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    want = comparable(json.loads((ref / "results.json").read_text()), ref)
    stages = sorted(p.name for p in (ref / "stages").iterdir())
    # a measuring stage (it reads a pretraining run's checkpoints) and a continual run (its start checkpoint, the
    # world's knowledge and task YAMLs)
    removed = [next(s for s in stages if s.startswith("measure-seed1-")), next(s for s in stages if s.startswith("continual-pre1-step"))]
    where = tmp_path / "elsewhere"
    where.mkdir()
    subprocess.run(["cp", "-r", str(ref), str(where / "lab3")], check=True)
    for s in removed:
        shutil.rmtree(where / "lab3" / "stages" / s)
    ref.rename(tmp_path / "out-of-reach")  # nothing of lab2 can be read any more

    r = subprocess.run(command(Path("lab3")), capture_output=True, text=True, env=env(), timeout=3600, cwd=where)
    assert r.returncode == 0, r.stderr[-3000:]
    ran = sorted(x.split(":")[0][len("[lab] "):] for x in stage_lines(r.stderr) if ": ran in " in x)
    assert ran == sorted(s.rsplit("-", 1)[0] for s in removed)
    lab3 = where / "lab3"
    assert sorted(p.name for p in (lab3 / "stages").iterdir()) == stages  # the same hashes where the lab is now
    assert comparable(json.loads((lab3 / "results.json").read_text()), lab3) == want
    for f in [lab3 / "results.json", *lab3.glob("stages/*/result.json"), *lab3.glob("stages/*/config.json")]:
        text = f.read_text()
        assert str(tmp_path) not in text and "lab2" not in text, f  # stored relative to the lab: nothing points outside it
    measured = json.loads((lab3 / "stages" / removed[0] / "result.json").read_text())["series"]["held_out"]["results"]
    assert all(m["model"].startswith("stages/pretrain-seed1-") for m in measured)  # lab3's own checkpoints, named in the lab
    yamls = list(lab3.glob("stages/world-*/tasks/*.yaml"))
    assert yamls and all(f'"{lab3}/stages/' in y.read_text() for y in yamls)  # the task YAMLs point into lab3


# ---- Ctrl-C and SIGTERM while a lab trains side by side ---------------------------------
LAB_SCRIPT = """
import sys

from kentropy.cli.app import main
from kentropy.lab import pipeline
from kentropy.lab.config import config_from_yaml

pipeline.load_preset = lambda name: config_from_yaml(sys.argv[2], "smoke-decay.yaml")  # the smoke decay study, two workers
main(["lab", "--preset", "smoke", "--device", "cpu", "--out", sys.argv[1]])
"""


def decay_command(out: Path) -> list[str]:
    from test_lab_decay import SMOKE_DECAY

    assert "  workers: 1\n" in SMOKE_DECAY
    return [sys.executable, "-c", LAB_SCRIPT, str(out), SMOKE_DECAY.replace("  workers: 1\n", "  workers: 2\n")]


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) if d.name.isdigit() else None
        except (OSError, IndexError, ValueError):
            continue
        if ppid is not None:
            children.setdefault(ppid, []).append(int(d.name))
    tree, todo = [pid], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            tree.append(c)
            todo.append(c)
    return tree


def running(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="module")
def uninterrupted_decay(tmp_path_factory):
    out = tmp_path_factory.mktemp("decay") / "lab"
    r = subprocess.run(decay_command(out), capture_output=True, text=True, env=env(), timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    return comparable(json.loads((out / "results.json").read_text())["decay_study"], out)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_lab_training_side_by_side_stops_at_once(sig, code, word, uninterrupted_decay, tmp_path):
    """The signal to the parent alone, while its two workers train: the whole process tree is gone within 10 s, with
    130 (SIGINT) or 143 (SIGTERM); the stages finished before it are kept, and a rerun gives the uninterrupted numbers."""
    out = tmp_path / "lab"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as f:
        p = subprocess.Popen(decay_command(out), stdout=subprocess.DEVNULL, stderr=f, env=env())
        deadline = time.time() + 1800
        while p.poll() is None and "-pretrain" not in log.read_text(errors="replace") and time.time() < deadline:
            time.sleep(0.2)  # until a worker's pretraining bar shows: the runs are under way side by side
        time.sleep(2)
        tree = process_tree(p.pid)
        assert p.poll() is None and len(tree) >= 3, "the lab was not training side by side"  # the parent and its workers
        kept = finished(out)
        p.send_signal(sig)
        t0 = time.time()
        while any(running(x) for x in tree) and time.time() - t0 < 10:
            time.sleep(0.1)
        alive = [x for x in tree if running(x)]
        for x in alive:
            os.kill(x, signal.SIGKILL)  # not to leave them behind when the test fails
        assert alive == [], f"still running {time.time() - t0:.1f} s after the signal"
        assert p.wait() == code
    lines = [x.strip() for x in log.read_text().replace("\r", "\n").splitlines() if x.strip()]
    assert lines[-1] == f"{word}; rerun the same command to resume (finished stages are kept)", lines[-3:]
    assert "Traceback" not in log.read_text()

    r = subprocess.run(decay_command(out), capture_output=True, text=True, env=env(), timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {k: finished(out)[k] for k in kept} == kept  # what had finished did not run again
    assert comparable(json.loads((out / "results.json").read_text())["decay_study"], out) == uninterrupted_decay
