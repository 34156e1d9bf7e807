"""The lab's comparison of plasticity interventions: its config section, the paired test, the verdicts and
the report, and (slow) a smoke lab that trains every method."""

import json
import math
from importlib import resources

import pytest
import yaml

from kentropy.errors import KentropyError
from kentropy.lab.config import InterventionsConfig, config_from_yaml, load_preset
from kentropy.lab.judge.verdicts import DID_NOT_HOLD, DIRECTION_ONLY, HELD, NOT_MEASURED, NOT_TESTED
from kentropy.lab.report.interventions import interventions_section
from kentropy.lab.studies.interventions import ALGORITHM_1, METHODS, NONE, compare, judge, paired, training_options


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
    assert iv.interventions is not None and len(iv.seeds) >= 2 and iv.interventions.recycle_every < iv.continual_steps
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


def test_verdict_wording():
    better_A = {"mean": 1.5}
    assert judge(better_A, "A", 0.01, True) == HELD
    assert judge(better_A, "A", 0.2, True) == DIRECTION_ONLY
    assert judge(better_A, "A", None, True) == DIRECTION_ONLY  # one seed
    assert judge(better_A, "F", 0.01, True) == DID_NOT_HOLD  # more forgetting is worse
    assert judge({"mean": -1.5}, "F", 0.01, True) == HELD
    assert judge(better_A, "A", 0.01, False) == NOT_TESTED  # the edit did not raise H
    assert judge(None, "F", None, True) == NOT_MEASURED


def runs(A, F):
    return [{"seed": s, "A": a, "F": f, "knowledge_entropy_final": 1.0} for s, (a, f) in enumerate(zip(A, F))]


def methods_fixture(redo_raised=True):
    edit = lambda before, after: {"before": before, "after": after, "error": None, "params": {}}  # noqa: E731
    return {
        NONE: {"edit": None, "runs": runs([10, 11, 12], [5, 5, 5])},
        ALGORITHM_1: {"edit": edit(3.0, 3.2), "runs": runs([11, 12, 13.5], [5, 6, 5])},
        "ReDo": {"edit": edit(3.0, 3.1 if redo_raised else 2.9), "runs": runs([20, 21, 22.5], [4, 4, 4.5])},
        "shrink-perturb": {"edit": edit(3.0, 3.3), "runs": runs([10, 11, 12.1], [6, 7, 8])},
        "rehearsal": {"edit": None, "runs": runs([9, 11, 12], [1, 2, 1])},
        "HFT": {"edit": None, "runs": runs([10, 12, 11], [5, 6, 4])},
        "continual ReDo": {"edit": None, "runs": runs([10, 11, 12], [5, 5, 5])},
    }


def test_compare_holm_across_methods_and_the_manipulation_check():
    out = compare(methods_fixture())
    rows = out["methods"]
    assert set(rows) == set(METHODS)
    assert rows["ReDo"]["A"]["mean"] == pytest.approx(21.1666667) and rows["ReDo"]["A"]["lo"] < 21.1666667 < rows["ReDo"]["A"]["hi"]
    d = rows["ReDo"]["vs_none"]["A"]
    assert d["differences"] == pytest.approx([10, 10, 10.5])
    # Holm over the six methods compared with none: the adjusted p is >= the raw one and <= 6 x it
    family = [rows[n]["vs_none"]["A"]["p"] for n in METHODS[1:]]
    ranked = sorted(family).index(d["p"])
    assert d["p_holm"] >= d["p"] and d["p_holm"] <= (6 - ranked) * d["p"] + 1e-12
    assert d["verdict"] == HELD and "ReDo" in out["beat"]["vs_none"]["A"] and "ReDo" in out["beat"]["vs_algorithm_1"]["A"]
    assert rows["shrink-perturb"]["vs_none"]["F"]["verdict"] == DID_NOT_HOLD  # more forgetting
    assert ALGORITHM_1 not in rows[ALGORITHM_1].get("vs_algorithm_1", {})  # no method is compared with itself
    assert "vs_none" not in rows[NONE]
    # an edit that lowered H is not tested, and leaves the family
    out = compare(methods_fixture(redo_raised=False))
    r = out["methods"]["ReDo"]
    assert r["manipulation"] == {"raised_entropy": False, "note": None} and r["vs_none"]["A"]["verdict"] == NOT_TESTED
    assert r["vs_none"]["A"]["p_holm"] is None and "ReDo" not in out["beat"]["vs_none"]["A"]


def test_rehearsal_replays_the_given_stream_only():
    opts = training_options(InterventionsConfig(replay_fraction=0.25, recycle_every=5, redo_threshold=0.05), "/lab/pretrain.txt")
    assert opts == {"rehearsal": {"replay": "/lab/pretrain.txt", "replay_fraction": 0.25}, "HFT": {"freeze_half": True},
                    "continual ReDo": {"recycle_every": 5, "threshold": 0.05}}


def test_section_says_which_methods_beat_algorithm_1():
    judged = compare(methods_fixture())
    methods = [{"method": n, "params": {}, "knowledge_entropy_start": 3.0,
                "knowledge_entropy_after_edit": (m["edit"] or {}).get("after"), "knowledge_entropy_final": [1.0],
                **judged["methods"][n]} for n, m in methods_fixture().items()]
    result = {"params": InterventionsConfig().__dict__, "algorithm_1": {"ratio": 0.5}, "seeds": [0, 1, 2], "alpha": 0.05,
              "decay_arms_note": "no decay-study arm has the verdict 'decayed': none decayed",
              "starts": [{"name": "core model", "step": 40, "path": "-", "knowledge_entropy": 3.0, "methods": methods,
                          "beat": judged["beat"]}]}
    md = interventions_section(result)
    assert "## Plasticity interventions" in md and "- Beat Algorithm 1: on A ReDo" in md
    assert "| ReDo | 3.100 (raised H) |" in md and "none decayed" in md
    assert "p_Holm" in md and md.count("\n| ") == 2 + len(METHODS) - 1


def fake_decay_lab(root, verdicts: dict[str, str]):
    """A finished decay-study lab directory: per arm a results.json entry and a pretraining stage whose final
    checkpoint (STAGE/run/checkpoints/step-N) starts the interventions."""
    arms = []
    for k, (name, v) in enumerate(verdicts.items()):
        stage = root / "stages" / f"decay-arm{k}-seed3-pretrain-abc{k}"
        final = stage / "run" / "checkpoints" / "step-000040"
        final.mkdir(parents=True)
        ckpts = [{"step": 0, "path": str(stage / "step-000000")}, {"step": 40, "path": str(final)}]
        (stage / "result.json").write_text(json.dumps({"checkpoints": ckpts, "steps": 40}))
        arms.append({"name": name, "verdict": v, "seeds": [{"seed": 3}, {"seed": 4}], "checkpoints": [[c["path"] for c in ckpts], []]})
    (root / "results.json").write_text(json.dumps({"decay_study": {"arms": arms}}))


def test_decayed_arms_of_a_finished_decay_lab(tmp_path):
    """--decay-lab: every arm judged `decayed` starts the methods from its first seed's final checkpoint, and its
    pretraining stage is the one that saved it; the others do not."""
    from types import SimpleNamespace

    from kentropy.lab.studies.interventions import decayed_arms

    fake_decay_lab(tmp_path, {"reference": "decayed", "width / 2": "no decay", "GELU": "decayed"})
    cfg = load_preset("interventions")
    cfg.interventions.decay_lab = str(tmp_path)
    starts, note = decayed_arms(SimpleNamespace(run=SimpleNamespace(cfg=cfg)))
    assert note is None and [s.name for s in starts] == ["decay arm reference", "decay arm GELU"]
    ref = starts[0]
    stage = tmp_path / "stages" / "decay-arm0-seed3-pretrain-abc0"
    assert ref.path == str(stage / "run" / "checkpoints" / "step-000040") and ref.step == 40 and ref.prefix == "decay-reference-"
    assert ref.pre.dir == stage and ref.pre.hash == stage.name and ref.hash == f"{stage.name}/40"
    fake_decay_lab(tmp_path / "flat", {"reference": "no decay"})
    cfg.interventions.decay_lab = str(tmp_path / "flat")
    starts, note = decayed_arms(SimpleNamespace(run=SimpleNamespace(cfg=cfg)))
    assert starts == [] and "none decayed" in note and str(tmp_path / "flat") in note


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

    cfg = config_from_yaml(smoke({"recycle_every": 3}, seeds=[0, 1], circuits=False, continual_at=[1.0], resuscitate_amplify=[2.0]),
                          "smoke-iv.yaml")
    out = tmp_path / "lab"
    res = run_lab(cfg, str(out), "cpu", "smoke-iv")["interventions"]
    assert res["decay_arms_note"] and len(res["starts"]) == 1 and res["seeds"] == [0, 1]
    start = res["starts"][0]
    assert [m["method"] for m in start["methods"]] == list(METHODS)
    for m in start["methods"]:
        assert {"knowledge_entropy_start", "knowledge_entropy_after_edit", "knowledge_entropy_final", "A", "F", "manipulation"} <= set(m)
        assert m["knowledge_entropy_start"] == start["knowledge_entropy"]
        if m["method"] != NONE:
            assert {"A", "F"} <= set(m["vs_none"]) and m["vs_none"]["A"]["verdict"]
        if m["manipulation"] is None or m["knowledge_entropy_after_edit"] is not None:
            assert len(m["knowledge_entropy_final"]) == 2 and m["A"]["n"] == 2
    edits = {m["method"]: m for m in start["methods"] if m["manipulation"] is not None}
    assert set(edits) == {ALGORITHM_1, "ReDo", "shrink-perturb"}
    for m in edits.values():  # the check is the measured one
        if m["knowledge_entropy_after_edit"] is not None:
            assert m["manipulation"]["raised_entropy"] == (m["knowledge_entropy_after_edit"] > m["knowledge_entropy_before_edit"])
            assert m["knowledge_entropy_before_edit"] == pytest.approx(start["knowledge_entropy"], rel=1e-4)  # the same documents
    # the baseline and Algorithm 1 are the core's own runs (cached, not trained twice)
    results = json.loads((out / "results.json").read_text())
    assert results["interventions"] == json.loads(json.dumps(res))
    # rehearsal: the replayed rows are the world's pretraining stream, which holds none of the injected passages
    run = json.loads(next(out.glob("stages/continual-rehearsal-seed0-*/result.json")).read_text())
    pretrain = json.loads(next(out.glob("stages/corpora-*/result.json")).read_text())["pretrain"]
    assert run["summary"]["config"]["replay"] in [p["path"] for p in pretrain.values()] and run["summary"]["config"]["replay_fraction"] == 0.25
    replay_text = open(run["summary"]["config"]["replay"], encoding="utf-8").read()
    world = json.loads(next(out.glob("stages/world-*/result.json")).read_text())
    entries = load_knowledge(world["knowledge"])
    assert entries and not any(e["train_context"] in replay_text for e in entries)
    assert json.loads(next(out.glob("stages/continual-hft-seed0-*/result.json")).read_text())["summary"]["config"]["freeze_half"]
    by_name = {m["method"]: m for m in start["methods"]}
    assert all(isinstance(n, int) for n in by_name["continual ReDo"]["recycled_neurons"])
    assert by_name[NONE]["recycled_neurons"] == [None, None]
    report = (out / "report.md").read_text()
    assert "## Plasticity interventions" in report and "Beat Algorithm 1" in report
