"""Paths as the user types them: `train --resume` names its inputs by whatever path reaches the same files
(absolute or relative, a copy with the same content, or the run moved together with its inputs); another
input is refused (the bad-input matrix, class `moved`)."""

from __future__ import annotations

import json
import os
import shutil

from conftest import run_cli


def _argv(model, data, out, *extra):
    return ["train", model, "--data", data, "--out", out, "--steps", 4, "--batch-size", 2, "--micro-batch", 2, "--seq-len", 32,
            "--eval-every", 0, "--save-every", 2, "--epochs", 20, *extra]


def _losses(run) -> list:
    return [json.loads(x).get("loss") for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_train_resume_accepts_the_same_inputs_however_typed(model_dir, sample_texts, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    shutil.copytree(model_dir("llama", 0), home / "model")
    (home / "docs.txt").write_text("\n".join(sample_texts) + "\n")
    monkeypatch.chdir(home)
    code, _, err = run_cli(capsys, *_argv("model", "docs.txt", "run"))  # relative to the working directory
    assert code == 0, err
    want = _losses(home / "run")
    saved = json.loads((home / "run" / "inputs.json").read_text())
    assert saved["data"]["resolved"] == str(home / "docs.txt") and saved["model"]["resolved"] == str(home / "model")

    def interrupted(run):  # as a kill after the first save leaves it
        shutil.rmtree(run / "checkpoints" / "step-000004")
        (run / "summary.json").unlink()

    interrupted(home / "run")  # the same files, typed as absolute paths
    code, _, err = run_cli(capsys, *_argv(home / "model", home / "docs.txt", home / "run", "--resume"))
    assert code == 0 and "resuming" in err, err
    assert _losses(home / "run") == want

    interrupted(home / "run")  # --data a copy with the same content (sha256 in inputs.json)
    shutil.copy(home / "docs.txt", home / "same-docs.txt")
    code, _, err = run_cli(capsys, *_argv("model", "same-docs.txt", "run", "--resume"))
    assert code == 0, err

    moved = tmp_path / "moved"  # the run moved together with its inputs, the original gone
    shutil.move(home, moved)
    os.chdir(moved)
    interrupted(moved / "run")
    code, _, err = run_cli(capsys, *_argv("model", "docs.txt", "run", "--resume"))
    assert code == 0, err
    assert _losses(moved / "run") == want

    interrupted(moved / "run")  # a copy of the model elsewhere: not the same file, not moved with the run: refused
    shutil.copytree(moved / "model", tmp_path / "elsewhere")
    code, _, err = run_cli(capsys, *_argv(tmp_path / "elsewhere", "docs.txt", "run", "--resume"))
    assert code == 2 and "config differs from the run's in --model" in err, err
