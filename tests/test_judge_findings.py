"""The findings through their gates on hand-made seeds: the gates decide before the ladder, finding 3 counts a p only
where H rose and needs the absolute P and D after as well as A and F, and the pilot's estimates come back in the
shape a preset takes."""

import statistics

import pytest

from kentropy.lab.judge.findings import (core_plan, finding_1, finding_3, findings_2, pilot_estimates, planned, can_test)
from kentropy.lab.judge.gates import not_applicable, regime_gate
from kentropy.lab.judge.plan import Pilot, pilot_from_dict
from kentropy.lab.judge.verdicts import (DECAYED_SESOI, DIRECTION_ONLY, DID_NOT_HOLD, HELD, INCONCLUSIVE, NOT_MEASURABLE,
                                         NOT_MEASURED, NOT_TESTED)

PASSED = {"passed": True, "why": None}
NO_KNOWLEDGE = {"passed": False, "why": "no knowledge to forget: D before continual learning is not above the floor"}
PILOT = Pilot("pilot run", (100, 101, 102), {"2a": 0.001, "2c": 5.0, "2d": 5.0, "3a": 0.5, "3b": 0.5})


def seeds_2(slope_a: list[float]) -> list[dict]:
    """Per seed three starts: H 5.0, 5.1, 5.2 and A with slope `slope_a[k]` on H, F falling on H, ΔP rising."""
    out = []
    for k, b in enumerate(slope_a):
        h = [5.0, 5.1, 5.2]
        out.append({"step": [10, 20, 40], "H": h, "A": [20 + b * (x - 5.0) for x in h], "F": [10 - 300 * (x - 5.0) + k for x in h],
                    "dP": [0.1 * x for x in h]})
    return out


def test_findings_2_are_judged_only_through_their_gates():
    per_seed = seeds_2([210.0, 190.0, 200.0, 205.0, 195.0, 202.0])
    gates, out = findings_2(per_seed, ["2a", "2c", "2d", "2e"], layers=2, steps=40, pilot=PILOT, knowledge=PASSED)
    assert gates["2c"]["power"]["passed"] and gates["2c"]["power"]["paper_effect"] == pytest.approx(102.4)
    assert out["2c"]["verdict"] == HELD and out["2c"]["mean"] == pytest.approx(1202 / 6) and out["2c"]["why"] is None
    assert out["2d"]["verdict"] == HELD and out["2d"]["mean"] == pytest.approx(-300.0)
    assert out["2e"]["verdict"] == HELD and gates["2e"]["power"]["applies"] is False  # no paper size: the gate does not apply
    assert out["2a"]["units"] == "% per step"
    # no knowledge to forget: every finding 2 reads not measurable, with the reason, whatever its numbers
    gates, out = findings_2(per_seed, ["2c", "2d", "2e"], layers=2, steps=40, pilot=PILOT, knowledge=NO_KNOWLEDGE)
    assert {v["verdict"] for v in out.values()} == {NOT_MEASURABLE} and all(v["why"] == NO_KNOWLEDGE["why"] for v in out.values())
    assert out["2c"]["mean"] == pytest.approx(1202 / 6)  # the numbers stay
    # no pilot: the power is unknown
    _, out = findings_2(per_seed, ["2c", "2e"], layers=2, steps=40, pilot=None, knowledge=PASSED)
    assert out["2c"]["verdict"] == NOT_MEASURABLE and "no pilot" in out["2c"]["why"] and out["2e"]["verdict"] == HELD
    # an underpowered design (2 seeds at this spread): not measurable, with the power and the seeds that would reach it
    _, out = findings_2(seeds_2([300.0, -100.0]), ["2c"], layers=2, steps=40, pilot=Pilot("p", (7, 8), {"2c": 175.0}),
                        knowledge=PASSED)
    assert out["2c"]["verdict"] == NOT_MEASURABLE and out["2c"]["why"].startswith("power 0.") and "seeds would reach it" in out["2c"]["why"]


def test_a_slope_short_of_the_paper_and_an_underpowered_null():
    _, out = findings_2(seeds_2([30.0, 31.0, 29.0, 30.5, 29.5, 30.0]), ["2c"], layers=2, steps=40, pilot=PILOT, knowledge=PASSED)
    assert out["2c"]["verdict"] == DIRECTION_ONLY  # significant, but wholly short of the paper's +102.4
    _, out = findings_2(seeds_2([-150.0, 120.0, -300.0, 146.0, 180.0, -20.0]), ["2c"], layers=2, steps=40, pilot=PILOT,
                        knowledge=PASSED)
    assert out["2c"]["ci"][0] < 102.4 < out["2c"]["ci"][1] and out["2c"]["verdict"] == INCONCLUSIVE
    _, out = findings_2(seeds_2([-200.0, -210.0, -190.0, -205.0, -195.0, -201.0]), ["2c"], layers=2, steps=40, pilot=PILOT,
                        knowledge=PASSED)
    assert out["2c"]["verdict"] == DID_NOT_HOLD


def test_findings_2_without_the_quantity_or_a_slope():
    per_seed = seeds_2([200.0, 190.0, 210.0])
    per_seed[0]["F"][1] = None
    _, out = findings_2(per_seed, ["2d"], layers=2, steps=40, pilot=PILOT, knowledge=PASSED)
    assert out["2d"]["verdict"] == NOT_MEASURED
    one = [dict(r, step=[40], H=[5.0], A=[1.0], F=[1.0], dP=[1.0]) for r in seeds_2([1.0, 2.0])]
    _, out = findings_2(one, ["2a"], layers=2, steps=40, pilot=PILOT, knowledge=PASSED)
    assert out["2a"]["verdict"] == NOT_MEASURABLE and "fewer than 2 distinct step" in out["2a"]["why"]


def resus(p: float, seed: int, rise: float, dA: float, dF: float, dP: float, dD: float) -> dict:
    return {"seed": seed, "amplify": p, "H_before": 5.0, "H_after": 5.0 + rise, "delta_A": dA, "delta_F": dF,
            "delta_P_after": dP, "delta_D_after": dD}


def test_finding_3_counts_a_p_only_where_h_rose_and_needs_p_and_d_after():
    # p = 2 lowered H everywhere; p = 1 raised it by 0.02 nats (0.01 per layer) in 5 of 6 seeds and helped A and F
    rows = [resus(2.0, s, -0.1, 5.0, -3.0, 0.2, 0.02) for s in range(6)]
    rows += [resus(1.0, s, 0.02 if s else -0.01, 3.0 + 0.1 * s, -3.0 - 0.1 * s, 0.2 + 0.01 * s, 0.02 + 0.001 * s) for s in range(6)]
    gates, f3 = finding_3(rows, layers=2, pilot=PILOT, knowledge=PASSED)
    by_p = {e["amplify"]: e for e in f3["by_amplify"]}
    assert by_p[2.0]["counted_seeds"] == [] and by_p[2.0]["3a"]["verdict"] == NOT_TESTED
    assert by_p[1.0]["counted_seeds"] == [1, 2, 3, 4, 5] and by_p[1.0]["uncounted_seeds"] == [0]
    assert by_p[1.0]["kl_rise_per_layer"] == pytest.approx(0.01) and by_p[1.0]["3a"]["paper_effect"] == pytest.approx(2.048)
    assert by_p[1.0]["3a"]["A"]["per_seed"] == pytest.approx([3.1, 3.2, 3.3, 3.4, 3.5])  # the counted seeds only
    assert by_p[1.0]["3a"]["verdict"] == HELD and by_p[1.0]["3b"]["verdict"] == HELD
    assert f3["verdict_A"] == HELD and f3["verdict_F"] == HELD  # over the p that were judged
    assert gates["3a"]["manipulation"]["per_amplify"]["2"]["seeds"]["0"]["passed"] is False
    assert gates["3a"]["power"]["per_amplify"]["1"]["seeds"] == 5 and gates["3a"]["power"]["passed"]
    assert f3["grid"] == [1.0, 2.0] and not f3["covers_paper_grid"]
    # no resuscitation at all: not measurable, its design gate failed
    gates, none = finding_3([], layers=2, pilot=PILOT, knowledge=PASSED)
    assert none["verdict"] == NOT_MEASURABLE and not gates["3a"]["design"]["passed"] and "empty grid" in none["why_A"]
    # no p raised H: not tested
    _, f3 = finding_3([r for r in rows if r["amplify"] == 2.0], layers=2, pilot=PILOT, knowledge=PASSED)
    assert f3["verdict_A"] == f3["verdict_F"] == NOT_TESTED and f3["why_A"]


def test_finding_3_without_a_pilot_is_not_testable_where_one_p_raised_h():
    """No pilot, p = 1 raised H and p = 1.5, 2 lowered it: the grid's power gate is that of p = 1 (unknown), not the
    passing not-applicable gates of the p that raised nothing; the testable table agrees with the verdict."""
    rows = [resus(p, s, 0.05 if p == 1.0 else -0.1, 3.0, -3.0, 0.2, 0.02) for p in (1.0, 1.5, 2.0) for s in range(6)]
    gates, f3 = finding_3(rows, layers=2, pilot=None, knowledge=PASSED)
    assert not gates["3a"]["power"]["passed"] and "power unknown" in gates["3a"]["power"]["why"]
    assert f3["verdict_A"] == NOT_MEASURABLE
    table = {r["finding"]: r for r in can_test(gates, {"3a": (f3["verdict_A"], f3["why_A"]), "3b": (f3["verdict_F"], f3["why_F"])})}
    assert table["3a"]["testable"] is False and "power unknown" in table["3a"]["why"]
    # H rose at no p: the power gate does not apply, the manipulation gate decides (not tested)
    gates, f3 = finding_3([r for r in rows if r["amplify"] != 1.0], layers=2, pilot=None, knowledge=PASSED)
    assert gates["3a"]["power"]["passed"] and not gates["3a"]["manipulation"]["passed"] and f3["verdict_A"] == NOT_TESTED


def test_an_edit_that_lowers_p_and_d_is_not_a_gain():
    """A damaging edit: A up and F down against its own lowered start, while P and D after continual learning fall."""
    rows = [resus(1.0, s, 0.05, 40.0 + s, -8.0 - s, -0.3 - 0.01 * s, -0.05 - 0.001 * s) for s in range(6)]
    _, f3 = finding_3(rows, layers=2, pilot=PILOT, knowledge=PASSED)
    e = f3["by_amplify"][0]
    assert e["3a"]["A"]["verdict"] == HELD and e["3a"]["P_after"]["verdict"] == DID_NOT_HOLD
    assert e["3b"]["F"]["verdict"] == HELD and e["3b"]["D_after"]["verdict"] == DID_NOT_HOLD
    assert f3["verdict_A"] == DID_NOT_HOLD and f3["verdict_F"] == DID_NOT_HOLD


def test_finding_1_reads_its_regime_first():
    seeds = [{"seed": k, "steps": [0, 50, 100], "knowledge_entropy": [9.0, 8.9, 8.9 - 0.04 - 0.001 * k],
              "knowledge_entropy_per_layer": [[4.5, 4.5], [4.45, 4.45], [4.45, 4.45 - 0.04 - 0.001 * k]]} for k in range(4)]
    plan = core_plan(0.005)
    gates, rec = finding_1(seeds, layers=2, ffn_dim=86, steps=100, plan=plan, pilot=None, regime=regime_gate(600.0, 16.0))
    assert rec["verdict"] == DECAYED_SESOI and rec["why"] is None and rec["last_layer"]["mean"] == pytest.approx(0.0415)
    assert rec["paper"]["relation"] == "within OLMo-1B's whole-run range" and gates["power"]["passed"]
    gates, rec = finding_1(seeds, layers=2, ffn_dim=86, steps=100, plan=plan, pilot=None, regime=regime_gate(0.8, 0.01))
    assert rec["verdict"] == NOT_MEASURABLE and "not in the paper's regime" in rec["why"] and rec["mean"] > 0


def test_testable_and_the_pilot_estimates():
    gates, out = findings_2(seeds_2([210.0, 190.0, 200.0]), ["2c", "2e"], layers=2, steps=40, pilot=None, knowledge=PASSED)
    rows = can_test(gates, {k: (v["verdict"], v["why"]) for k, v in out.items()})
    assert [r["finding"] for r in rows] == ["2c", "2e"] and [r["testable"] for r in rows] == [False, True]
    assert rows[0]["verdict"] == NOT_MEASURABLE and "no pilot" in rows[0]["why"] and rows[1]["why"] is None
    est = pilot_estimates([0, 1, 2], out, "this run")
    assert est["sd"]["2c"] == pytest.approx(statistics.stdev(out["2c"]["per_seed"])) == pytest.approx(10.0)
    assert pilot_from_dict(est, "pilot").sd == est["sd"]  # the shape a preset's pilot takes


def test_the_plan_decides_what_the_design_can_test():
    power, rows = planned(regime=regime_gate(0.8, 0.01), pilot=PILOT, seeds=3, layers=2, steps=40, sesoi=0.005,
                          keys=["1", "2b", "2c", "2e", "3a"])
    t = {r["finding"]: r for r in rows}
    assert not t["1"]["testable"] and "regime" in t["1"]["why"]
    assert not t["2b"]["testable"] and "no pilot" in t["2b"]["why"]  # the pilot has no 2b
    assert t["2e"]["testable"] and t["3a"]["testable"] and "× the rise of H" in power["3a"]["paper_effect_text"]
    assert power["2c"]["mde"] > 0 and power["1"]["sesoi"] == 0.005
    assert not_applicable("x") == {"applies": False, "passed": True, "why": "x"}
