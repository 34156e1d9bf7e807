"""Probe scores against a one-probe-at-a-time reference, tokenization edge cases, A, and `kentropy probe`."""

import copy
import importlib
import json
import math

import pytest
import torch
from conftest import tiny_model, run_cli
from tokenizers import processors

from kentropy.errors import KentropyError
from kentropy.io import write_json
from kentropy.evaluation.outcomes import acquisition, acquisition_from
from kentropy.knowledge import (encode_probe, generate_knowledge, make_plan, probe,
                                score_probes)


def reference(model, tok, text, target, ids=None):
    """One probe, unpadded, full logits: mean log-prob of the trailing target tokens.

    The target tokens are those of `" " + target` without a token of the bare space (the
    test tokenizer is byte-level BPE, which splits words at spaces).
    """
    ids = ids if ids is not None else tok(text + " " + target)["input_ids"]
    tail = tok(" " + target, add_special_tokens=False)["input_ids"]
    if tok.decode(tail[:1]) == " ":
        tail = tail[1:]
    assert ids[-len(tail):] == tail
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1).double()
    return sum(logp[t - 1, ids[t]].item() for t in range(len(ids) - len(tail), len(ids))) / len(tail)


@pytest.fixture(scope="module")
def entries():
    return generate_knowledge(3, n_paraphrases=2, seed=4)


@pytest.fixture(scope="module")
def pairs(entries):
    out = [(e[f"{k}_input"][j], e[f"{k}_target"][j]) for e in entries for k in ("mem", "gen", "hard_gen") for j in range(5)]
    return out + [("It is", "x"), ("The oldest town of the region is", "the river town of Velm")]


def with_padding(tok, side, bos=False):
    tok = copy.deepcopy(tok)
    tok.padding_side = side
    if bos:  # a tokenizer that adds <s> (id 0) in front, like Llama's
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tok


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_matches_one_at_a_time(tokenizer, pairs, family, side):
    model = tiny_model(family)
    tok = with_padding(tokenizer, side)
    ref = [reference(model, tok, x, t) for x, t in pairs]
    got = score_probes(model, tok, pairs, batch_size=4)
    assert max(abs(a - b) for a, b in zip(ref, got)) <= 1e-5
    assert len(set(round(s, 3) for s in got)) > len(pairs) // 2  # distinct probes, distinct scores


@pytest.mark.parametrize("side", ["right", "left"])
def test_sdpa_attention_and_bos(tokenizer, pairs, side):
    model = tiny_model("llama", eager=False)
    tok = with_padding(tokenizer, side, bos=True)
    enc = encode_probe(tok, *pairs[0])
    assert enc.ids[0] == 0 and enc.start >= 2  # bos is context, never scored
    ref = [reference(model, tok, x, t) for x, t in pairs]
    got = score_probes(model, tok, pairs, batch_size=5)
    assert max(abs(a - b) for a, b in zip(ref, got)) <= 1e-5


@pytest.mark.parametrize("side", ["right", "left"])
def test_older_logits_to_keep_and_none(tokenizer, pairs, monkeypatch, side):
    model, tok = tiny_model("gpt2"), with_padding(tokenizer, side)
    exact = score_probes(model, tok, pairs, batch_size=8)  # logits_to_keep as a per-row mask
    module = importlib.import_module("kentropy.knowledge.probe")  # the package's `probe` is the function
    monkeypatch.setattr(module, "_masked_logits_to_keep", lambda: False)  # positions only: union of the rows'
    assert score_probes(model, tok, pairs, batch_size=8) == pytest.approx(exact, abs=1e-6)
    monkeypatch.setattr(module, "_accepts", lambda m, name: name != "logits_to_keep")  # all logits
    assert score_probes(model, tok, pairs, batch_size=8) == pytest.approx(exact, abs=1e-6)


def test_target_token_merged_with_space(tokenizer):
    text, target = "The oldest town of the region is", "the river town"
    enc = encode_probe(tokenizer, text, target)
    tokens = tokenizer.convert_ids_to_tokens(enc.ids)
    assert tokens[enc.start] == "Ġthe"  # the space is inside the target's first token: scored
    assert enc.ids[enc.start : enc.end] == tokenizer(" " + target, add_special_tokens=False)["input_ids"]
    assert enc.end - enc.start > 1 and enc.end == len(enc.ids)  # multi-token target at the end

    enc = encode_probe(tokenizer, text, "Velm")
    tokens = tokenizer.convert_ids_to_tokens(enc.ids)
    assert tokens[enc.start - 1] == "Ġ" and tokens[enc.start] == "V"  # a bare-space token is not the target
    assert enc.end - enc.start == len(tokenizer("Velm", add_special_tokens=False)["input_ids"])


def test_long_prefix_near_max_positions(tokenizer):
    model = tiny_model("gpt2")  # 128 positions
    text = " ".join(["The old harbour town was quiet in winter"] * 40)
    target = "the Velmora lighthouse"
    full = tokenizer(text + " " + target)["input_ids"]
    assert len(full) > 128
    enc = encode_probe(tokenizer, text, target, 128)
    assert enc.ids == full[-128:] and enc.end == 128  # cut from the left, target whole
    assert score_probes(model, tokenizer, [(text, target)])[0] == pytest.approx(
        reference(model, tokenizer, text, target, ids=full[-128:]), abs=1e-5)

    bos = with_padding(tokenizer, "left", bos=True)
    enc = encode_probe(bos, text, target, 128)
    assert enc.ids == [0] + full[-127:]  # bos kept in front
    assert score_probes(model, bos, [(text, target), ("Short", target)], batch_size=2)[0] == pytest.approx(
        reference(model, bos, text, target, ids=[0] + full[-127:]), abs=1e-5)

    short = tokenizer("x " * 5 + "y")["input_ids"]
    assert encode_probe(tokenizer, "x " * 5 + "y", "z", len(short) + 2).ids == tokenizer("x " * 5 + "y z")["input_ids"]
    with pytest.raises(KentropyError, match="does not fit in the model's 128 positions"):
        encode_probe(tokenizer, "It is", " ".join(["lighthouse"] * 80), 128)
    entry = generate_knowledge(1, 0, seed=0)[0]
    entry["gen_target"][3] = " ".join(["lighthouse"] * 80)
    with pytest.raises(KentropyError, match=r"^entry 0: gen probe 3: probe target .* does not fit"):
        probe(model, tokenizer, [entry])


def test_probe_result_and_groups(tokenizer, entries):
    model = tiny_model("llama")
    plain = probe(model, tokenizer, entries, batch_size=7)
    assert json.loads(json.dumps(plain)) == plain
    rows = plain["entries"]
    assert [r["index"] for r in rows] == [0, 1, 2] and all(len(r[k]) == 5 for r in rows for k in ("mem", "gen", "hard_gen"))
    assert plain["mem"] == pytest.approx(sum(s for r in rows for s in r["mem"]) / 15)
    assert plain["overall"] == pytest.approx(sum(s for r in rows for k in ("mem", "gen", "hard_gen") for s in r[k]) / 45)
    assert "groups" not in plain

    plan = make_plan(entries, paraphrase=2, once=1, rounds=3, interval=10)
    grouped = probe(model, tokenizer, entries, plan=plan, batch_size=7)
    assert grouped["entries"][0]["mem"] == pytest.approx(rows[0]["mem"], abs=1e-6)
    para = [s for r in rows[:2] for k in ("mem", "gen", "hard_gen") for s in r[k]]
    once = [s for k in ("mem", "gen", "hard_gen") for s in rows[2][k]]
    g = grouped["groups"]
    assert g["paraphrase"]["entries"] == 2 and g["once"]["entries"] == 1
    assert g["paraphrase"]["overall"] == pytest.approx(sum(para) / 30, abs=1e-6)
    assert g["once"]["hard_gen"] == pytest.approx(sum(rows[2]["hard_gen"]) / 5, abs=1e-6)
    # P = entry-count-weighted mean of the group means (docs/definitions.md)
    assert grouped["overall"] == pytest.approx((2 * sum(para) / 30 + 1 * sum(once) / 15) / 3, abs=1e-6)
    assert [r["group"] for r in grouped["entries"]] == ["paraphrase", "paraphrase", "once"]


def test_acquisition():
    assert acquisition(-4.0, -3.0) == 25.0  # (-3 - -4) / 4 * 100
    assert acquisition(-2.0, -3.0) == -50.0
    assert acquisition(2.0, 3.0) == 50.0
    assert math.isnan(acquisition(0.0, -1.0))
    before = {"mem": -4.0, "gen": -5.0, "hard_gen": -8.0, "overall": -5.0,
              "groups": {"paraphrase": {"mem": -4.0, "gen": -4.0, "hard_gen": -4.0, "overall": -4.0}}}
    after = {"mem": -2.0, "gen": -4.0, "hard_gen": -8.0, "overall": -4.5,
             "groups": {"paraphrase": {"mem": -1.0, "gen": -2.0, "hard_gen": -3.0, "overall": -2.0}}}
    a = acquisition_from(before, after)
    assert (a["mem"], a["gen"], a["hard_gen"], a["overall"]) == (50.0, 20.0, 0.0, 10.0)
    assert a["groups"] == {"paraphrase": {"mem": 75.0, "gen": 50.0, "hard_gen": 25.0, "overall": 50.0}}
    assert "groups" not in acquisition_from({k: v for k, v in before.items() if k != "groups"}, after)


def test_bad_model_and_mode(tokenizer, pairs):
    model = tiny_model("llama").train()
    score_probes(model, tokenizer, pairs[:2])
    assert model.training  # the caller's mode is restored
    with pytest.raises(KentropyError, match="causal LM"):
        score_probes(tiny_model("bert"), tokenizer, pairs[:2])
    with pytest.raises(KentropyError, match=r"^batch_size=0: must be >= 1$"):
        score_probes(model, tokenizer, pairs[:2], batch_size=0)


@pytest.mark.slow
def test_cli_end_to_end(model_dir, tokenizer, tmp_path, capsys):
    a, b = model_dir("llama", 0), model_dir("gpt2", 1)
    (tmp_path / "avoid.txt").write_text("Velmora\n\nOskello\n")
    k, p, out = tmp_path / "k.json", tmp_path / "p.json", tmp_path / "probe.json"
    code, stdout, _ = run_cli(capsys, "knowledge", "generate", "--entries", 5, "--paraphrases", 2, "--seed", 3,
                          "--avoid", tmp_path / "avoid.txt", "--out", k)
    assert code == 0 and "5 entries" in stdout
    entries = json.loads(k.read_text())
    assert entries == generate_knowledge(5, 2, seed=3, avoid=["Velmora", "Oskello"])
    assert run_cli(capsys, "knowledge", "plan", "--knowledge", k, "--paraphrase", 3, "--once", 2, "--rounds", 3,
               "--interval", 8, "--out", p)[0] == 0

    code, stdout, err = run_cli(capsys, "probe", a, b, "--knowledge", k, "--plan", p, "--batch-size", 8, "--out", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert [r["model"] for r in data["results"]] == [str(a), str(b)] and data["results"][0]["revision"] is None
    assert data["config"]["batch_size"] == 8 and data["config"]["plan"] == str(p)
    first = data["results"][0]
    assert set(first) == {"model", "revision", "mem", "gen", "hard_gen", "overall", "groups", "entries"}
    assert first["groups"]["paraphrase"]["entries"] == 3 and first["groups"]["once"]["entries"] == 2
    direct = probe(tiny_model("llama", 0), tokenizer, entries, plan=json.loads(p.read_text()))
    assert first["overall"] == pytest.approx(direct["overall"], abs=1e-5)
    assert str(a) in stdout and "hard_gen" in stdout

    broken = copy.deepcopy(entries)
    broken[1]["gen_target"] = broken[1]["gen_target"][:4]
    write_json(tmp_path / "bad.json", broken)
    code, _, err = run_cli(capsys, "probe", a, "--knowledge", tmp_path / "bad.json", "--out", tmp_path / "x.json")
    assert code == 2 and err.startswith("error: ") and "entry 1" in err and "'gen_target'" in err
    write_json(tmp_path / "short.json", entries[:3])
    code, _, err = run_cli(capsys, "probe", a, "--knowledge", tmp_path / "short.json", "--plan", p, "--out", tmp_path / "x.json")
    assert code == 2 and "3 entries" in err
    code, _, err = run_cli(capsys, "probe", a, "--knowledge", k, "--batch-size", 0, "--out", tmp_path / "x.json")
    assert code == 2 and "--batch-size" in err
    assert not (tmp_path / "x.json").exists()
