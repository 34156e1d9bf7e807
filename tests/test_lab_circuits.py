"""The lab's circuits stage on a tiny fake lab (world, tokenizer, three Llama checkpoints), its per-run statistics and
their judgement over pretraining seeds."""

import itertools
import json
import math

import pytest
import torch
import transformers as T

from kentropy.errors import KentropyError
from kentropy.io import write_json
from kentropy.knowledge import generate_knowledge
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import LabConfig
from kentropy.lab.judge import circuits as JC
from kentropy.lab.judge.verdicts import DID_NOT_HOLD, HELD, INCONCLUSIVE, NOT_MEASURABLE
from kentropy.lab.report.circuits import circuits_section
from kentropy.lab.stages import circuits as CS
from kentropy.lab.text.render import stream_documents
from kentropy.lab.text.world import build_world
from kentropy.lab.text.bpe import train_bpe

STEPS = (0, 5, 10)
CFG = LabConfig(entities=120, circuit_top_n=20, circuit_examples=4)
SUMMARY = {"P_before": -5.0, "P_after": -3.0}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A world of 120 entities, 8 fictional entries (4 leave no aligned pair under this tokenizer), 3 checkpoints."""
    root = tmp_path_factory.mktemp("lab")
    world = build_world(CFG.entities, CFG.world_seed)
    entries = generate_knowledge(8, n_paraphrases=2, seed=0, avoid=world.vocabulary())
    write_json(root / "knowledge.json", entries)
    docs = list(itertools.islice(stream_documents(world, seed=1), 300)) + [e["train_context"] for e in entries]
    tok = train_bpe(docs, vocab_size=400)
    tok.save_pretrained(root / "tokenizer")
    config = T.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=4, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(config)
    dirs = []
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
        for k, step in enumerate(STEPS):
            if k:  # a "training step": perturbed weights
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            d = root / "run" / "checkpoints" / f"step-{step:06d}"
            model.save_pretrained(d)
            tok.save_pretrained(d)
            dirs.append(str(d))
    base = {"start": dirs[0], "checkpoints": dirs[1:], "summary": SUMMARY, "probe_curve": [[5, -4.0], [10, -3.0]]}
    world_done = Done({"knowledge": str(root / "knowledge.json")}, root, "world0")
    tok_done = Done({"path": str(root / "tokenizer")}, root, "tok0")
    stages = Stages(root / "out")
    done = CS.circuits_stage(stages, CFG, base, world_done, tok_done, "cpu")
    return {"root": root, "done": done, "stages": stages, "args": (CFG, base, world_done, tok_done, "cpu"),
            "world": world, "entries": entries, "tok": tok}


def test_result_structure(lab):
    r = lab["done"].result
    assert r["config"]["top_n"] == 20 and r["config"]["examples"] == 4 and r["config"]["ig_steps"] == 5
    assert r["layers"] == 2
    assert [c["label"] for c in r["checkpoints"]] == ["start", "step-000005", "final"]
    assert [c["step"] for c in r["checkpoints"]] == list(STEPS)
    assert [t["name"] for t in r["splits"]["related"]["tasks"]] == [f"{x}/related" for x in r["splits"]["related"]["relations"]]
    assert len(r["splits"]["related"]["relations"]) == CS.RELATED_RELATIONS
    assert [t["name"] for t in r["splits"]["new"]["tasks"]] == ["knowledge-mem/new"]
    assert all(t["examples"] <= 4 for s in r["splits"].values() for t in s["tasks"])
    for c in r["checkpoints"]:
        for split in JC.SPLITS:
            v = c["splits"][split]
            assert v["tasks"] == len(r["splits"][split]["tasks"]) and v["examples"] == sum(t["examples"] for t in v["per_task"])
            assert math.isfinite(v["faithfulness"])
            assert v["faithfulness"] == pytest.approx((v["metric_circuit"] - v["metric_corrupted"])
                                                      / (v["metric_clean"] - v["metric_corrupted"]))
            assert 0 <= v["hit_at_10"] <= 1 and 0 <= v["hit_at_10_clean"] <= 1
            assert len(v["layer_shares"]) == 3 and sum(v["layer_shares"]) == pytest.approx(1.0)
            assert v["lower_half_share"] == pytest.approx(v["layer_shares"][0])  # 2 layers: the lower half is layer 0
            assert v["n_edges"] == sum(t["n_edges"] for t in v["per_task"]) and 0 < v["n_edges"] <= 20 * v["tasks"]
            assert all(math.isfinite(t["faithfulness"]) for t in v["per_task"])
    final = r["checkpoints"][-1]["splits"]
    for split in JC.SPLITS:  # the final circuit against itself
        assert final[split]["edge_jaccard"] == 1.0 and final[split]["node_jaccard"] == 1.0
        assert all(t["edge_jaccard"] == 1.0 and t["node_jaccard"] == 1.0 for t in final[split]["per_task"])
        assert r["checkpoints"][0]["splits"][split]["edge_jaccard_prev"] is None


def test_jaccards_match_the_saved_circuits(lab):
    r = lab["done"].result
    records = json.loads(open(r["records"]).read())
    edges = [{name: {f"{e['from']}->{e['to']}" for e in t["edges"]} for name, t in rec["tasks"].items()} for rec in records]
    name = r["splits"]["related"]["tasks"][0]["name"]
    a, b, f = edges[0][name], edges[1][name], edges[2][name]
    per_task = {t["task"]: t for t in r["checkpoints"][1]["splits"]["related"]["per_task"]}
    assert per_task[name]["edge_jaccard"] == pytest.approx(len(b & f) / len(b | f))
    assert per_task[name]["edge_jaccard_prev"] == pytest.approx(len(a & b) / len(a | b))
    assert a != f  # the perturbed checkpoints have different circuits: the Jaccards are not trivially 1


def test_findings_follow_from_the_numbers(lab):
    r = lab["done"].result
    f = r["findings"]
    assert set(f) == {"relevance", "formation_to_optimization", "deep_to_shallow"}
    final = r["checkpoints"][-1]["splits"]
    assert f["relevance"] == {"finding": JC.FINDINGS["relevance"], **f["relevance"]} and "verdict" not in f["relevance"]
    assert f["relevance"]["statistics"] == JC.relevance_numbers(final["related"], final["new"])["statistics"]
    assert f["relevance"]["numbers"]["new_probe_P"] == [-5.0, -3.0]
    lower = [(c["splits"]["related"]["lower_half_share"] + c["splits"]["new"]["lower_half_share"]) / 2 for c in r["checkpoints"]]
    assert f["deep_to_shallow"]["numbers"]["series"] == pytest.approx(lower)
    assert f["deep_to_shallow"]["statistics"]["delta"] == pytest.approx(lower[-1] - lower[0])
    jf = [(c["splits"]["related"]["edge_jaccard"] + c["splits"]["new"]["edge_jaccard"]) / 2 for c in r["checkpoints"]]
    ch = [None] + [1 - (c["splits"]["related"]["edge_jaccard_prev"] + c["splits"]["new"]["edge_jaccard_prev"]) / 2
                   for c in r["checkpoints"][1:]]
    assert f["formation_to_optimization"]["statistics"] == JC.formation_numbers(list(STEPS), jf, ch)["statistics"]
    # one run: no test across pretraining seeds
    judged = JC.judge_runs([f])
    assert all(x["verdict"] == INCONCLUSIVE and x["why"] == JC.ONE_RUN for x in judged.values())


def test_second_call_is_cached(lab, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the cached stage ran again")

    monkeypatch.setattr(CS, "run_circuits", fail)
    again = CS.circuits_stage(lab["stages"], *lab["args"])
    assert again.result == lab["done"].result and again.dir == lab["done"].dir


def test_report_section(lab, tmp_path):
    r = {**lab["done"].result, "seeds": [0], "findings": JC.judge_runs([lab["done"].result["findings"]])}
    md = circuits_section(r, tmp_path / "figures")
    assert md.startswith("## Knowledge circuits (Ou et al. 2025)")
    assert "| step | checkpoint | split |" in md and "| Finding (Ou et al. 2025) | Verdict here | Numbers |" in md
    for c in r["checkpoints"]:
        for split in JC.SPLITS:
            assert f"| {c['step']} | {c['label']} | {split} |" in md
    for f in r["findings"].values():
        assert f"| {f['finding']} | **inconclusive** (one run: no test across pretraining seeds) |" in md
    assert "this study ran 1 run(s), and one run is inconclusive" in md
    for name in ("circuits.png", "circuits_shift.png"):
        assert f"](figures/{name})" in md
        assert (tmp_path / "figures" / name).stat().st_size > 10_000


def test_a_split_without_aligned_subjects_is_skipped_with_its_reason(lab):
    # these 4 fictional entities have no two subjects of equal token length under this tokenizer
    four = generate_knowledge(4, n_paraphrases=2, seed=0, avoid=lab["world"].vocabulary())
    splits = CS.build_tasks(lab["world"], four, lab["tok"], 4, 0, "knowledge.json")
    assert splits["new"]["tasks"] == [] and "no injected fact has a corrupting subject" in splits["new"]["skipped"]
    assert splits["related"]["skipped"] is None and splits["related"]["tasks"]
    bad = [{**e, "mem_input": ["Nothing here"] * len(e["mem_input"])} for e in lab["entries"]]  # no probe names its subject
    splits = CS.build_tasks(lab["world"], bad, lab["tok"], 4, 0, "knowledge.json")
    assert splits["new"]["tasks"] == [] and "knowledge.json: no probe input mentions" in splits["new"]["skipped"]


def test_a_skipped_split_and_a_failed_task_do_not_crash(lab, monkeypatch, tmp_path):
    real = CS.analyze

    def flaky(model, tok, task, **kw):  # one task fails at the middle checkpoint
        if task.name == "knowledge-mem/new" and getattr(model, "_step", None) == 5:
            raise KentropyError("example 0: corrupted prompt does not align")
        return real(model, tok, task, **kw)

    from kentropy.models import loading as models

    real_load = models.load_model

    def load(ckpt, **kw):
        m = real_load(ckpt, **kw)
        m._step = int(str(ckpt.name).rsplit("-", 1)[1])
        return m

    monkeypatch.setattr(CS, "analyze", flaky)
    monkeypatch.setattr(models, "load_model", load)
    cfg, base, world_done, tok_done, dev = lab["args"]
    series = CS.series_of(base)
    conf = {**lab["done"].result["config"], "examples": 2, "top_n": 10, "ig_steps": 1}
    r = CS.run_circuits(conf, series, None, tok_done.result["path"], dev, tmp_path)
    mid = r["checkpoints"][1]["splits"]["new"]
    assert mid["tasks"] == 0 and mid["faithfulness"] is None and mid["per_task"][0]["error"].startswith("example 0")
    assert r["checkpoints"][0]["splits"]["new"]["edge_jaccard"] is not None
    assert r["checkpoints"][2]["splits"]["new"]["edge_jaccard_prev"] is None  # nothing to compare with at step 5
    md = circuits_section({**r, "seeds": [0], "findings": JC.judge_runs([r["findings"]])}, tmp_path / "figures")
    assert "- step-000005, task knowledge-mem/new: not analysed (example 0: corrupted prompt does not align)." in md


# ---- statistics and verdicts on hand-made numbers ------------------------------------------------
def test_relevance_numbers():
    r = JC.relevance_numbers({"hit_at_10": 0.8, "faithfulness": 0.9}, {"hit_at_10": 0.2, "faithfulness": 0.5})
    assert r["statistics"] == pytest.approx({"hit_at_10": 0.6, "faithfulness": 0.4})
    v = JC.relevance_numbers({"hit_at_10": 0.8, "faithfulness": 0.4}, {"hit_at_10": 0.2, "faithfulness": 0.5})
    assert v["numbers"] == {"related_hit_at_10": 0.8, "related_faithfulness": 0.4, "new_hit_at_10": 0.2, "new_faithfulness": 0.5}
    assert JC.relevance_numbers(None, {"hit_at_10": 0.2, "faithfulness": 0.5})["statistics"] is None
    assert JC.relevance_numbers({"hit_at_10": 0.8, "faithfulness": None}, {"hit_at_10": 0.2, "faithfulness": 0.5})["statistics"] is None


def test_formation_numbers():
    steps = [0, 25, 50, 75, 100]
    # changes 0.6, 0.4 early, 0.2, 0.1 late (per 25 steps); Jaccard with final 0.1 -> 0.7
    v = JC.formation_numbers(steps, [0.1, 0.3, 0.5, 0.7, 1.0], [None, 0.6, 0.4, 0.2, 0.1])
    assert v["numbers"]["early_change_per_step"] == pytest.approx((0.6 + 0.4) / 2 / 25)
    assert v["numbers"]["late_change_per_step"] == pytest.approx((0.2 + 0.1) / 2 / 25)
    assert v["statistics"] == pytest.approx({"rise": 0.6, "early_minus_late": (0.5 - 0.15) / 25})
    # per step: 0.3 over 10 steps (0.03) early vs 0.4 over 40 steps (0.01) late, odd count: the middle interval left out
    v = JC.formation_numbers([0, 10, 20, 60], [0.2, 0.4, 0.6, 1.0], [None, 0.3, 0.9, 0.4])
    assert v["numbers"]["late_change_per_step"] == pytest.approx(0.01) and v["statistics"]["early_minus_late"] == pytest.approx(0.02)
    assert JC.formation_numbers([0, 10], [0.2, 1.0], [None, 0.3])["statistics"] is None
    assert JC.formation_numbers([0, 10, 20], [0.2, None, 1.0], [None, 0.3, 0.2])["statistics"] is None
    assert JC.formation_numbers([0, 10, 10], [0.2, 0.4, 1.0], [None, 0.3, 0.2])["statistics"] is None


def test_shallow_numbers_and_lower_half():
    assert JC.shallow_numbers(0.2, 0.35)["statistics"]["delta"] == pytest.approx(0.15)
    assert JC.shallow_numbers(0.35, 0.2)["numbers"]["delta"] == pytest.approx(-0.15)
    assert JC.shallow_numbers(None, 0.35)["statistics"] is None
    assert CS.lower_half_share([0.1, 0.2, 0.3, 0.25, 0.15]) == pytest.approx(0.3)  # 4 layers + logits: layers 0, 1
    assert CS.lower_half_share([0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.1)  # 3 layers: layer 0
    assert CS.lower_half_share([0.4, 0.6]) is None  # 1 layer: no lower half


def run_with(related_minus_new: tuple[float, float], rise: float, early_minus_late: float, delta: float) -> dict:
    """One run's findings with these statistics (numbers and details as the stage gives them)."""
    def rec(stats):
        return {"numbers": {}, "detail": "d", "statistics": stats}
    return {"relevance": rec({"hit_at_10": related_minus_new[0], "faithfulness": related_minus_new[1]}),
            "formation_to_optimization": rec({"rise": rise, "early_minus_late": early_minus_late}),
            "deep_to_shallow": rec({"delta": delta})}


def test_the_findings_are_judged_over_runs():
    # faithfulness from −1.9 to +1.7 over the runs: no single run's sign is a finding
    runs = [run_with((0.3 + 0.01 * k, f), 0.2 + 0.01 * k, 0.01, -0.1 - 0.01 * k) for k, f in enumerate((-1.9, 1.7, 0.4, -0.6, 1.2, 0.1))]
    j = JC.judge_runs(runs)
    assert j["relevance"]["statistics"]["hit_at_10"]["verdict"] == HELD
    assert j["relevance"]["statistics"]["faithfulness"]["verdict"] == INCONCLUSIVE
    assert j["relevance"]["verdict"] == INCONCLUSIVE and j["relevance"]["why"] is None  # the weaker of the two
    assert j["formation_to_optimization"]["verdict"] == HELD  # every run: closer to the final, and faster early
    assert j["deep_to_shallow"]["verdict"] == DID_NOT_HOLD  # significantly the other way
    one = JC.judge_runs(runs[:1])
    assert all(x["verdict"] == INCONCLUSIVE and x["why"] == JC.ONE_RUN for x in one.values())
    missing = dict(runs[0], deep_to_shallow={"numbers": {}, "detail": "no lower-half share", "statistics": None})
    assert JC.judge_runs([missing, runs[1]])["deep_to_shallow"] == {
        "finding": JC.FINDINGS["deep_to_shallow"], "runs": [missing["deep_to_shallow"], runs[1]["deep_to_shallow"]],
        "detail": "no lower-half share | d", "statistics": None, "verdict": NOT_MEASURABLE, "why": "no lower-half share"}


def test_aggregate_pools_tasks_by_examples():
    def rec(n, clean, corr, circ, hit, shares, edges, roles):
        return {"examples": n, "metric_clean": clean, "metric_corrupted": corr, "metric_circuit": circ, "hit_at_10": hit,
                "hit_at_10_clean": 1.0, "node_jaccard": 0.5, "edge_jaccard": 0.25, "edge_jaccard_prev": None,
                "n_edges": edges, "layer_shares": shares, "role_counts": roles, "faithfulness": float("nan")}

    a = rec(4, 3.0, 1.0, 2.0, 0.5, [0.5, 0.5, 0.0], 10, {"mover": 1, "relation": 0, "mixed": 2})
    b = rec(12, 5.0, 1.0, 4.0, 1.0, [0.0, 0.5, 0.5], 30, {"mover": 0, "relation": 1, "mixed": 1})
    v = CS.aggregate([a, b, {"task": "x", "error": "no examples"}], layers=2)
    clean, corr, circ = (4 * 3 + 12 * 5) / 16, 1.0, (4 * 2 + 12 * 4) / 16
    assert v["faithfulness"] == pytest.approx((circ - corr) / (clean - corr))
    assert v["hit_at_10"] == pytest.approx((4 * 0.5 + 12 * 1.0) / 16) and v["examples"] == 16 and v["tasks"] == 2
    assert v["layer_shares"] == pytest.approx([5 / 40, 20 / 40, 15 / 40]) and v["lower_half_share"] == pytest.approx(5 / 40)
    assert v["role_counts"] == {"mover": 1, "relation": 1, "mixed": 3} and v["edge_jaccard_prev"] is None
    assert CS.aggregate([{"task": "x", "error": "e"}], layers=2)["faithfulness"] is None
