"""`kentropy lab --preset smoke` end to end: every stage for two pretraining seeds, the report, and a rerun that costs nothing."""

import json
import re

import pytest

from kentropy.cli.app import main
from kentropy.lab.judge.plan import FINDINGS
from kentropy.lab.judge.verdicts import VERDICTS


@pytest.mark.slow
def test_lab_smoke_end_to_end_and_cached_rerun(tmp_path, capsys):
    out = tmp_path / "lab"
    main(["lab", "--preset", "smoke", "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    stdout = captured.out
    # what the design can test comes first: in the plan (before any stage) and in the closing summary
    assert captured.err.index("what the core study can test") < captured.err.index("[lab] world")
    assert "[lab] power gate (pilot: none" in captured.err and "[lab] changed after a run was seen: " in captured.err
    assert stdout.splitlines()[1].startswith("  1   Knowledge entropy decays") and "report.md" in stdout

    results = json.loads((out / "results.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    cfg = results["config"]
    seeds = cfg["pretrain_seeds"]
    assert len(seeds) == 2 and [s["seed"] for s in results["seeds"]] == seeds
    assert {"world", "tokenizer", "corpora", "circuits"} | {f"{k}-seed{s}" for k in ("pretrain", "measure") for s in seeds} <= set(timings)
    for s, rec in zip(seeds, results["seeds"]):
        # >= 8 pretraining checkpoints named by step, plus the initialization, and the contrast's steps exactly
        steps = rec["steps"]
        assert steps[0] == 0 and len(steps) >= 9 and steps == sorted(steps)
        ckpts = sorted(p.name for p in out.glob(f"stages/pretrain-seed{s}-*/run/checkpoints/step-*"))
        assert len(ckpts) >= 8 and all(re.fullmatch(r"step-\d{6}", c) for c in ckpts)
        a = results["findings"]["entropy_decay"]["across_seeds"]
        assert a["from_step"] in steps and a["to_step"] == steps[-1]
        # the report's numbers are the measured ones
        measured = json.loads(next(out.glob(f"stages/measure-seed{s}-*/result.json")).read_text())["series"]["held_out"]["results"]
        assert rec["knowledge_entropy"] == [m["knowledge_entropy"] for m in measured]
        for row in rec["continual"]:
            run = json.loads(next(out.glob(f"stages/continual-pre{s}-step{row['step']}-seed0-*/result.json")).read_text())
            r = run["summary"]
            assert row["A"] == r["A"] and row["F"] == r["F"] and r["A"] == pytest.approx((r["P_after"] - r["P_before"]) / abs(r["P_before"]) * 100)
            # continual rows within the pretrained positions, at the pretraining peak lr
            assert r["config"]["seq_len"] == cfg["continual_seq_len"] <= cfg["seq_len"] and r["config"]["lr"] == cfg["lr"]
            assert row["F_se"] > 0
    a = results["findings"]["entropy_decay"]["across_seeds"]
    h = {s["seed"]: dict(zip(s["steps"], s["knowledge_entropy"])) for s in results["seeds"]}
    assert a["per_seed"] == pytest.approx([(h[s][a["from_step"]] - h[s][a["to_step"]]) / cfg["layers"] for s in seeds])
    f = results["findings"]
    # the contract: gates per finding, each gate's passed a bool; every verdict from the one vocabulary; deviations
    assert list(results["gates"]) == list(FINDINGS) and [r["finding"] for r in results["testable"]] == list(FINDINGS)
    for g in results["gates"].values():
        assert {"knowledge", "power", "manipulation"} <= set(g) and all(isinstance(x["passed"], bool) for x in g.values())
    k = results["gates"]["2a"]["knowledge"]
    assert len(k["whole"]) == len(k["head"]) == 2 * len(cfg["continual_at"])  # per seed and start
    assert all({"D_before", "floor", "margin", "se", "passed"} <= set(r) for r in k["whole"] + k["head"])
    assert set(results["gates"]["2c"]["power"]) >= {"mde", "paper_effect", "units", "power", "passed"}
    assert not results["gates"]["1"]["regime"]["passed"]  # smoke is far from the paper's regime
    assert f["entropy_decay"]["verdict"] == "not measurable" and "regime" in f["entropy_decay"]["why"]
    assert all(isinstance(d, str) for d in results["deviations"]) and len(results["deviations"]) >= 2
    assert f["resuscitation"]["verdict"] in VERDICTS
    for key in ("slope_A_on_step", "slope_F_on_step", "slope_A_on_H", "slope_F_on_H", "slope_dP_on_H"):
        assert len(f["acquisition_forgetting"][key]["per_seed"]) == 2 and f["acquisition_forgetting"][key]["verdict"] in VERDICTS
    # finding 3 counts a p only in the seeds where resuscitation raised H
    m = results["gates"]["3a"]["manipulation"]
    for r in f["resuscitation"]["resuscitation"]:
        assert r["counted"] == (r["H_after"] > r["H_before"]) == m["per_amplify"][f"{r['amplify']:g}"]["seeds"][str(r["seed"])]["passed"]
    for e in f["resuscitation"]["by_amplify"]:
        assert sorted(e["counted_seeds"] + e["uncounted_seeds"]) == seeds
    assert set(results["pilot_estimates"]) == {"source", "seeds", "sd"}
    assert results["circuits"]["findings"]["relevance"]["verdict"] == "inconclusive"  # one run
    assert "regimes" not in results and results["circuits"]["checkpoints"]
    assert results["lr"] == {"pretraining_peak": cfg["lr"], "continual": cfg["lr"], "paper_continual": 4e-4}
    plan = json.loads(next(out.glob("stages/world-*/plan.json")).read_text())
    assert plan["schedule"][-1]["step"] == cfg["continual_steps"] - 1
    assert [r["amplify"] for r in results["resuscitation"]] == [0.5, 2.0]

    report = (out / "report.md").read_text()
    assert report.index("## What this design can test") < report.index("## Gates") < report.index("## Findings")
    assert "r = 0.94" in report and "Knowledge circuits" in report and "**Changed after a run was seen**" in report
    assert "3b. Resuscitation" in report and f"peak lr {cfg['lr']:g}" in report and "cosine decay to 0.1 × lr" in report
    assert "Continual peak lr" in report and "Standard error of F" in report and "2 pretraining seed(s)" in report
    for fig in re.findall(r"\]\((figures/[^)]+\.png)\)", report):
        assert (out / fig).read_bytes()[:4] == b"\x89PNG", fig
    assert len(re.findall(r"\]\((figures/[^)]+\.png)\)", report)) >= 4

    # a rerun finds every stage cached and rewrites the same report
    main(["lab", "--preset", "smoke", "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert "running" not in err and err.count("cached") >= len(timings)
    assert json.loads((out / "results.json").read_text())["findings"] == f
