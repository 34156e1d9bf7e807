"""The gates on planted data: knowledge (whole task set and head band), power (from a pilot), manipulation (per p and
seed), regime; and the order in which a failed gate decides a finding's verdict."""

import math

import pytest

from kentropy.errors import KentropyError
from kentropy.lab.judge.gates import (blocked, head_ranks, knowledge_gate, knowledge_record, manipulation_gate, not_applicable,
                                      power_gate, regime_gate)
from kentropy.lab.judge.plan import Pilot, check_pilot_seeds, pilot_from_dict
from kentropy.lab.judge.power import minimum_detectable_effect, power
from kentropy.lab.judge.stats import downstream_se
from kentropy.lab.text.tasks import make_tasks
from kentropy.lab.text.world import build_world


def meta(ranks: list[int], prior: float, entities: int = 100) -> dict:
    return {"rows": len(ranks), "prior_guess": prior, "row_ranks": ranks, "row_prior_guess": [prior] * len(ranks),
            "popularity_band": {"of_entities": entities}}


# two tasks of 40 rows: subjects of ranks 1..40 (typing) and 1..20 twice (recall); the head band: ranks <= 10
METADATA = {"entity_typing": meta(list(range(1, 41)), 0.35), "fact_recall": meta(list(range(1, 21)) * 2, 0.25)}


def downstream(rows: dict[str, list[float]]) -> dict:
    tasks = {f"lab_{k}": {"score": sum(v) / len(v), "n": len(v), "rows": v} for k, v in rows.items()}
    return {"tasks": tasks, "D": sum(t["score"] for t in tasks.values()) / len(tasks)}


def knows(head: float, tail: float) -> dict:
    """A model right on the first `head` share of each task's rows whose subject ranks <= 10, and on the first `tail`
    share of the others."""
    def rows(ranks):
        groups = {True: [i for i, r in enumerate(ranks) if r <= 10], False: [i for i, r in enumerate(ranks) if r > 10]}
        right = {i for h, idx in groups.items() for i in idx[:round((head if h else tail) * len(idx))]}
        return [1.0 if i in right else 0.0 for i in range(len(ranks))]
    return downstream({k: rows(m["row_ranks"]) for k, m in METADATA.items()})


def test_knowledge_record_by_hand():
    d = downstream({"entity_typing": [1.0] * 30 + [0.0] * 10, "fact_recall": [1.0] * 20 + [0.0] * 20})
    r = knowledge_record(0, "step 10", d, METADATA)
    assert r["D_before"] == pytest.approx((0.75 + 0.5) / 2) and r["floor"] == pytest.approx(0.30)
    se = math.sqrt(0.75 * 0.25 / 39 + 0.5 * 0.5 / 39) / 2
    assert r["se"] == pytest.approx(se) == pytest.approx(downstream_se(d)) and r["margin"] == pytest.approx(0.325)
    assert r["passed"] and r["margin"] >= 5 * r["se"]
    # the head band: typing ranks 1..10 (10 rows), recall ranks 1..10 twice (20 rows)
    h = knowledge_record(0, "step 10", d, METADATA, max_rank=10)
    assert h["tasks"] == ["lab_entity_typing", "lab_fact_recall"] and h["D_before"] == pytest.approx((1.0 + 10 / 20) / 2)


def test_planted_knowledge_passes_and_planted_priors_fail():
    starts = [{"seed": s, "start": f"step {t}", "downstream": knows(1.0, 0.75)} for s in (0, 1) for t in (10, 20)]
    g = knowledge_gate(starts, METADATA, head_band=0.1)
    assert g["passed"] and g["why"] is None and g["head_band"] == {"fraction": 0.1, "max_rank": 10}
    assert len(g["whole"]) == len(g["head"]) == 4 and all(r["passed"] for r in g["whole"] + g["head"])
    # at the floor: the models know no more than the answer priors
    flat = [{"seed": s, "start": "step 10", "downstream": knows(0.3, 0.3)} for s in (0, 1)]
    g = knowledge_gate(flat, METADATA, head_band=0.1)
    assert not g["passed"] and g["why"].startswith("no knowledge to forget") and "seed 0 at step 10 (whole)" in g["why"]
    # a margin of 0.10 that is not 5 standard errors: the head band alone knows, on too few rows
    head_only = [{"seed": 0, "start": "step 10", "downstream": knows(1.0, 0.3)}]
    g = knowledge_gate(head_only, METADATA, head_band=0.1)
    assert g["head"][0]["passed"] and not g["whole"][0]["passed"] and not g["passed"]
    assert not knowledge_gate([], METADATA, 0.1)["passed"]


def test_the_head_band_needs_per_row_scores():
    d = knows(1.0, 0.75)
    for t in d["tasks"].values():
        del t["rows"]
    r = knowledge_record(0, "x", d, METADATA, max_rank=10)
    assert r["D_before"] is None and not r["passed"]
    assert knowledge_record(0, "x", d, METADATA)["passed"]  # the whole set reads the scores


def test_the_world_tasks_know_each_rows_subject():
    world = build_world(300, 0)
    tasks = make_tasks(world, 40, 0)
    for name, m in tasks.metadata.items():
        assert m["row_ranks"] == [world.rank[s["subject"]] for s in tasks.sources[name]]
        assert len(m["row_prior_guess"]) == m["rows"] and m["prior_guess"] == pytest.approx(sum(m["row_prior_guess"]) / m["rows"], abs=1e-4)
        assert all(0 <= x <= 1 for x in m["row_prior_guess"])
    assert head_ranks(tasks.metadata, 0.1) == 30


def test_power_gate_against_the_paper_implied_effect():
    pilot = Pilot("pilot run", (100, 101, 102, 103), {"2c": 175.0, "2d": 90.0})
    g = power_gate("2c", pilot, 4, 0.05, 102.4, "% per nat of H")
    assert g["power"] == pytest.approx(power(102.4, 175.0, 4, 0.05)) and g["power"] < 0.8 and not g["passed"]
    assert g["mde"] == pytest.approx(minimum_detectable_effect(175.0, 4, 0.05, 0.8)) and g["mde"] > 102.4
    assert g["seeds_needed"] >= 20 and f"{g['seeds_needed']} seeds would reach it" in g["why"] and g["why"].startswith("power 0.")
    assert set(g) >= {"mde", "paper_effect", "units", "power", "passed"}
    ok = power_gate("2d", pilot, 12, 0.05, -144.0, "% per nat of H")
    assert ok["passed"] and ok["power"] >= 0.8 and ok["why"] is None
    unknown = power_gate("2a", pilot, 4, 0.05, -0.03, "% per step")
    assert not unknown["passed"] and "no pilot measured" in unknown["why"]
    na = power_gate("2e", pilot, 4, 0.05, None, "per nat")
    assert na["passed"] and na["applies"] is False


def test_pilot_from_a_preset():
    p = pilot_from_dict({"source": "run x", "seeds": [100, 101], "sd": {"2c": 175, "3a": 4.5}}, "decay.pilot")
    assert p == Pilot("run x", (100, 101), {"2c": 175.0, "3a": 4.5}) and pilot_from_dict(None, "x") is None
    assert p.to_json() == {"source": "run x", "seeds": [100, 101], "sd": {"2c": 175.0, "3a": 4.5}}
    for bad, words in (({"source": "x", "seeds": [1, 2], "sd": {"9z": 1.0}}, "unknown finding(s) 9z"),
                       ({"source": "x", "seeds": [1], "sd": {"2c": 1.0}}, "at least 2 distinct"),
                       ({"source": "x", "seeds": [1, 2], "sd": {"2c": 0}}, "sd.2c must be > 0"),
                       ({"source": "", "seeds": [1, 2], "sd": {"2c": 1}}, "source must say"),
                       ({"seeds": [1, 2], "sd": {"2c": 1}}, "missing key(s) source")):
        with pytest.raises(KentropyError, match="decay.pilot") as e:
            pilot_from_dict(bad, "decay.pilot")
        assert words in str(e.value)
    with pytest.raises(KentropyError, match="seed\\(s\\) 101 were the pilot's"):
        check_pilot_seeds(p, [0, 101], "decay: seeds")
    check_pilot_seeds(p, [0, 1], "decay: seeds")


def test_manipulation_gate_per_p_and_seed():
    records = [{"amplify": p, "seed": s, "H_before": 5.0, "H_after": 5.0 + d} for p, ds in ((1.0, (0.1, 0.1)), (2.0, (-0.1, 0.05)))
               for s, d in zip((0, 1), ds)]
    g = manipulation_gate(records)
    assert g["grid"] == [1.0, 2.0] and not g["covers_paper_grid"] and g["passed"]
    assert g["per_amplify"]["1"]["counted"] == [0, 1] and g["per_amplify"]["2"]["counted"] == [1]
    assert g["per_amplify"]["2"]["seeds"]["0"] == {"H_before": 5.0, "H_after": 4.9, "passed": False}
    fell = manipulation_gate([{"amplify": 2.0, "seed": 0, "H_before": 8.827, "H_after": 8.708}])
    assert not fell["passed"] and fell["why"] and fell["per_amplify"]["2"]["seeds"]["0"]["passed"] is False
    assert manipulation_gate([{"amplify": p, "seed": 0, "H_before": 1, "H_after": 2} for p in (1, 1.5, 2)])["covers_paper_grid"]


def test_regime_gate_and_the_order_of_failures():
    assert regime_gate(600.0, 16.0)["passed"]
    r = regime_gate(0.76, 0.0107)
    assert not r["passed"] and "0.76 tokens per parameter < 300" in r["why"] and "Σ lr·wd 0.0107 < 5" in r["why"]
    failed = {"passed": False, "why": "k"}
    assert blocked({"knowledge": failed, "power": {"passed": False, "why": "p"}}) == ("not measurable", "p")  # the design first
    assert blocked({"knowledge": failed, "manipulation": {"passed": False, "why": "m"}}) == ("not measurable", "k")
    assert blocked({"knowledge": not_applicable("-"), "manipulation": {"passed": False, "why": "m"}}) == ("not tested", "m")
    assert blocked({"regime": r, "power": {"passed": False, "why": "p"}})[1] == r["why"]
    assert blocked({"knowledge": not_applicable("-")}) is None
