"""`kentropy lab --out`: a directory that is not a lab directory of this config is refused before anything is written."""

import json

import pytest

from kentropy.cli.app import main
from kentropy.runtime.options import to_dict
from kentropy.lab.config import load_preset
from kentropy.lab.pipeline import check_out


def _refused(capsys, out, *extra):
    before = sorted((p.relative_to(out), p.read_bytes() if p.is_file() else None) for p in out.rglob("*")) if out.is_dir() else None
    with pytest.raises(SystemExit) as e:
        main(["lab", "--preset", "smoke", "--out", str(out), "--device", "cpu", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: --out {out}"), err
    after = sorted((p.relative_to(out), p.read_bytes() if p.is_file() else None) for p in out.rglob("*")) if out.is_dir() else None
    assert after == before  # nothing written, nothing replaced
    return err[0]


def test_a_users_directory_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my report")
    (out / "results.json").write_text("{}")
    assert "not a lab directory" in _refused(capsys, out)


def test_a_lab_directory_of_another_config_is_refused(tmp_path, capsys):
    out = tmp_path / "lab"
    out.mkdir()
    (out / "lab_config.json").write_text(json.dumps({"preset": "quick", **to_dict(load_preset("quick"))}))
    msg = _refused(capsys, out)
    assert "another config" in msg and "preset" in msg and "hidden" in msg
    (out / "lab_config.json").write_text("{not json")
    assert "not valid JSON" in _refused(capsys, out)


def test_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(SystemExit):
        main(["lab", "--preset", "smoke", "--out", str(out)])
    assert "not a directory" in capsys.readouterr().err and out.read_text() == "x"


def test_bad_device_leaves_no_directory(tmp_path, capsys):
    out = tmp_path / "new"
    with pytest.raises(SystemExit) as e:
        main(["lab", "--preset", "smoke", "--out", str(out), "--device", "tpu"])
    assert e.value.code == 2 and not out.exists()


def test_absent_empty_or_same_config_directories_are_accepted(tmp_path):
    cfg = load_preset("smoke")
    check_out(str(tmp_path / "absent"), cfg, "smoke")
    (tmp_path / "empty").mkdir()
    check_out(str(tmp_path / "empty"), cfg, "smoke")
    same = tmp_path / "same"
    same.mkdir()
    (same / "lab_config.json").write_text(json.dumps({"preset": "smoke", **to_dict(cfg)}))
    check_out(str(same), cfg, "smoke")
