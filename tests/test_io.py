"""kentropy.io: strict JSON, JSONL logs that survive a kill, stale temps, permissions, out-path checks."""

from __future__ import annotations

import os
import re
import stat

import pytest

from kentropy.errors import KentropyError
from kentropy.io import (append_jsonl, check_name_fits, check_out_dir, check_out_file, check_paths_apart, clean_stale_temps,
                         read_json, read_jsonl, read_text, temp_name, temp_target, write_atomic, write_dir_atomic, write_json,
                         write_jsonl)

DEAD_PID = 2**31 - 2  # above any pid_max: no such process


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_json_refuses_non_finite_and_names_where(tmp_path):
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(KentropyError, match=r"r\.json: refusing to write a non-finite number at results\[1\]\.h"):
            write_json(tmp_path / "r.json", {"results": [{"h": 1.0}, {"h": bad}]})
    assert list(tmp_path.iterdir()) == []
    write_json(tmp_path / "r.json", {"h": 1.5, "s": "café"})
    assert (tmp_path / "r.json").read_text(encoding="utf-8") == '{\n  "h": 1.5,\n  "s": "café"\n}\n'


def test_jsonl_torn_tail_is_dropped_with_a_note(tmp_path, capsys):
    log = tmp_path / "m.jsonl"
    write_jsonl(log, [{"step": 0}, {"step": 1}])
    append_jsonl(log, {"step": 2})
    with log.open("ab") as f:
        f.write(b'{"step": 3, "lo')  # a kill mid-write
    assert read_jsonl(log) == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert "dropped a torn last line" in capsys.readouterr().err
    append_jsonl(log, {"step": 3})  # never glued onto the torn line
    assert log.read_bytes().endswith(b'{"step": 3, "lo\n{"step": 3}\n')
    log.write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(KentropyError, match=r"m\.jsonl:2: not a JSON line"):
        read_jsonl(log)
    log.write_text('{"step": 0}\n{"step": 1, "lo\n')  # torn, then a newline (a partial write)
    assert read_jsonl(log) == [{"step": 0}] and "dropped a torn last line" in capsys.readouterr().err
    log.write_text('{"step": 0}\n{"step": 1}')  # complete, only the newline missing: kept
    assert read_jsonl(log) == [{"step": 0}, {"step": 1}]


def test_stale_temps_of_dead_processes_are_cleaned_live_ones_kept(tmp_path):
    dead_file = tmp_path / f".r.json.tmp-{DEAD_PID}-abc.tmp"
    dead_file.write_text("half")
    live_file = tmp_path / f".r.json.tmp-{os.getppid()}-xyz.tmp"  # our parent: alive
    live_file.write_text("being written")
    user = tmp_path / ".r.json.settings"  # not ours: never touched
    user.write_text("keep")
    write_json(tmp_path / "r.json", {"a": 1})
    assert not dead_file.exists() and live_file.exists() and user.exists()
    dead_dir = tmp_path / f".model.tmp-{DEAD_PID}-q"
    dead_dir.mkdir()
    (dead_dir / "w.bin").write_text("x")
    write_dir_atomic(tmp_path / "model", lambda d: (d / "w.bin").write_text("y"))
    assert not dead_dir.exists() and (tmp_path / "model" / "w.bin").read_text() == "y"


def test_outputs_get_ordinary_permissions(tmp_path):
    write_dir_atomic(tmp_path / "d", lambda d: (d / "f").write_text("x"))
    write_atomic(tmp_path / "f.txt", lambda p: p.write_text("x"))
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask()  # not mkdtemp's 0700
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~umask()  # not mkstemp's 0600


def test_failed_directory_write_keeps_the_old_one(tmp_path):
    write_dir_atomic(tmp_path / "d", lambda d: (d / "v").write_text("1"))

    def fail(d):
        (d / "v").write_text("2")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dir_atomic(tmp_path / "d", fail)
    assert (tmp_path / "d" / "v").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["d"]


def test_text_and_out_paths(tmp_path):
    (tmp_path / "x.txt").write_bytes(b"ok\n\xff")
    with pytest.raises(KentropyError, match=r"--data .*x\.txt: not UTF-8 text \(byte 0xff at offset 3\)"):
        read_text(tmp_path / "x.txt", "--data")
    (tmp_path / "x.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(KentropyError, match="x.json: not UTF-8"):
        read_json(tmp_path / "x.json")
    (tmp_path / "dir").mkdir()
    with pytest.raises(KentropyError, match="--out .*dir: is a directory"):
        check_out_file(tmp_path / "dir")
    with pytest.raises(KentropyError, match="--out .*x.txt: exists and is not a directory"):
        check_out_dir(tmp_path / "x.txt")
    with pytest.raises(KentropyError, match="x.txt is a file"):
        check_out_file(tmp_path / "x.txt" / "r.json")
    check_out_file(tmp_path / "new" / "r.json")
    check_out_dir(tmp_path / "dir")


# ---- a write killed half way: nothing of it is left after the next run ---------------------
KILLED_WRITER = """
import sys, time
from pathlib import Path
from kentropy.io import write_atomic, write_dir_atomic

target, kind = Path(sys.argv[1]), sys.argv[2]


def half(p):
    (p / "w.bin" if kind == "dir" else p).write_bytes(b"half of it")
    print("writing", flush=True)
    time.sleep(120)  # SIGKILLed here


(write_dir_atomic if kind == "dir" else write_atomic)(target, half)
"""


def _kill_mid_write(target, kind: str) -> None:
    import signal
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target), kind], env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.parametrize("existed", [False, True])
def test_a_write_killed_half_way_leaves_nothing_after_the_next_run(kind, existed, tmp_path):
    """SIGKILL in the middle of an atomic write: the target is as it was (absent, or the old version), the
    temp is the only trace, and the next write of the target removes it."""
    target = tmp_path / ("model" if kind == "dir" else "r.json")
    write = (lambda v: write_dir_atomic(target, lambda d: (d / "w.bin").write_text(v))) if kind == "dir" else \
        (lambda v: write_atomic(target, lambda p: p.write_text(v)))
    if existed:
        write("old")
    _kill_mid_write(target, kind)
    names = [p.name for p in tmp_path.iterdir()]
    temps = [n for n in names if n != target.name]
    assert (target.name in names) == existed and len(temps) == 1, names
    assert temps[0].startswith(f".{target.name}.tmp-") and temp_target(temps[0]) == target.name
    if existed:
        assert (target / "w.bin" if kind == "dir" else target).read_text() == "old"
    write("new")
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert (target / "w.bin" if kind == "dir" else target).read_text() == "new"


def test_stale_temps_anywhere_in_a_tree(tmp_path):
    """`recursive`: the temps of dead writers at any depth (a temp directory once, not its contents too); live
    writers' temps and files that only look alike are kept."""
    dead = [tmp_path / "a" / f".x.json.tmp-{DEAD_PID}-q1w2e3r4.tmp", tmp_path / "a" / "b" / f".ckpt.tmp-{DEAD_PID}-zz"]
    dead[0].parent.mkdir()
    dead[0].write_text("{")
    (dead[1] / "inner").mkdir(parents=True)
    (dead[1] / "inner" / f".w.tmp-{DEAD_PID}-q").write_text("x")
    keep = [tmp_path / "a" / f".y.json.tmp-{os.getppid()}-q1w2e3r4.tmp", tmp_path / "a" / ".y.json.k2j4h6g8.tmp",
            tmp_path / ".settings"]
    for k in keep:
        k.write_text("x")
    assert clean_stale_temps(tmp_path, recursive=True) == sorted(dead, key=lambda p: len(p.parts))
    assert all(k.exists() for k in keep) and not any(d.exists() for d in dead)
    assert clean_stale_temps(tmp_path, recursive=True, legacy=True) == [keep[1]]  # named without a pid, by older versions


# ---- names too long once a suffix is added, checked before any work -------------------------
def test_names_that_overflow_with_their_temp_suffix_are_refused(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    room = limit - len(temp_name(""))  # the longest name whose temp still fits
    check_out_file(tmp_path / ("a" * room))
    check_out_dir(tmp_path / ("b" * room))
    for check in (check_out_file, check_out_dir):
        with pytest.raises(KentropyError, match=rf"--out .*: name too long: .* over the file system's limit of {limit}; "
                                                rf"use a name of at most {room} bytes"):
            check(tmp_path / ("a" * (room + 1)))
    with pytest.raises(KentropyError, match="name too long"):  # bytes, not characters
        check_out_file(tmp_path / ("é" * (room // 2 + 1)))
    with pytest.raises(KentropyError, match=rf"--out .*: name too long: its partial file .* use a name of at most {room - 8} bytes"):
        check_name_fits(tmp_path / ("a" * room), "--out", suffix=".partial", what="its partial file")
    with pytest.raises(KentropyError, match=f"the directory name a+... is {limit + 1} bytes"):
        check_out_file(tmp_path / ("a" * (limit + 1)) / "r.json")
    assert list(tmp_path.iterdir()) == []


# ---- outputs apart from each other and from the inputs ---------------------------------------
def test_outputs_and_inputs_are_resolved_and_kept_apart(tmp_path, monkeypatch):
    model = tmp_path / "mm" / "llama"
    model.mkdir(parents=True)
    (tmp_path / "d.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    link = tmp_path / "via-link"
    link.symlink_to(tmp_path / "mm")
    cases = [([("--out", "mm")], [("--model", "mm/llama")], "--out mm: holds the input --model mm/llama"),
             ([("--out", str(tmp_path / "mm"))], [("--model", "mm/llama")], "holds the input --model"),  # typed differently
             ([("--out", "via-link")], [("--model", "mm/llama")], "holds the input --model"),  # through a link
             ([("--out", "mm/llama/r.json")], [("--model", "mm/llama")], "--out mm/llama/r.json: inside the input --model"),
             ([("--out", "mm/../d.txt")], [("--data", "d.txt")], "the same path as the input --data"),
             ([("--out", "r.json"), ("--coefficients-out", "./r.json")], [], "--coefficients-out ./r.json: the same path as --out"),
             ([("--out", "c/r.json"), ("--coefficients-out", "c")], [], "--out c/r.json: inside --coefficients-out c")]
    for outputs, inputs, says in cases:
        with pytest.raises(KentropyError, match=re.escape(says)):
            check_paths_apart(outputs, inputs)
    check_paths_apart([("--out", "mm2"), ("--coefficients-out", "cbar")], [("--model", "mm/llama"), ("--data", "d.txt")])
    check_paths_apart([("--out", "gpt2/r.json")], [("--model", "gpt2")])  # a hub id, not on disk: only equality counts
