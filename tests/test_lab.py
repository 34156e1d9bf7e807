"""`kentropy lab --preset smoke` end to end: every stage, the report, and a rerun that costs nothing."""

import json
import re

import pytest

from kentropy.cli import main
from kentropy.lab.judge.verdicts import VERDICTS


@pytest.mark.slow
def test_lab_smoke_end_to_end_and_cached_rerun(tmp_path, capsys):
    out = tmp_path / "lab"
    main(["lab", "--preset", "smoke", "--out", str(out), "--device", "cpu"])
    stdout = capsys.readouterr().out
    assert "knowledge entropy decays" in stdout and "report.md" in stdout

    results = json.loads((out / "results.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    assert {"world", "tokenizer", "corpora", "pretrain", "measure", "circuits"} <= set(timings)
    # >= 8 pretraining checkpoints named by step, plus the initialization
    steps = [e["step"] for e in results["entropy"]]
    assert steps[0] == 0 and len(steps) >= 9 and steps == sorted(steps)
    ckpts = sorted(p.name for p in out.glob("stages/pretrain-*/run/checkpoints/step-*"))
    assert len(ckpts) >= 8 and all(re.fullmatch(r"step-\d{6}", c) for c in ckpts)
    # the report's numbers are the measured ones
    measured = json.loads(next(out.glob("stages/measure-*/result.json")).read_text())["series"]["held_out"]["results"]
    assert [e["knowledge_entropy"] for e in results["entropy"]] == [m["knowledge_entropy"] for m in measured]
    for row in results["continual"]:
        run = json.loads(next(out.glob(f"stages/continual-step{row['step']}-seed0-*/result.json")).read_text())
        assert row["A"]["mean"] == run["summary"]["A"] and row["F"]["mean"] == run["summary"]["F"]
        s = run["summary"]
        assert s["A"] == pytest.approx((s["P_after"] - s["P_before"]) / abs(s["P_before"]) * 100)
    f = results["findings"]
    verdicts = set(VERDICTS) - {"not measured"}
    assert f["entropy_decay"]["verdict"] in verdicts and f["resuscitation"]["verdict"] in verdicts
    assert f["resuscitation"]["verdict_A"] in verdicts and f["resuscitation"]["verdict_F"] in verdicts  # finding 3 on A and on F
    assert "regimes" not in results and results["circuits"]["checkpoints"]
    # the official protocol: rows of continual_seq_len, the last round on the final step
    cfg = results["config"]
    run = json.loads(next(out.glob("stages/continual-resuscitated-P2-seed0-*/result.json")).read_text())
    assert run["summary"]["config"]["seq_len"] == cfg["continual_seq_len"] and run["summary"]["F"] is not None
    plan = json.loads(next(out.glob("stages/world-*/plan.json")).read_text())
    assert plan["schedule"][-1]["step"] == cfg["continual_steps"] - 1
    assert set(results["resuscitation"]) == {"0.5", "2.0"}

    report = (out / "report.md").read_text()
    assert "## Findings" in report and "r = 0.94" in report and "Knowledge circuits" in report
    assert "3b. Resuscitation" in report and f"peak lr {cfg['lr']:g}" in report and "cosine decay to 0.1 × lr" in report
    for fig in re.findall(r"\]\((figures/[^)]+\.png)\)", report):
        assert (out / fig).read_bytes()[:4] == b"\x89PNG", fig
    assert len(re.findall(r"\]\((figures/[^)]+\.png)\)", report)) >= 6

    # a rerun finds every stage cached and rewrites the same report
    main(["lab", "--preset", "smoke", "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert "running" not in err and err.count("cached") >= len(timings)
    assert json.loads((out / "results.json").read_text())["findings"] == f
