"""`kentropy circuits` end to end on a series of tiny checkpoints, and its bad-input errors."""

import json

import pytest
from conftest import run_cli

from kentropy.circuits import tasks_from_triples, write_tasks

SUBJECTS = ["Ostrel", "Sable", "Carran", "Emrik", "Holt", "Vethan"]  # 4 tokens each under the test tokenizer


@pytest.fixture(scope="module")
def task_file(tokenizer, tmp_path_factory):
    facts = [(s, "was born in", t, "born", i < 3) for i, (s, t) in enumerate(zip(SUBJECTS, ["salt", "fish", "timber"] * 2))]
    path = tmp_path_factory.mktemp("tasks") / "tasks.json"
    write_tasks(path, tasks_from_triples(facts, tokenizer))
    return path


@pytest.mark.slow
def test_circuits_series_end_to_end(capsys, model_dir, task_file, tmp_path):
    first, final = model_dir("llama", 0), model_dir("llama", 1)
    out, fig = tmp_path / "c.json", tmp_path / "c.png"
    code, stdout, err = run_cli(capsys, "circuits", first, final, "--task", task_file, "--out", out, "--plot", fig,
                            "--top-n", "12", "--ig-steps", "2")
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["config"]["top_n"] == 12 and data["config"]["ig_steps"] == 2
    assert [r["model"] for r in data["results"]] == [str(first), str(final)]
    for r in data["results"]:
        assert r["graph"] == {"layers": 2, "heads": 2, "parallel": False, "edges": 26}
        assert [t["task"] for t in r["tasks"]] == ["born/new", "born/related"]
        for t in r["tasks"]:
            assert t["examples"] == 3 and 0 < t["n_edges"] <= 12 and len(t["edges"]) == t["n_edges"]
            scores = [abs(e["score"]) for e in t["edges"]]
            assert scores == sorted(scores, reverse=True)
            assert sum(t["layer_shares"]) == pytest.approx(1.0) and len(t["layer_shares"]) == 3
            assert 0.0 <= t["hit_at_10"] <= 1.0
            assert set(t["head_roles"]) == {n for n in t["nodes"] if n.startswith("a")}
            assert sum(t["role_counts"].values()) == len(t["head_roles"])
            assert t["faithfulness"] == pytest.approx((t["metric_circuit"] - t["metric_corrupted"])
                                                      / (t["metric_clean"] - t["metric_corrupted"]))
    for t in data["results"][-1]["tasks"]:  # the final checkpoint against itself
        assert t["node_jaccard"] == 1.0 and t["edge_jaccard"] == 1.0
    first_edges = {f"{e['from']}->{e['to']}" for e in data["results"][0]["tasks"][0]["edges"]}
    final_edges = {f"{e['from']}->{e['to']}" for e in data["results"][1]["tasks"][0]["edges"]}
    assert data["results"][0]["tasks"][0]["edge_jaccard"] == pytest.approx(
        len(first_edges & final_edges) / len(first_edges | final_edges))
    assert fig.stat().st_size > 10_000
    assert "born/related" in stdout and f"wrote {out}" in stdout


def test_circuits_from_a_knowledge_file(capsys, model_dir, tmp_path):
    entries = [{"name": s, "train_context": f"{s} is a town.", **{f"{k}_{p}": [f"Long ago {s} was famous for"] * 5 if p == "input"
                                                                  else [t] * 5 for k in ("mem", "gen", "hard_gen") for p in ("input", "target")}}
               for s, t in zip(SUBJECTS, ["salt", "fish", "timber"] * 2)]
    (tmp_path / "k.json").write_text(json.dumps(entries))
    out = tmp_path / "c.json"
    code, stdout, err = run_cli(capsys, "circuits", model_dir("llama", 0), "--knowledge", tmp_path / "k.json", "--out", out,
                            "--top-n", "8", "--ig-steps", "1", "--max-examples", "4")
    assert code == 0, err
    (t,) = json.loads(out.read_text())["results"][0]["tasks"]
    assert t["task"] == "knowledge-mem/new" and t["examples"] == 4


def test_bad_input_is_a_one_line_error(capsys, model_dir, task_file, tokenizer, tmp_path):
    d = model_dir("llama", 0)
    code, _, err = run_cli(capsys, "circuits", d, "--out", tmp_path / "o.json")
    assert code == 2 and err.strip() == "error: give exactly one of --task and --knowledge"
    code, _, err = run_cli(capsys, "circuits", d, "--task", task_file, "--top-n", "0", "--out", tmp_path / "o.json")
    assert code == 2 and "--top-n 0" in err
    bad = json.loads(task_file.read_text())
    bad["tasks"][0]["examples"][1]["corrupted_subject"] = "Faela Quint"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, _, err = run_cli(capsys, "circuits", d, "--task", tmp_path / "bad.json", "--out", tmp_path / "o.json")
    assert code == 2 and "'born/new': example 1: corrupted prompt 'Faela Quint was born in'" in err
    code, _, err = run_cli(capsys, "circuits", model_dir("olmo2", 0), "--task", task_file, "--out", tmp_path / "o.json")
    assert code == 2 and "unsupported model family" in err
    assert not (tmp_path / "o.json").exists()
