"""kentropy.io: strict JSON, JSONL logs that survive a kill, stale temps, permissions, out-path checks."""

from __future__ import annotations

import os
import stat

import pytest

from kentropy.errors import KentropyError
from kentropy.io import (append_jsonl, check_out_dir, check_out_file, read_json, read_jsonl, read_text, write_atomic,
                         write_dir_atomic, write_json, write_jsonl)

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
