"""`kentropy circuits` end to end on a series of tiny checkpoints, and its bad-input errors."""

import json
import re

import pytest
import torch
import transformers as T
from conftest import V, run_cli

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
        assert r["graph"] == {"layers": 2, "heads": 2, "parallel": False, "norms": "pre", "qkv_split": False, "edges": 26}
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
    torch.manual_seed(0)
    phi3 = tmp_path / "phi3"  # a family without circuit wiring in the registry
    T.AutoModelForCausalLM.from_config(T.Phi3Config(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                                    num_attention_heads=2, pad_token_id=2)).save_pretrained(phi3)
    tokenizer.save_pretrained(phi3)
    code, _, err = run_cli(capsys, "circuits", phi3, "--task", task_file, "--out", tmp_path / "o.json")
    assert code == 2 and "unsupported model family Phi3ForCausalLM for circuits" in err
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_ou2025_convention_from_the_cli(capsys, model_dir, task_file, tmp_path, family):
    """`--convention ou2025` on a plain and a gated family: logit difference, split q/k/v edges, one BOS, k = 1..m;
    the exact check's fields; flags override the convention."""
    out = tmp_path / "c.json"
    code, stdout, err = run_cli(capsys, "circuits", model_dir(family, 0), "--task", task_file, "--convention", "ou2025",
                                "--out", out, "--top-n", "10", "--ig-steps", "2", "--check-exact", "12")
    assert code == 0, err
    data = json.loads(out.read_text())
    c = data["config"]
    assert (c["convention"], c["metric"], c["qkv"], c["bos"], c["ig_range"]) == ("ou2025", "logit-diff", "split", "always", "1..m")
    (r,) = data["results"]
    assert r["graph"] == {"layers": 2, "heads": 2, "parallel": False, "norms": "pre", "qkv_split": True, "edges": 46}
    for t in r["tasks"]:
        targets = {e["to"] for e in t["edges"]}
        assert targets and all(re.fullmatch(r"a[01]\.h[01]<[qkv]>|m[01]|logits", x) for x in targets)
        assert all("<" not in n for n in t["nodes"])
        ch = t["check_exact"]
        assert ch["edges"] == 12 and ch["of_edges"] == 46 and ch["top_n"] == 3  # round(10 * 12 / 46)
        assert -1 <= ch["spearman"] <= 1 and 0 <= ch["top_overlap"] <= 1
    assert "exact check" in stdout
    code, _, err = run_cli(capsys, "circuits", model_dir(family, 0), "--task", task_file, "--convention", "ou2025",
                           "--qkv", "joint", "--bos", "auto", "--method", "exact", "--out", out, "--top-n", "10")
    assert code == 0, err
    data = json.loads(out.read_text())
    assert (data["config"]["qkv"], data["config"]["metric"], data["config"]["method"]) == ("joint", "logit-diff", "exact")
    assert data["results"][0]["graph"]["edges"] == 26 and data["results"][0]["tasks"][0]["check_exact"] is None


def test_convention_flags_are_checked(capsys, model_dir, task_file, tmp_path, monkeypatch):
    d, o = model_dir("llama", 0), tmp_path / "o.json"
    for args, msg in ((["--convention", "ou"], "--convention ou: choose from kentropy, ou2025"),
                      (["--metric", "prob"], "--metric prob: choose from logit, logit-diff"),
                      (["--qkv", "fused"], "--qkv fused: choose from joint, split"),
                      (["--bos", "twice"], "--bos twice: choose from auto, always, never"),
                      (["--ig-range", "0..m"], "--ig-range 0..m: choose from 1..m, 0..m-1"),
                      (["--method", "acdc"], "--method acdc: choose from eap-ig, exact"),
                      (["--method", "exact", "--check-exact", "3"], "--check-exact: only with --method eap-ig")):
        code, _, err = run_cli(capsys, "circuits", d, "--task", task_file, "--out", o, *args)
        assert code == 2 and err.strip() == f"error: {msg}", err
    import kentropy.circuits.series as S

    monkeypatch.setattr(S, "EXACT_MAX_EDGES", 25)
    code, _, err = run_cli(capsys, "circuits", d, "--task", task_file, "--out", o, "--method", "exact")
    assert code == 2 and "--method exact: this graph has 26 edges, more than 25" in err
    bad = json.loads(task_file.read_text())
    for t in bad["tasks"]:
        for e in t["examples"]:
            e.pop("corrupted_target", None)
            e["corrupted_subject"] = "Alda"  # no example of the task has this subject
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, _, err = run_cli(capsys, "circuits", d, "--task", tmp_path / "bad.json", "--out", o, "--metric", "logit-diff")
    assert code == 2 and "example 0: no corrupted target for 'Alda'" in err
    assert not o.exists()
