"""Plumbing no other test ran: layer order of saved coefficients (12 layers, so name order != layer
order), `resuscitate --coefficients` layer by layer, `--data` as a `datasets` directory with
`--max-instances`, `--dtype bfloat16` on CPU, and `kentropy probe` through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T
from conftest import run_cli
from safetensors.torch import load_file, save_file

from kentropy.knowledge import generate_knowledge, probe
from kentropy.measurement.workflow import load_coefficients

LAYERS = 12  # layers.10 and layers.11 sort before layers.2 by name


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory, tokenizer):
    """A 12-layer tiny llama (ffn dim 24), saved with the test tokenizer."""
    torch.manual_seed(12)
    cfg = T.LlamaConfig(vocab_size=320, hidden_size=16, intermediate_size=24, num_hidden_layers=LAYERS, num_attention_heads=2,
                        num_key_value_heads=2, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = T.AutoModelForCausalLM.from_config(cfg)
    d = tmp_path_factory.mktemp("deep")
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def layer_coefficients(l: int) -> torch.Tensor:
    """Cbar of layer l: 1..12, then 13+10l..24+10l (mean 12.5 + 5l, median 12.5 + 5l)."""
    low = torch.arange(1, 13, dtype=torch.float64)
    return torch.cat([low, low + 12 + 10 * l])


def test_load_coefficients_keeps_layer_order(tmp_path):
    path = tmp_path / "c.safetensors"
    save_file({f"layers.{l}": layer_coefficients(l) for l in reversed(range(LAYERS))}, str(path))
    cbar = load_coefficients(str(path))
    assert cbar.shape == (LAYERS, 24)
    for l in range(LAYERS):
        assert torch.equal(cbar[l], layer_coefficients(l)), l
    assert torch.equal(load_coefficients(str(tmp_path)), cbar)  # a directory holding one file


def test_resuscitate_coefficients_layer_by_layer(deep_model, tmp_path, capsys):
    coef = tmp_path / "c.safetensors"
    save_file({f"layers.{l}": layer_coefficients(l) for l in range(LAYERS)}, str(coef))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "resuscitate", deep_model, "--coefficients", coef, "--ratio", 0.5, "--amplify", 2,
                           "--device", "cpu", "--out", out)
    assert code == 0, err
    report = json.loads((out / "resuscitation.json").read_text())
    before, after = load_file(str(deep_model / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for l in range(LAYERS):
        # quantile 0.5 of 24 values: halfway between the 12th (12) and 13th (22 + 10l): 12.5 + 5l > 12,
        # so neurons 0..11 (Cbar 1..12) are scaled by mean / Cbar * P = (12.5 + 5l) / (i + 1) * 2
        mean = 12.5 + 5 * l
        rec = report["layers"][l]
        assert rec["layer"] == l and rec["neurons_scaled"] == 12
        assert rec["min_multiplier"] == pytest.approx(mean / 12 * 2) and rec["max_multiplier"] == pytest.approx(mean * 2)
        up = f"model.layers.{l}.mlp.up_proj.weight"  # [24, 16]: row i makes coefficient i
        want = before[up].double().clone()
        want[:12] *= torch.tensor([mean / (i + 1) * 2 for i in range(12)], dtype=torch.float64)[:, None]
        assert torch.allclose(after[up].double(), want, rtol=1e-6), l
        for name in (f"model.layers.{l}.mlp.gate_proj.weight", f"model.layers.{l}.mlp.down_proj.weight"):
            assert torch.equal(after[name], before[name]), name  # nothing else changes


@pytest.fixture(scope="module")
def docs(sample_texts, tmp_path_factory):
    """The same 12 documents as a .txt and as a `datasets` directory (save_to_disk)."""
    import datasets

    d = tmp_path_factory.mktemp("ds")
    texts = [t for t in sample_texts if t.strip()][:12]
    (d / "docs.txt").write_text("\n".join(texts) + "\n")
    (d / "first5.txt").write_text("\n".join(texts[:5]) + "\n")
    datasets.Dataset.from_dict({"text": texts, "id": list(range(12))}).save_to_disk(str(d / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts})}).save_to_disk(str(d / "saved-dict"))
    (d / "files").mkdir()
    (d / "files" / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return d


@pytest.mark.parametrize("source", ["saved", "saved-dict", "files"])
def test_data_as_a_datasets_directory_with_max_instances(source, docs, model_dir, tmp_path, capsys):
    model = model_dir("llama", 0)
    ref, got = tmp_path / "ref.json", tmp_path / "got.json"
    assert run_cli(capsys, "measure", model, "--data", docs / "first5.txt", "--seq-len", 32, "--out", ref)[0] == 0
    code, _, err = run_cli(capsys, "measure", model, "--data", docs / source, "--max-instances", 5, "--seq-len", 32, "--out", got)
    assert code == 0, err
    r, g = json.loads(ref.read_text())["results"][0], json.loads(got.read_text())["results"][0]
    assert g["instances"] == 5 and g["tokens"] == r["tokens"]
    assert g["knowledge_entropy_per_layer"] == pytest.approx(r["knowledge_entropy_per_layer"], rel=1e-6)


def test_dtype_bfloat16_on_cpu(docs, model_dir, tmp_path, capsys):
    model = model_dir("llama", 0)
    f32, bf16 = tmp_path / "f32.json", tmp_path / "bf16.json"
    base = ["measure", model, "--data", docs / "docs.txt", "--seq-len", 32, "--device", "cpu"]
    assert run_cli(capsys, *base, "--out", f32)[0] == 0
    code, _, err = run_cli(capsys, *base, "--dtype", "bfloat16", "--out", bf16)
    assert code == 0, err
    a, b = json.loads(f32.read_text()), json.loads(bf16.read_text())
    assert b["config"]["dtype"] == "bfloat16"
    ha, hb = a["results"][0]["knowledge_entropy"], b["results"][0]["knowledge_entropy"]
    assert hb == pytest.approx(ha, rel=1e-2) and hb != ha  # bf16 really ran (8 mantissa bits), and close


def test_probe_through_the_cli(model_dir, tokenizer, tmp_path, capsys):
    from conftest import tiny_model

    model = model_dir("llama", 0)
    entries = generate_knowledge(2, n_paraphrases=1, seed=5)
    (tmp_path / "k.json").write_text(json.dumps(entries))
    out = tmp_path / "p.json"
    code, stdout, err = run_cli(capsys, "probe", model, "--knowledge", tmp_path / "k.json", "--batch-size", 4, "--out", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    (r,) = data["results"]
    assert r["model"] == str(model) and r["revision"] is None and data["config"]["batch_size"] == 4
    assert len(r["entries"]) == 2 and all(len(e[k]) == 5 for e in r["entries"] for k in ("mem", "gen", "hard_gen"))
    scores = [s for e in r["entries"] for k in ("mem", "gen", "hard_gen") for s in e[k]]
    assert r["overall"] == pytest.approx(sum(scores) / len(scores))  # P: the mean probe score
    assert r["mem"] == pytest.approx(sum(s for e in r["entries"] for s in e["mem"]) / 10)
    assert r["overall"] == pytest.approx(probe(tiny_model("llama", 0), tokenizer, entries)["overall"], abs=1e-5)
    assert "hard_gen" in stdout and str(out) in stdout


def test_load_series_holds_one_model_at_a_time(model_dir):
    """A checkpoint series loads in order, each model released before the next one loads; `before_load` runs first."""
    import gc
    import weakref

    from kentropy.models.loading import load_series

    dirs = [str(model_dir("llama", s)) for s in (0, 1, 2)]
    seen, refs, alive_at_next_load = [], [], []

    def before_load(ckpt, tok):
        gc.collect()
        alive_at_next_load.append(sum(r() is not None for r in refs))  # the caller still holds the previous item here
        seen.append(("tok", ckpt.name))

    for item in load_series(dirs, before_load=before_load):
        refs.append(weakref.ref(item.model))
        seen.append(("model", item.checkpoint.name))
    assert seen == [(k, d) for d in dirs for k in ("tok", "model")]
    assert alive_at_next_load == [0, 0, 0]  # never two models in memory
