"""`train --resume` checks the content of its input files (inputs.json: sha256 of --data, --knowledge,
--plan), not only its flags: a file changed since the run started is refused in one line."""

from __future__ import annotations

import hashlib
import json
import shutil

from conftest import run_cli

from kentropy.knowledge import generate_knowledge


def test_resume_refuses_changed_input_files(model_dir, sample_texts, tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text("\n".join(sample_texts) + "\n")
    entries = generate_knowledge(2, n_paraphrases=1, seed=0)
    for e in entries:
        e["train_context"] = " ".join(e["train_context"].split()[:6])
        e["paraphrases"] = [" ".join(p.split()[:6]) for p in e["paraphrases"]]
    (tmp_path / "fk.json").write_text(json.dumps(entries))
    run = tmp_path / "run"
    argv = ["train", model_dir("llama", 3), "--data", tmp_path / "corpus.txt", "--knowledge", tmp_path / "fk.json", "--out", run,
            "--steps", 2, "--batch-size", 2, "--micro-batch", 2, "--seq-len", 32, "--rounds", 1, "--eval-every", 0, "--epochs", 20]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    saved = json.loads((run / "inputs.json").read_text())
    assert saved["data"]["sha256"] == hashlib.sha256((tmp_path / "corpus.txt").read_bytes()).hexdigest()
    assert saved["knowledge"]["sha256"] == hashlib.sha256((tmp_path / "fk.json").read_bytes()).hexdigest()
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}

    shutil.copy(tmp_path / "fk.json", tmp_path / "fk.orig")
    entries[0]["train_context"] = entries[0]["train_context"].replace(" ", "  ", 1)  # one byte more
    (tmp_path / "fk.json").write_text(json.dumps(entries))
    code, _, err = run_cli(capsys, *argv, "--resume")
    assert code == 2 and err.count("error:") == 1 and "--knowledge" in err and "changed since the run started" in err, err

    shutil.copy(tmp_path / "fk.orig", tmp_path / "fk.json")
    with (tmp_path / "corpus.txt").open("a") as f:
        f.write("one more document\n")
    code, _, err = run_cli(capsys, *argv, "--resume")
    assert code == 2 and "--data" in err and "changed since the run started" in err, err
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before  # the run is untouched
