"""The lab's comparison of plasticity interventions: its config section, the paired test, the verdicts and
the report, and (slow) a smoke lab that trains every method."""

import json
import math
from importlib import resources

import pytest
import yaml

from kentropy.errors import KentropyError
from kentropy.lab.config import InterventionsConfig, config_from_yaml, load_preset
from kentropy.lab.labdir import LabDir
from kentropy.lab.judge.verdicts import DID_NOT_HOLD, HELD, INCONCLUSIVE, NOT_MEASURABLE, NOT_TESTED
from kentropy.lab.report.interventions import interventions_section
from kentropy.lab.studies.interventions import ALGORITHM_1, METHODS, NONE, check, compare, paired, training_options


def smoke(interventions: dict | None = None, **lab) -> str:
    data = yaml.safe_load((resources.files("kentropy") / "presets" / "lab-smoke.yaml").read_text())
    data["lab"].update(lab)
    if interventions is not None:
        data["interventions"] = interventions
    return yaml.safe_dump(data)


def test_section_parses_once_into_its_typed_config():
    cfg = config_from_yaml(smoke({"recycle_every": 3}), "s.yaml")
    assert isinstance(cfg.interventions, InterventionsConfig) and cfg.interventions.recycle_every == 3
    assert cfg.interventions.redo_threshold == 0.1 and cfg.interventions.shrink == 0.6 and cfg.interventions.replay_fraction == 0.25
    assert config_from_yaml(smoke(), "s.yaml").interventions is None
    iv = load_preset("interventions")
    assert iv.interventions is not None and iv.interventions.recycle_every < iv.continual_steps
    assert len(iv.pretrain_seeds) >= 3 and iv.seeds == [0]  # the unit is the pretraining seed
    assert load_preset("quick").interventions is None  # `make demo` stays as it was


@pytest.mark.parametrize("section, message", [
    ({"tau": 0.1}, "interventions: unknown key(s) tau"),
    ({"redo_threshold": 1.0}, "redo_threshold must be in [0, 1)"),
    ({"shrink": 0.0}, "shrink must be in (0, 1]"),
    ({"perturb": -0.1}, "perturb must be a finite number >= 0"),
    ({"replay_fraction": 0.5}, "leaves fewer than the 5 injected rows of continual_batch 8"),  # 4 replay + 5 injected > 8
    ({"recycle_every": 10}, "recycle_every must be in [1, continual_steps 10)"),
    ({"amplify": 3.0}, "amplify 3.0 must be one of the lab's resuscitate_amplify"),
])
def test_bad_section_names_the_field(section, message):
    with pytest.raises(KentropyError, match="s.yaml: interventions") as e:
        config_from_yaml(smoke(section), "s.yaml")
    assert message in str(e.value)


def test_paired_t_test_by_hand():
    # d = (0.1, 0.2, 0.3): mean 0.2, sd 0.1, se 0.1/√3, t = 2√3, df = 2; for df = 2, P(T > t) = (1 − t/√(t² + 2)) / 2
    d = paired([1.1, 2.2, 3.3], [1.0, 2.0, 3.0])
    t = 0.2 / (0.1 / math.sqrt(3))
    p = 1 - t / math.sqrt(t * t + 2)
    assert d["mean"] == pytest.approx(0.2) and d["p"] == pytest.approx(p) and d["p"] == pytest.approx(0.0741799, abs=1e-6)
    half = 4.302652729749464 * 0.1 / math.sqrt(3)  # t_{0.975, 2}
    assert d["ci"] == pytest.approx([0.2 - half, 0.2 + half])
    one = paired([2.0], [1.0])
    assert one["mean"] == 1.0 and one["ci"] is None and one["p"] is None


def test_each_method_is_checked_against_what_it_targets():
    edit = {"before": 3.0, "after": 3.2, "error": None, "params": {}}
    assert check(ALGORITHM_1, edit, [])["passed"] and check("ReDo", dict(edit, after=2.9), [])["why"] == "the edit did not raise the measured H"
    assert not check("ReDo", dict(edit, after=None, error="τ selects no neuron"), [])["passed"]
    recycling = {"recycle_every": 10, "recycled": [{"neurons": 3}, {"neurons": 0}]}
    assert check("continual ReDo", None, [{"plasticity": recycling}])["recycled"] == [3]
    assert not check("continual ReDo", None, [{"plasticity": dict(recycling, recycled=[])}])["passed"]
    assert check("rehearsal", None, [{"plasticity": None}]) == {"applies": False, "passed": True,
                                                                  "why": "rehearsal moves nothing measured before its outcome"}


KNOWS = {"passed": True, "why": None}
NO_KNOWLEDGE = {"passed": False, "why": "no knowledge to forget: D before continual learning at the floor"}


def seeds(A, F, P, D, manipulation=None):
    """Per pretraining seed the method's means over its continual runs."""
    m = manipulation or [{"applies": False, "passed": True, "why": "-"}] * len(A)
    return [{"seed": s, "A": a, "F": f, "P_after": p, "D_after": d, "knowledge_entropy_final": 1.0, "manipulation": c}
            for s, (a, f, p, d, c) in enumerate(zip(A, F, P, D, m))]


def raised(*ok):
    return [{"applies": True, "passed": x, "why": None if x else "the edit did not raise the measured H"} for x in ok]


def methods_fixture(redo_raised=True):
    return {
        NONE: seeds([10, 11, 12], [5, 5, 5], [-3.0, -3.1, -2.9], [0.40, 0.41, 0.39]),
        ALGORITHM_1: seeds([11, 12, 13.5], [5, 6, 5], [-2.9, -3.0, -2.8], [0.40, 0.41, 0.39], raised(True, True, True)),
        "ReDo": seeds([20, 21, 22.5], [4, 4, 4.5], [-2.0, -2.05, -1.9], [0.42, 0.43, 0.41], raised(True, redo_raised, True)),
        # the damaging edit: A up and F down against its own lowered start, while P and D after continual learning fall
        "shrink-perturb": seeds([30, 31, 32.2], [1, 1.2, 0.9], [-4.0, -4.2, -4.1], [0.30, 0.31, 0.28], raised(True, True, True)),
        "rehearsal": seeds([9, 11, 12], [1, 2, 1], [-3.0, -3.1, -2.9], [0.45, 0.47, 0.45]),
        "HFT": seeds([10, 12, 11], [5, 6, 4], [-3.0, -3.1, -2.9], [0.40, 0.41, 0.39]),
        "continual ReDo": seeds([10, 11, 12], [5, 5, 5], [-3.0, -3.1, -2.9], [0.40, 0.41, 0.39], raised(False, False, False)),
    }


def test_compare_holm_across_methods_and_the_gates():
    out = compare(methods_fixture(), KNOWS)
    rows = out["methods"]
    assert set(rows) == set(METHODS)
    assert rows["ReDo"]["A"]["mean"] == pytest.approx(21.1666667) and rows["ReDo"]["A"]["lo"] < 21.1666667 < rows["ReDo"]["A"]["hi"]
    d = rows["ReDo"]["vs_none"]["A"]
    assert d["differences"] == pytest.approx([10, 10, 10.5])
    # Holm over the methods judged against none (continual ReDo recycled nothing: not judged): adjusted >= raw, <= m x raw
    family = [n for n in METHODS[1:] if rows[n]["manipulation"]["passed"]]
    assert "continual ReDo" not in family and len(family) == 5
    ranked = sorted(rows[n]["vs_none"]["A"]["p"] for n in family).index(d["p"])
    assert d["p_holm"] >= d["p"] and d["p_holm"] <= (5 - ranked) * d["p"] + 1e-12
    assert d["verdict"] == HELD and rows["ReDo"]["vs_none"]["P_after"]["verdict"] == HELD
    assert rows["ReDo"]["vs_none"]["acquisition"] == HELD and "ReDo" in out["beat"]["vs_none"]["acquisition"]
    assert "ReDo" in out["beat"]["vs_algorithm_1"]["acquisition"]
    assert rows["rehearsal"]["vs_none"]["retention"] == HELD and out["beat"]["vs_none"]["retention"] == ["rehearsal"]
    assert rows["continual ReDo"]["vs_none"]["A"] == {"verdict": NOT_TESTED}  # recycled nothing: not judged, no p
    assert ALGORITHM_1 not in rows[ALGORITHM_1].get("vs_algorithm_1", {})  # no method is compared with itself
    assert "vs_none" not in rows[NONE]
    # an edit that lowered H in a seed counts in the others only
    out = compare(methods_fixture(redo_raised=False), KNOWS)
    r = out["methods"]["ReDo"]
    assert r["counted_seeds"] == [0, 2] and r["vs_none"]["A"]["differences"] == pytest.approx([10, 10.5])
    assert r["manipulation"]["per_seed"]["1"]["passed"] is False and r["A"]["n"] == 2


def test_an_edit_that_lowers_p_and_d_is_not_called_a_gain():
    rows = compare(methods_fixture(), KNOWS)["methods"]
    sp = rows["shrink-perturb"]["vs_none"]
    assert sp["A"]["verdict"] == HELD and sp["F"]["verdict"] == HELD  # on A and F alone it would read as a gain
    assert sp["P_after"]["verdict"] == DID_NOT_HOLD and sp["D_after"]["verdict"] == DID_NOT_HOLD
    assert sp["acquisition"] == sp["retention"] == DID_NOT_HOLD


def test_retention_needs_knowledge_to_forget():
    rows = compare(methods_fixture(), NO_KNOWLEDGE)["methods"]
    r = rows["rehearsal"]["vs_none"]
    assert r["F"]["verdict"] == r["D_after"]["verdict"] == r["retention"] == NOT_MEASURABLE
    assert rows["ReDo"]["vs_none"]["acquisition"] == HELD  # acquisition needs no prior knowledge
    assert rows["HFT"]["vs_none"]["acquisition"] == INCONCLUSIVE


def test_rehearsal_replays_the_given_stream_only():
    opts = training_options(InterventionsConfig(replay_fraction=0.25, recycle_every=5, redo_threshold=0.05), "/lab/pretrain.txt")
    assert opts == {"rehearsal": {"replay": "/lab/pretrain.txt", "replay_fraction": 0.25}, "HFT": {"freeze_half": True},
                    "continual ReDo": {"recycle_every": 5, "threshold": 0.05}}


def test_section_says_which_methods_gained():
    fixture = methods_fixture()
    judged = compare(fixture, KNOWS)
    methods = [{"method": n, "params": {}, "knowledge_entropy_start": [3.0] * 3, "knowledge_entropy_before_edit": [None] * 3,
                "knowledge_entropy_after_edit": [3.1 if n == "ReDo" else None] * 3, "knowledge_entropy_final": [1.0] * 3,
                "recycled_neurons": [[None]] * 3, **judged["methods"][n]} for n in fixture]
    knowledge = {"passed": True, "why": None}
    result = {"params": InterventionsConfig().__dict__, "algorithm_1": {"ratio": 0.5}, "seeds": [0], "alpha": 0.05,
              "decay_arms_note": "no arm of this lab's decay study has a verdict that says H fell",
              "starts": [{"name": "core model", "seeds": [0, 1, 2], "step": 40, "paths": ["-"] * 3, "knowledge_entropy": [3.0] * 3,
                          "knowledge": knowledge, "methods": methods, "beat": judged["beat"]}]}
    md = interventions_section(result)
    assert "## Plasticity interventions" in md and "- Gained over Algorithm 1: in acquisition ReDo" in md
    assert "- Gained over no intervention: in acquisition (A and P after) ReDo; in retention (F and D after) rehearsal." in md
    assert "| ReDo | H after the edit 3.100; seed 0: passed" in md and "H fell" in md
    assert "Not tested (the manipulation passed in no pretraining seed" in md and "continual ReDo" in md


def fake_decay_lab(root, verdicts: dict[str, str]):
    """A finished decay-study lab directory: per arm a results.json entry and, per seed, a pretraining stage whose final
    checkpoint (STAGE/run/checkpoints/step-N) starts the interventions."""
    arms = []
    for k, (name, v) in enumerate(verdicts.items()):
        paths = []
        for seed in (3, 4):
            stage = root / "stages" / f"decay-arm{k}-seed{seed}-pretrain-abc{k}"
            final = stage / "run" / "checkpoints" / "step-000040"
            final.mkdir(parents=True)
            ckpts = [{"step": 0, "path": str(stage / "step-000000")}, {"step": 40, "path": str(final)}]
            (stage / "result.json").write_text(json.dumps({"checkpoints": ckpts, "steps": 40}))
            paths.append([c["path"] for c in ckpts])
        arms.append({"name": name, "verdict": v, "seeds": [{"seed": 3}, {"seed": 4}], "checkpoints": paths})
    (root / "results.json").write_text(json.dumps({"decay_study": {"arms": arms}}))


def test_decayed_arms_of_a_finished_decay_lab(tmp_path):
    """--decay-lab: every seed of every arm whose verdict says H fell starts the methods from its final checkpoint, and its
    pretraining stage is the one that saved it; the others do not."""
    from types import SimpleNamespace

    from kentropy.lab.studies.interventions import decayed_arms

    fake_decay_lab(tmp_path, {"reference": "decayed", "width / 2": "no decay", "GELU": "decayed, at least the SESOI"})
    cfg = load_preset("interventions")
    cfg.interventions.decay_lab = str(tmp_path)
    starts, note = decayed_arms(SimpleNamespace(run=SimpleNamespace(cfg=cfg)))
    assert note is None and [(s.name, s.seed) for s in starts] == [("decay arm reference", 3), ("decay arm reference", 4),
                                                                   ("decay arm GELU", 3), ("decay arm GELU", 4)]
    ref = starts[1]
    stage = tmp_path / "stages" / "decay-arm0-seed4-pretrain-abc0"
    assert ref.path == str(stage / "run" / "checkpoints" / "step-000040") and ref.step == 40 and ref.prefix == "decay-reference-seed4-"
    assert ref.pre.dir == stage and ref.pre.hash == stage.name and ref.hash == f"{stage.name}/40"
    fake_decay_lab(tmp_path / "flat", {"reference": "no decay"})
    cfg.interventions.decay_lab = str(tmp_path / "flat")
    starts, note = decayed_arms(SimpleNamespace(run=SimpleNamespace(cfg=cfg)))
    assert starts == [] and "says H fell" in note and str(tmp_path / "flat") in note


def test_decay_lab_is_checked_before_any_stage(tmp_path):
    from kentropy.lab.pipeline import LabRunConfig, run_lab_command

    with pytest.raises(KentropyError, match=r"--decay-lab .*: cannot read .*results.json"):
        run_lab_command(LabRunConfig(out=str(tmp_path / "out"), preset="interventions", decay_lab=str(tmp_path / "nowhere")))
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "results.json").write_text(json.dumps({"findings": {}}))
    with pytest.raises(KentropyError, match="holds no decay study"):
        run_lab_command(LabRunConfig(out=str(tmp_path / "out"), preset="interventions", decay_lab=str(tmp_path / "core")))
    fake_decay_lab(tmp_path / "decay", {"reference": "decayed"})
    with pytest.raises(KentropyError, match="--decay-lab: preset quick compares no interventions"):
        run_lab_command(LabRunConfig(out=str(tmp_path / "out"), preset="quick", decay_lab=str(tmp_path / "decay")))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_smoke_lab_trains_every_method(tmp_path):
    from kentropy.knowledge import load_knowledge
    from kentropy.lab.pipeline import run_lab

    cfg = config_from_yaml(smoke({"recycle_every": 3}, seeds=[0], circuits=False, continual_at=[1.0], resuscitate_amplify=[2.0]),
                          "smoke-iv.yaml")
    out = tmp_path / "lab"
    res = run_lab(cfg, str(out), "cpu", "smoke-iv")["interventions"]
    assert res["decay_arms_note"] and len(res["starts"]) == 1 and res["seeds"] == [0]
    start = res["starts"][0]
    assert start["seeds"] == [0, 1] and [m["method"] for m in start["methods"]] == list(METHODS)  # every pretraining seed
    assert set(start["knowledge"]) >= {"whole", "head", "passed"} and len(start["knowledge"]["whole"]) == 2
    for m in start["methods"]:
        assert {"knowledge_entropy_start", "knowledge_entropy_after_edit", "knowledge_entropy_final", "A", "F", "P_after", "D_after",
                "manipulation", "counted_seeds", "gates"} <= set(m)
        assert m["knowledge_entropy_start"] == start["knowledge_entropy"] and len(m["knowledge_entropy_final"]) == 2
        if m["method"] != NONE:
            assert {"A", "F", "P_after", "D_after", "acquisition", "retention"} <= set(m["vs_none"])
        assert m["A"]["n"] == len(m["counted_seeds"])
    by_name = {m["method"]: m for m in start["methods"]}
    for name in (ALGORITHM_1, "ReDo", "shrink-perturb"):  # the check is the measured one, per pretraining seed
        m = by_name[name]
        for k, (before, after) in enumerate(zip(m["knowledge_entropy_before_edit"], m["knowledge_entropy_after_edit"])):
            if after is not None:
                assert m["manipulation"]["per_seed"][str(start["seeds"][k])]["passed"] == (after > before)
                assert before == pytest.approx(start["knowledge_entropy"][k], rel=1e-4)  # the same documents
    # the baseline and Algorithm 1 are the core's own runs (cached, not trained twice)
    results = json.loads((out / "results.json").read_text())
    assert results["interventions"] == json.loads(json.dumps(LabDir(out).stored(res)))  # stored with paths relative to the lab
    for seed in (0, 1):
        assert len(list(out.glob(f"stages/continual-pre{seed}-step*-seed0-*"))) == 1
        assert len(list(out.glob(f"stages/continual-pre{seed}-resuscitated-P2-seed0-*"))) == 1
    # rehearsal: the replayed rows are the world's pretraining stream, which holds none of the injected passages
    run = json.loads(next(out.glob("stages/continual-pre0-rehearsal-seed0-*/result.json")).read_text())
    pretrain = json.loads(next(out.glob("stages/corpora-*/result.json")).read_text())["pretrain"]
    assert run["summary"]["config"]["replay"] in [p["path"] for p in pretrain.values()] and run["summary"]["config"]["replay_fraction"] == 0.25
    replay_text = (out / run["summary"]["config"]["replay"]).read_text(encoding="utf-8")  # stored relative to the lab
    world = json.loads(next(out.glob("stages/world-*/result.json")).read_text())
    entries = load_knowledge(str(out / world["knowledge"]))
    assert entries and not any(e["train_context"] in replay_text for e in entries)
    assert json.loads(next(out.glob("stages/continual-pre0-hft-seed0-*/result.json")).read_text())["summary"]["config"]["freeze_half"]
    assert all(isinstance(n, int) for seed in by_name["continual ReDo"]["recycled_neurons"] for n in seed)
    assert by_name[NONE]["recycled_neurons"] == [[None], [None]]
    report = (out / "report.md").read_text()
    assert "## Plasticity interventions" in report and "Gained over Algorithm 1" in report
