"""Closing the loop from the decay study's checkpoints: the rows never longer than pretraining's, the
lr, the preregistered starting points, the manipulation check, the slopes across seeds, F's standard
error and the `loop` contract. The stages are stand-ins recording what each run was given (the
stages themselves are tested in test_lab.py and test_lab_stages.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kentropy.errors import KentropyError
from kentropy.lab.cache import Done
from kentropy.lab.config import Arm, DecayConfig, decay_config, load_preset
from kentropy.lab.judge.findings import slope_finding
from kentropy.lab.judge.plan import fraction_step
from kentropy.lab.judge.verdicts import DID_NOT_HOLD, HELD, INCONCLUSIVE, NOT_MEASURABLE, NOT_TESTED, VERDICTS
from kentropy.lab.report.loop import floor_text, loop_section
from kentropy.lab.studies import loop as loop_mod
from kentropy.lab.studies.loop import close_the_loop, continual_config, forgetting_se, loop_plan_text

STEPS = {"reference": 40, "GELU": 30}  # pretraining steps of the stand-in runs
SEQ = {"reference": 64, "GELU": 32}
LR = {"reference": 3e-3, "GELU": 2e-3}


def dcfg(seeds=(0, 1, 2), workers=1, **loop) -> DecayConfig:
    return DecayConfig(reference=Arm(seq_len=SEQ["reference"], lr=LR["reference"]),
                       arms={"GELU": {"arch": "gelu", "seq_len": SEQ["GELU"], "lr": LR["GELU"]}},
                       seeds=list(seeds), workers=workers, **loop)


def study(d: DecayConfig) -> tuple[dict, dict]:
    """A decay study's result (contract: arms[].seeds) and its pretraining stages: H falls with the step."""
    arms, pretrains = [], {}
    for name, n in STEPS.items():
        seeds = []
        for s in d.seeds:
            steps = list(range(n + 1))
            seeds.append({"seed": s, "steps": steps, "knowledge_entropy": [10.0 - 0.05 * t - 0.1 * s - (name == "GELU") for t in steps]})
            ckpts = [{"step": t, "path": f"/ckpt/{name}/{s}/{t}"} for t in steps]
            pretrains[(name, s)] = Done({"steps": n, "checkpoints": ckpts}, Path("/x"), f"{name}{s}")
        arms.append({"name": name, "seeds": seeds})
    return {"arms": arms}, pretrains


TASKS = ("lab_fact_recall", "lab_entity_typing")


def downstream(scores: list[float], n: int = 101) -> dict:
    return {"tasks": {TASKS[k]: {"score": x, "n": n} for k, x in enumerate(scores)}, "D": sum(scores) / len(scores)}


def with_rows(*rows: list[float]) -> dict:
    """`evaluate(rows=True)`'s result: the lab's tasks, of these per-document rows."""
    tasks = {TASKS[k]: {"score": sum(x) / len(x), "n": len(x), "rows": x} for k, x in enumerate(rows)}
    return {"tasks": tasks, "D": sum(t["score"] for t in tasks.values()) / len(tasks)}


# D_b = .675, D_a = .45 on the same documents: paired SE(F) = 100 / .675 · sqrt(1 / 45) (test_lab_analysis, by hand)
PAIRED = (with_rows([1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0, 1.0]), with_rows([1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0, 1.0]))


@pytest.fixture
def stand_ins(monkeypatch):
    """Stand-in stages: each continual run records (cfg, start); resuscitation lowers H (5.0 -> 4.9), or raises it
    (5.0 -> 5.1) where `calls["raise"]`."""
    calls = {"continual": [], "resuscitate": [], "fits": []}

    def continual(stages, cfg, start, start_hash, label, seed, world, corpora, device):
        calls["continual"].append({"cfg": cfg, "start": start, "hash": start_hash, "label": label})
        step = int(start.rsplit("/", 1)[-1]) if start.startswith("/ckpt") else 99
        db, da = PAIRED if calls.get("rows") else (downstream([0.5, 0.3]), downstream([0.4, 0.2]))
        summary = {"A": 50.0 - step / 2, "F": step / 4, "P_before": -5.0, "P_after": -5.0 + (100 - step) / 100,
                   "D_before": db["D"], "D_after": da["D"], "downstream_before": db, "downstream_after": da}
        return Done({"summary": summary}, Path("/x"), "c")

    def resuscitate(stages, cfg, final, pre, corpora, amplify, device):
        calls["resuscitate"].append({"cfg": cfg, "final": final})
        after = 5.1 if calls.get("raise") else 4.9
        return Done({"path": "/resus", "report": {"knowledge_entropy_before": 5.0, "knowledge_entropy_after": after}}, Path("/x"), "r")

    def fits(cfg, world, tok):
        calls["fits"].append(cfg.continual_seq_len)
        if cfg.continual_seq_len < 48 and calls.get("short_rows_fail"):
            raise KentropyError("lab config: continual_seq_len 32 is shorter than 3 injected passages")
        return {"longest": 40}

    monkeypatch.setattr(loop_mod, "continual_stage", continual)
    monkeypatch.setattr(loop_mod, "resuscitate_stage", resuscitate)
    monkeypatch.setattr(loop_mod, "check_knowledge_fits", fits)
    band = {"of_entities": 300}
    tasks = {"task_metadata": {"fact_recall": {"rows": 100, "prior_guess": 0.25, "popularity_band": band},
                               "entity_typing": {"rows": 40, "prior_guess": 0.35, "popularity_band": band}}}
    monkeypatch.setattr(loop_mod, "world_stage", lambda stages, cfg: Done(tasks, Path("/x"), "w"))
    return calls


def test_every_continual_run_fits_its_pretraining_rows_at_its_peak_lr(stand_ins):
    """The position check: every continual run of the loop trains on rows no longer than the arm's pretraining
    rows, at the arm's peak lr; the starts are the checkpoints at the preregistered fractions of every seed."""
    d = dcfg(loop_arms=["GELU"], loop_amplify=[2.0])
    result, pretrains = study(d)
    out = close_the_loop(None, load_preset("smoke"), d, result, pretrains, None, None, "cpu")
    runs = stand_ins["continual"]
    assert len(runs) == 3 * (4 + 1 + 1)  # seeds x (fractions + the other arm's final + resuscitated), one continual seed
    for r in runs:
        arm = "GELU" if "/GELU/" in r["start"] else "reference"
        assert r["cfg"].continual_seq_len <= SEQ[arm] and r["cfg"].continual_lr == LR[arm]
        assert r["cfg"].knowledge_facts == d.loop_knowledge_facts and r["cfg"].tasks_per_kind == d.loop_tasks_per_kind
    ref_starts = sorted({int(r["start"].rsplit("/", 1)[1]) for r in runs if "/reference/0/" in r["start"]})
    assert ref_starts == [fraction_step(f, 40) for f in (0.25, 0.5, 0.75, 1.0)] == [10, 20, 30, 40]
    assert sorted(stand_ins["fits"]) == [32, 64]  # both arms' rows checked before training
    assert [c["final"] for c in stand_ins["resuscitate"]] == [f"/ckpt/reference/{s}/40" for s in (0, 1, 2)]
    assert out["continual"]["lr"] == out["continual"]["pretrain_peak_lr"] == 3e-3
    assert out["continual"]["seq_len"] == out["continual"]["pretrain_seq_len"] == 64
    # each task's rows and the floor D is read against, from the world stage's metadata
    assert d.loop_tasks_per_kind == 100 and out["continual"]["rows_per_task"] == {"fact_recall": 100, "entity_typing": 40}
    assert out["continual"]["prior_guess_D"] == pytest.approx(0.3)
    assert [p["D_before"] for p in out["points"]] == pytest.approx([0.4] * len(out["points"]))
    # the contract of `loop`, gates first: D before (0.40) is 0.10 above the floor (0.30) but not 5 SE: no knowledge to forget
    for key in ("slope_A_on_H", "slope_F_on_H", "slope_dP_on_H"):
        assert {"per_seed", "mean", "ci", "p", "verdict", "why"} <= set(out[key]) and len(out[key]["per_seed"]) == 3
        assert out[key]["verdict"] in VERDICTS
    assert out["slope_dP_on_H"]["verdict"] == NOT_MEASURABLE and out["slope_dP_on_H"]["why"].startswith("no knowledge to forget")
    assert out["slope_A_on_H"]["verdict"] == NOT_MEASURABLE and "no pilot" in out["slope_A_on_H"]["why"]  # the design first
    assert not out["gates"]["2c"]["knowledge"]["passed"] and len(out["gates"]["2c"]["knowledge"]["whole"]) == 3 * 5
    # resuscitation lowered H in the stand-in: the p counts in no seed, its numbers kept
    res = out["resuscitation"]
    assert [r["counted"] for r in res["resuscitation"]] == [False] * 3 and res["by_amplify"][0]["counted_seeds"] == []
    assert res["verdict_A"] == NOT_TESTED and [r["delta_A"] for r in res["resuscitation"]] == [-29.5] * 3  # A = 50 - 99/2 vs 50 - 40/2
    assert out["gates"]["3a"]["manipulation"]["per_amplify"]["2"]["seeds"]["0"] == {"H_before": 5.0, "H_after": 4.9, "passed": False}
    assert out["F_se"]["max"] == pytest.approx(10.145426925467454) and out["F_se"]["estimate"] == "independent upper bound"
    assert out["resuscitation_skipped"] == [{"arm": "GELU", "reason": "only the reference arm is resuscitated"}]
    assert "downstream_before" not in out["points"][0]  # the rows stay in the stages, not in results.json
    md = loop_section(out)
    assert "F's standard error (independent upper bound): at most 10.15 points" in md
    assert "Continual rows of 64 tokens (pretrained on 64); continual lr 0.003 (the arm's pretraining peak lr 0.003)" in md
    assert "plus the final checkpoints of GELU" in md and "**not tested**" in md and "NOT below the target of 2" in md
    assert f"{d.loop_tasks_per_kind} rows per downstream task (all the world gives: entity_typing 40)" in md
    assert "H rose in seed(s) none" in md and "at least +102 % per nat of H" in md
    assert out["downstream_knowledge"] == {"median": 0.4, "floor": 0.3, "margin": pytest.approx(0.1), "above": True}
    assert "D before continual learning: median 0.400, against 0.300 for a guess that knows no fact" in md
    assert "+0.100, above it; whether that is knowledge enough to forget is the knowledge gate's to say" in md
    below = floor_text({"median": 0.255, "floor": 0.26, "margin": -0.005, "above": False})
    assert "-0.005, at or below it: these models show no downstream knowledge beyond the answer priors" in below


def test_a_p_that_raised_h_counts_in_its_seeds(stand_ins):
    stand_ins["raise"] = True
    d = dcfg(loop_amplify=[2.0])
    result, pretrains = study(d)
    out = close_the_loop(None, load_preset("smoke"), d, result, pretrains, None, None, "cpu")
    e = out["resuscitation"]["by_amplify"][0]
    assert e["counted_seeds"] == [0, 1, 2] and e["kl_rise_per_layer"] == pytest.approx(0.05)  # 0.1 over the reference's 2 layers
    assert e["3a"]["paper_effect"] == pytest.approx(204.8 * 0.05) and e["3a"]["verdict"] == NOT_MEASURABLE  # no pilot
    assert out["pilot_estimates"]["seeds"] == [0, 1, 2] and "2e" in out["pilot_estimates"]["sd"]


def test_runs_with_rows_get_the_paired_standard_error(stand_ins):
    stand_ins["rows"] = True
    d = dcfg(loop_amplify=[2.0])
    result, pretrains = study(d)
    out = close_the_loop(None, load_preset("smoke"), d, result, pretrains, None, None, "cpu")
    assert all(p["F_se_paired"] for p in out["points"])
    assert out["F_se"]["max"] == pytest.approx(100 / 0.675 * math.sqrt(1 / 45)) and out["F_se"]["estimate"] == "paired"
    assert f"F's standard error (paired): at most {out['F_se']['max']:.2f} points" in loop_section(out)


def test_the_runs_trained_side_by_side_are_the_runs_the_loop_reads(stand_ins):
    """On a CPU with two workers the loop trains its continual runs side by side first, then reads them from the
    cache: the side-by-side jobs are exactly the runs the sequential pass asks for (same start, hash, label, config)."""
    d = dcfg(loop_arms=["GELU"], loop_amplify=[2.0, 3.0])
    result, pretrains = study(d)
    lab = load_preset("smoke")
    close_the_loop(None, lab, d, result, pretrains, None, None, "cpu")
    asked = [(r["cfg"], r["start"], r["hash"], r["label"]) for r in stand_ins["continual"]]
    jobs = loop_mod.loop_jobs(None, lab, d, [0, 1, 2], pretrains, None, "cpu")
    assert len(jobs) == 3 * (4 + 1 + 2) and sorted(jobs, key=lambda j: j[3]) == sorted(asked, key=lambda j: j[3])
    assert loop_mod.side_by_side(2, "cpu") and not loop_mod.side_by_side(1, "cpu") and not loop_mod.side_by_side(2, "cuda")


def test_passages_that_do_not_fit_stop_the_loop_before_training(stand_ins):
    stand_ins["short_rows_fail"] = True
    d = dcfg(loop_arms=["GELU"])
    result, pretrains = study(d)
    out = close_the_loop(None, load_preset("smoke"), d, result, pretrains, None, None, "cpu")
    assert stand_ins["continual"] == []
    assert out["note"].startswith("not run: decay loop: arm GELU's injected knowledge does not fit its 32-token")
    assert "decay.loop_knowledge_facts" in out["note"] and out["slope_A_on_H"]["per_seed"] is None
    assert out["slope_A_on_H"]["verdict"] == out["resuscitation"]["verdict"] == NOT_MEASURABLE
    assert out["slope_A_on_H"]["why"] == out["note"] and not out["gates"]["3b"]["design"]["passed"]
    assert "not run" in loop_section(out)


def test_continual_config_and_loop_lr():
    cfg = load_preset("smoke")
    arm = Arm(seq_len=96, lr=2e-3)
    c = continual_config(cfg, dcfg(), arm)
    assert (c.continual_seq_len, c.continual_lr, c.knowledge_facts) == (96, 2e-3, 7)
    assert continual_config(cfg, dcfg(loop_lr=4e-4), arm).continual_lr == 4e-4
    plan = loop_plan_text(dcfg(loop_arms=["GELU"]))
    assert "seeds 0, 1, 2, from 0.25, 0.5, 0.75, 1 of training, plus the final checkpoints of GELU" in plan
    assert "lr each arm's pretraining peak (0.003 for the reference)" in plan and "rows = each arm's pretraining seq_len (64" in plan
    assert "power gate (pilot: none" in plan and "vs paper-implied +102.4" in plan and "testable by design" in plan


def test_resuscitation_only_where_algorithm_1_scales_c_exactly(stand_ins):
    """A plain GELU reference is not resuscitated (scaling its pre-activation can shrink |c|); a gated one is."""
    assert [loop_mod.scales_exactly(Arm(arch=a)) for a in ("swiglu", "gelu")] == [True, False]
    d = dcfg()
    d.reference = Arm(arch="gelu", seq_len=SEQ["reference"], lr=LR["reference"])
    result, pretrains = study(d)
    out = close_the_loop(None, load_preset("smoke"), d, result, pretrains, None, None, "cpu")
    assert stand_ins["resuscitate"] == [] and out["resuscitation"]["by_amplify"] == []
    assert out["resuscitation"]["verdict_A"] == NOT_MEASURABLE and loop_mod.INEXACT in out["resuscitation"]["why_A"]
    assert out["resuscitation_skipped"] == [{"arm": "reference", "reason": loop_mod.INEXACT}]


def test_slopes_from_a_hand_made_table():
    """Per seed the OLS slope over H = 10, 9, 8, 7; across seeds mean, t-interval and two-sided p (values by hand)."""
    h = [[10.0, 9.0, 8.0, 7.0]] * 3
    passed = {"power": {"passed": True}}
    a = slope_finding("2e", h, [[40, 30, 25, 15], [20, 18, 16, 14], [11, 12, 9, 8]], passed, None)
    assert a["per_seed"] == pytest.approx([8.0, 2.0, 1.2])  # Sxy / Sxx = 40/5, 10/5, 6/5
    assert a["mean"] == pytest.approx(3.733333333)
    # sd = 3.716559, se = 2.145756, t = 1.739869 on 2 df: p = 1 - t / sqrt(2 + t^2) = 0.224016
    assert a["ci"] == pytest.approx([-5.4992857, 12.9659523], rel=1e-6) and a["p"] == pytest.approx(0.2240164, rel=1e-5)
    assert a["verdict"] == INCONCLUSIVE  # the paper's sign, not significant: an underpowered null
    f = slope_finding("2d", h, [[0, 2, 4, 6], [0, 2.1, 4.2, 6.3], [0, 1.9, 3.8, 5.7]], passed, None)
    assert f["per_seed"] == pytest.approx([-2.0, -2.1, -1.9]) and f["p"] == pytest.approx(0.000832293, rel=1e-5)
    assert f["verdict"] == HELD
    assert slope_finding("2d", h, [[0, 2, 4, 6], [0, 2.1, 4.2, 6.3], [0, 1.9, 3.8, 5.7]], passed, -144.0)["verdict"] == "direction only"
    assert slope_finding("2e", h, [[0, 2, 4, 6], [0, 2.1, 4.2, 6.3], [0, 1.9, 3.8, 5.7]], passed, None)["verdict"] == DID_NOT_HOLD


def test_forgetting_standard_error():
    """Delta method: Var(D_b) = (.25/100 + .21/100)/4, Var(D_a) = (.24/100 + .16/100)/4,
    SE = 100/.4 * sqrt(Var(D_a) + (.3/.4)^2 Var(D_b)) = 250 * sqrt(0.001646875)."""
    se = forgetting_se(downstream([0.5, 0.3]), downstream([0.4, 0.2]))
    assert se == pytest.approx(250 * math.sqrt(0.001646875)) == pytest.approx(10.1454269)
    assert forgetting_se(None, downstream([0.5])) is None


def test_loop_config_is_checked():
    with pytest.raises(KentropyError, match="loop_arms: 'nope'"):
        decay_config({"loop_arms": ["nope"], "min_reference_tokens_per_parameter": 0, "min_tokens_per_parameter": 0})
    with pytest.raises(KentropyError, match="loop_fractions"):
        decay_config({"loop_fractions": [0.5, 1.5], "min_reference_tokens_per_parameter": 0})
    d = load_preset("decay").decay
    assert d.loop_fractions == [0.25, 1.0] and d.loop_tasks_per_kind > 1875
    assert d.loop_amplify == [1.0, 1.5, 2.0]
    pilot = d.pilot_plan()  # measured on seeds disjoint from the main runs'
    assert pilot is not None and not set(pilot.seeds) & set(d.seeds) and {"2c", "2d", "3a", "3b"} <= set(pilot.sd)
    free = {"min_reference_tokens_per_parameter": 0, "min_tokens_per_parameter": 0, "min_cumulative_weight_decay": 0}
    with pytest.raises(KentropyError, match="loop_amplify must hold the grid 1, 1.5, 2 at least .* missing 1, 1.5"):
        decay_config({"loop_amplify": [2.0], **free})
    pilot = {"source": "pilot run", "seeds": [1, 7], "sd": {"2c": 100.0}}
    with pytest.raises(KentropyError, match="decay: seeds: seed\\(s\\) 1 were the pilot's"):
        decay_config({"pilot": pilot, "seeds": [0, 1], **free}, "decay")
    with pytest.raises(KentropyError, match="decay: pilot: sd: unknown finding"):
        decay_config({"pilot": {**pilot, "sd": {"4": 1.0}}, "seeds": [0, 2], **free}, "decay")
    assert decay_config({"pilot": pilot, "seeds": [0, 2], **free}).pilot_plan().sd == {"2c": 100.0}
