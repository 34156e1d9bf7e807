"""`kentropy measure` and `kentropy plot` end to end, series, offline revisions, and bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import run_cli
import torch
from safetensors.torch import load_file

from kentropy.measurement.workflow import load_coefficients

FIELDS = {"model", "revision", "knowledge_entropy", "knowledge_entropy_per_layer", "attention_entropy",
          "attention_entropy_per_layer", "next_token_entropy", "layers", "ffn_dim", "instances", "tokens"}


def kentropy(*args, env=None):
    e = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "kentropy", *map(str, args)], capture_output=True, text=True, env=e)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_texts):
    d = tmp_path_factory.mktemp("data")
    (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in sample_texts[:12]))
    (d / "docs.txt").write_text("\n".join(sample_texts[:12]) + "\n\n")
    return d


def test_measure_series_json_contract(model_dir, corpus, tmp_path):
    a, b = model_dir("llama", 0), model_dir("gpt2", 1)
    out = tmp_path / "res.json"
    r = kentropy("measure", a, b, "--data", corpus / "docs.jsonl", "--metrics", "knowledge,attention,next-token",
                 "--seq-len", "32", "--batch-size", "4", "--coefficients-out", tmp_path / "coef", "--out", out)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert [x["model"] for x in data["results"]] == [str(a), str(b)]  # in order
    for x in data["results"]:
        assert set(x) == FIELDS
        assert x["layers"] == 2 and x["ffn_dim"] == 24 and x["instances"] == 12
        assert x["knowledge_entropy"] == pytest.approx(sum(x["knowledge_entropy_per_layer"]))
        assert x["attention_entropy"] is not None and x["next_token_entropy"] is not None
    assert data["config"]["seq_len"] == 32 and data["config"]["activation"] == "abs"
    assert str(a) in r.stdout and "knowledge H" in r.stdout  # one-screen summary
    files = sorted((tmp_path / "coef").glob("*.safetensors"))
    assert len(files) == 2
    cbar = load_file(str(files[0]))
    assert set(cbar) == {"layers.0", "layers.1"} and cbar["layers.0"].shape == (24,)
    # Eq. 2 written out: p = Cbar_l / sum Cbar_l, H = sum_l -sum_i p ln p
    h = sum(float(-(c / c.sum() * torch.log(c / c.sum())).sum()) for c in (cbar["layers.0"], cbar["layers.1"]))
    assert h == pytest.approx(data["results"][0]["knowledge_entropy"])

    # txt input with a trailing blank line gives the same numbers; encoders get null next-token entropy
    out2 = tmp_path / "res2.json"
    assert kentropy("measure", a, "--data", corpus / "docs.txt", "--seq-len", "32", "--out", out2).returncode == 0
    assert json.loads(out2.read_text())["results"][0]["knowledge_entropy"] == pytest.approx(data["results"][0]["knowledge_entropy"])
    out3 = tmp_path / "bert.json"
    assert kentropy("measure", model_dir("bert"), "--data", corpus / "docs.txt", "--metrics", "knowledge,next-token", "--out", out3).returncode == 0
    assert json.loads(out3.read_text())["results"][0]["next_token_entropy"] is None

    png = tmp_path / "fig.png"
    r = kentropy("plot", out, "--out", png)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fake_hub_cache(root, src_dirs):
    """An HF hub cache holding `org/tiny` at revisions step1, step2 (what a real download leaves)."""
    repo = root / "models--org--tiny"
    for i, (rev, src) in enumerate(src_dirs.items()):
        sha = f"{i + 1:040x}"
        shutil.copytree(src, repo / "snapshots" / sha)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / rev).write_text(sha)
    return root


def test_revision_series_offline(model_dir, corpus, tmp_path):
    a, b = model_dir("llama", 3), model_dir("llama", 4)
    cache = _fake_hub_cache(tmp_path / "hub", {"step1": a, "step2": b})
    env = {"HF_HUB_CACHE": str(cache)}
    out = tmp_path / "rev.json"
    r = kentropy("measure", "org/tiny@step1,step2", "--data", corpus / "docs.txt", "--out", out, env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())["results"]
    assert [(x["model"], x["revision"]) for x in res] == [("org/tiny", "step1"), ("org/tiny", "step2")]
    local = tmp_path / "local.json"
    assert kentropy("measure", a, b, "--data", corpus / "docs.txt", "--out", local).returncode == 0
    loc = json.loads(local.read_text())["results"]
    assert [x["knowledge_entropy"] for x in res] == pytest.approx([x["knowledge_entropy"] for x in loc])
    assert res[0]["knowledge_entropy"] != pytest.approx(res[1]["knowledge_entropy"])

    r = kentropy("measure", "org/tiny@step9", "--data", corpus / "docs.txt", "--out", tmp_path / "x.json", env=env)
    assert r.returncode == 2 and "step9" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_no_pad_token_uses_eos(model_dir, corpus, tmp_path):
    d = model_dir("llama", 5)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    tj = json.loads((d / "tokenizer.json").read_text())
    (d / "special_tokens_map.json").unlink(missing_ok=True)
    (d / "tokenizer.json").write_text(json.dumps(tj))
    out = tmp_path / "r.json"
    r = kentropy("measure", d, "--data", corpus / "docs.txt", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "no pad token" in r.stderr and "eos" in r.stderr


@pytest.mark.parametrize("case", ["missing-file", "empty", "no-text", "bad-json", "empty-doc", "seq-len", "batch",
                                  "no-weights", "not-a-dir", "activation", "metrics", "device-map", "device-map-device"])
def test_bad_input_one_line_error_no_output(case, model_dir, corpus, tmp_path, capsys):
    m = model_dir("llama", 0)
    data = corpus / "docs.txt"
    extra = []
    if case == "missing-file":
        data = tmp_path / "nope.jsonl"
    elif case == "empty":
        data = tmp_path / "empty.txt"
        data.write_text("\n\n")
    elif case == "no-text":
        data = tmp_path / "x.jsonl"
        data.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    elif case == "bad-json":
        data = tmp_path / "x.jsonl"
        data.write_text('{"text": "fine"}\n{"text": \n')
    elif case == "empty-doc":
        data = tmp_path / "x.jsonl"
        data.write_text('{"text": "fine"}\n{"text": ""}\n')
    elif case == "seq-len":
        extra = ["--seq-len", "0"]
    elif case == "batch":
        extra = ["--batch-size", "-1"]
    elif case == "no-weights":
        m = tmp_path / "noweights"
        shutil.copytree(model_dir("llama", 0), m)
        (m / "model.safetensors").unlink()
    elif case == "not-a-dir":
        m = tmp_path / "file.bin"
        m.write_text("x")
    elif case == "activation":
        extra = ["--activation", "square"]
    elif case == "metrics":
        extra = ["--metrics", "knowledge,perplexity"]
    elif case == "device-map":
        extra = ["--device-map", "balanced"]
    elif case == "device-map-device":
        extra = ["--device-map", "auto", "--device", "cpu"]
    out = tmp_path / "out.json"
    code, _, err = run_cli(capsys, "measure", m, "--data", data, "--out", out, *extra)
    assert code == 2, (code, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert not out.exists() and not list(tmp_path.glob(".out.json*"))
    expect = {"missing-file": "nope.jsonl", "empty": "no documents", "no-text": "x.jsonl:2", "bad-json": "x.jsonl:2",
              "empty-doc": "document 1", "seq-len": "--seq-len", "batch": "--batch-size", "no-weights": "no weights",
              "not-a-dir": "not a model directory", "activation": "--activation", "metrics": "--metrics",
              "device-map": "--device-map balanced", "device-map-device": "leave out --device cpu"}[case]
    assert expect in lines[0]


def test_coefficients_roundtrip(model_dir, corpus, tmp_path):
    out = tmp_path / "r.json"
    r = kentropy("measure", model_dir("qwen2"), "--data", corpus / "docs.txt", "--coefficients-out", tmp_path / "c", "--out", out)
    assert r.returncode == 0, r.stderr
    cbar = load_coefficients(str(tmp_path / "c"))
    assert cbar.shape == (2, 24) and cbar.dtype == torch.float64


def test_device_map_auto_measures_the_same(model_dir, corpus, tmp_path, capsys):
    """`--device-map auto` loads through accelerate (all on CPU here, over the GPUs where there are some)."""
    m = model_dir("llama", 2)
    plain, mapped = tmp_path / "plain.json", tmp_path / "mapped.json"
    common = ["--data", corpus / "docs.txt", "--metrics", "knowledge,attention,next-token", "--seq-len", "32"]
    assert run_cli(capsys, "measure", m, *common, "--out", plain)[0] == 0
    code, _, err = run_cli(capsys, "measure", m, *common, "--device-map", "auto", "--out", mapped)
    assert code == 0, err
    a, b = json.loads(plain.read_text()), json.loads(mapped.read_text())
    assert b["config"]["device_map"] == "auto"
    for k in ("knowledge_entropy", "attention_entropy", "next_token_entropy"):
        assert b["results"][0][k] == pytest.approx(a["results"][0][k], rel=1e-6), k
    assert b["results"][0]["knowledge_entropy_per_layer"] == pytest.approx(a["results"][0]["knowledge_entropy_per_layer"], rel=1e-6)
