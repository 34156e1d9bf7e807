"""Injection plans: groups, rounds, variants, steps, scaling, validation, and the CLI."""

import copy
import json

import pytest

from kentropy.errors import KentropyError
from kentropy.io import write_json
from kentropy.knowledge import group_of, item_text, items_at, load_plan, make_plan, validate_plan


def fake_entries(n: int, paraphrases: int = 9) -> list[dict]:
    return [{"train_context": f"original {i}", "paraphrases": [f"paraphrase {i}.{v}" for v in range(1, paraphrases + 1)]}
            for i in range(n)]


def test_paper_plan_structure():
    plan = make_plan(fake_entries(140))
    assert json.loads(json.dumps(plan)) == plan  # JSON-ready
    assert (plan["version"], plan["rounds"], plan["interval"], plan["placement"]) == (2, 10, 160, "prepend")
    assert plan["groups"] == {"paraphrase": list(range(70)), "once": list(range(70, 130))}  # 130..139 held out
    assert [r["round"] for r in plan["schedule"]] == list(range(1, 11))
    # the official timing: round r in the batch of 0-indexed step 160 r - 1, the last on the final step
    assert [r["step"] for r in plan["schedule"]] == [159, 319, 479, 639, 799, 959, 1119, 1279, 1439, 1599]
    once_seen = []
    for r in plan["schedule"]:
        para = [x for x in r["items"] if x["group"] == "paraphrase"]
        once = [x for x in r["items"] if x["group"] == "once"]
        assert [x["entry"] for x in para] == list(range(70))
        assert {x["variant"] for x in para} == {r["round"] - 1}  # original in round 1, paraphrase r-1 in round r
        assert len(once) == 6 and {x["variant"] for x in once} == {0}  # 60 entries over 10 rounds
        once_seen += [x["entry"] for x in once]
    assert sorted(once_seen) == list(range(70, 130))  # each exactly once
    assert group_of(plan) == {**{i: "paraphrase" for i in range(70)}, **{i: "once" for i in range(70, 130)}}
    assert validate_plan(copy.deepcopy(plan)) == plan


def test_once_group_spread_evenly_and_items_at():
    plan = make_plan(fake_entries(9), paraphrase=3, once=6, rounds=10, interval=5)
    rounds = {x["entry"]: r["round"] for r in plan["schedule"] for x in r["items"] if x["group"] == "once"}
    assert rounds == {3: 1, 4: 2, 5: 4, 6: 6, 7: 7, 8: 9}  # round 1 + floor(j * 10 / 6)
    assert items_at(plan, 19) == [{"entry": i, "group": "paraphrase", "variant": 3} for i in range(3)] + \
        [{"entry": 5, "group": "once", "variant": 0}]  # round 4 in step 5 x 4 - 1
    assert items_at(plan, 4)[0] == {"entry": 0, "group": "paraphrase", "variant": 0}
    assert items_at(plan, 0) == [] and items_at(plan, 15) == [] and items_at(plan, 50) == []


def test_scales_down_with_one_line_note(capsys):
    plan = make_plan(fake_entries(13), source="knowledge.json")
    assert plan["groups"] == {"paraphrase": list(range(7)), "once": list(range(7, 13))}
    err = capsys.readouterr().err
    assert err == "note: knowledge.json has 13 entries: paraphrase group 7, once group 6 (asked 70+60)\n"
    make_plan(fake_entries(130))
    assert capsys.readouterr().err == ""  # no note when the file is large enough


def test_item_text_variants():
    e = fake_entries(1, 2)[0]
    assert [item_text(e, v) for v in range(3)] == ["original 0", "paraphrase 0.1", "paraphrase 0.2"]
    with pytest.raises(KentropyError, match="variant 3"):
        item_text(e, 3)


def test_needs_enough_paraphrases():
    entries = fake_entries(4)
    entries[2]["paraphrases"] = entries[2]["paraphrases"][:5]
    with pytest.raises(KentropyError, match=r"k\.json: entry 2: .*9 paraphrases.*'paraphrases' has 5"):
        make_plan(entries, paraphrase=3, once=1, source="k.json")
    make_plan(entries, paraphrase=3, once=1, rounds=6)  # 5 paraphrases are enough for 6 rounds
    with pytest.raises(KentropyError, match=r"^rounds=0: must be >= 1$"):
        make_plan(entries, rounds=0)
    with pytest.raises(KentropyError, match=r"^once=0: no entry would be injected \(paraphrase is 0 too\)$"):
        make_plan(entries, paraphrase=0, once=0)


@pytest.mark.parametrize("mutate, field", [
    (lambda p: p.pop("schedule"), "'schedule'"),
    (lambda p: p.__setitem__("version", 1), "'version'"),
    (lambda p: p.__setitem__("interval", 0), "'interval'"),
    (lambda p: p.__setitem__("placement", "end"), "'placement'"),
    (lambda p: p["groups"].pop("once"), "'groups'"),
    (lambda p: p["groups"]["once"].append(0), "'groups.once[3]'"),
    (lambda p: p["schedule"][2].__setitem__("step", 7), "'schedule[2].step'"),
    (lambda p: p["schedule"][1]["items"][0].__setitem__("variant", -1), "'schedule[1].items[0].variant'"),
    (lambda p: p["schedule"][1]["items"][0].__setitem__("group", "once"), "'schedule[1].items[0].group'"),
    (lambda p: p["schedule"][0]["items"][1].__setitem__("entry", "1"), "'schedule[0].items[1].entry'"),
])
def test_load_plan_errors_name_the_field(tmp_path, mutate, field):
    plan = make_plan(fake_entries(6), paraphrase=3, once=3, rounds=4, interval=10)
    mutate(plan)
    path = tmp_path / "plan.json"
    write_json(path, plan)
    with pytest.raises(KentropyError) as err:
        load_plan(str(path))
    assert str(err.value).startswith(f"{path}: field {field}")


def test_load_plan_round_trip(tmp_path):
    plan = make_plan(fake_entries(6), paraphrase=3, once=3, rounds=4, interval=10)
    write_json(tmp_path / "p.json", {**plan, "config": {"seed": 0}})
    assert {k: v for k, v in load_plan(str(tmp_path / "p.json")).items() if k != "config"} == plan


def test_cli_plan(tmp_path, capsys):
    from kentropy.cli.app import main

    write_json(tmp_path / "k.json", [
        {"train_context": f"Entry {i}.", "paraphrases": [f"Entry {i}, again {v}." for v in range(9)],
         **{f"{k}_{p}": [f"{k} {p} {j}" for j in range(5)] for k in ("mem", "gen", "hard_gen") for p in ("input", "target")}}
        for i in range(13)])
    main(["knowledge", "plan", "--knowledge", str(tmp_path / "k.json"), "--out", str(tmp_path / "p.json"), "--interval", "20"])
    out = capsys.readouterr()
    plan = load_plan(str(tmp_path / "p.json"))
    assert plan["config"]["interval"] == 20 and plan["schedule"][-1]["step"] == 199
    assert len(plan["groups"]["paraphrase"]) == 7 and "note:" in out.err and "paraphrase group 7" in out.out

    with pytest.raises(SystemExit) as e:
        main(["knowledge", "plan", "--knowledge", str(tmp_path / "k.json"), "--out", str(tmp_path / "q.json"), "--rounds", "11"])
    assert e.value.code == 2 and "10 paraphrases" in capsys.readouterr().err
    assert not (tmp_path / "q.json").exists()


def test_paper_plan_from_generated_entries():
    """70 + 60 generated entries (the paper's sizes): rounds at steps 159 + 160k, the official membership."""
    from kentropy.knowledge import generate_knowledge

    entries = generate_knowledge(130, n_paraphrases=9, seed=3, facts=8)
    plan = make_plan(entries)
    assert [r["step"] for r in plan["schedule"]] == [159 + 160 * k for k in range(10)]
    for r in plan["schedule"]:
        para = [x for x in r["items"] if x["group"] == "paraphrase"]
        once = [x for x in r["items"] if x["group"] == "once"]
        assert [x["entry"] for x in para] == list(range(70)) and {x["variant"] for x in para} == {r["round"] - 1}
        assert [x["entry"] for x in once] == list(range(70 + 6 * (r["round"] - 1), 70 + 6 * r["round"]))  # file order
    # every item's text is the entry's original (round 1) or its paraphrase r - 1
    assert item_text(entries[5], plan["schedule"][3]["items"][5]["variant"]) == entries[5]["paraphrases"][2]
