"""GGUF checkpoints: a tiny llama written here with gguf's GGUFWriter (Q8_0 matrices, F32 norms), loaded
through every command's loader, measured as its dequantized weights; and the bad-input errors."""

import json
import sys

import numpy as np
import pytest
import torch
import transformers as T
from conftest import V, run_cli

gguf = pytest.importorskip("gguf")

from kentropy.knowledge import generate_knowledge  # noqa: E402
from kentropy.measurement.workflow import measure  # noqa: E402
from kentropy.models.loading import ModelRef, gguf_header, load_model, load_series, load_tokenizer, parse_checkpoints  # noqa: E402

SPECIALS = {"<s>", "<|endoftext|>", "<pad>", "<unk>"}  # <|endoftext|>: the eos, as transformers' GPT-2 tokenizer names it


def tiny_llama():
    """Width 32 (Q8_0 blocks hold 32 values: every matrix row must be a multiple of that)."""
    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
                        bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = T.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def rope_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's layout of q/k rows (its convert script's `permute`); transformers undoes it on load."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, model, tokenizer, arch: str = "llama") -> None:
    """`model` (a LlamaForCausalLM) and `tokenizer` (byte-level BPE) as a GGUF file: Q8_0 matrices, F32 vectors."""
    cfg = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny-llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [t for t, _ in sorted(spec["vocab"].items(), key=lambda kv: kv[1])]
    tokens = ["<|endoftext|>" if t == "</s>" else t for t in tokens]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["merges"]])
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens])
    w.add_bos_token_id(tokens.index("<s>"))
    w.add_eos_token_id(tokens.index("<|endoftext|>"))
    w.add_pad_token_id(tokens.index("<pad>"))
    w.add_add_bos_token(False)
    for name, t in model.state_dict().items():
        base, suffix = name.rsplit(".", 1)
        a = t.numpy().astype(np.float32)
        g = names.get_name(base)
        if g.endswith(("attn_q", "attn_k")):
            a = rope_permute(a, cfg.num_attention_heads)
        if a.ndim == 2:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(f"{g}.{suffix}", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(f"{g}.{suffix}", a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def dequantized(model, path):
    """`model` with every weight replaced by the file's dequantized tensor (the reference for what is measured)."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, model.config.num_hidden_layers)
    hf = {f"{names.get_name(n.rsplit('.', 1)[0])}.{n.rsplit('.', 1)[1]}": n for n in model.state_dict()}
    ref = T.LlamaForCausalLM(model.config).eval()
    state = ref.state_dict()
    for t in gguf.GGUFReader(path).tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):  # undo llama.cpp's q/k layout
            h = model.config.num_attention_heads
            a = a.reshape(h, a.shape[0] // h // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
        with torch.no_grad():
            state[hf[t.name]].copy_(torch.from_numpy(np.array(a)))
    return ref


@pytest.fixture(scope="module")
def gguf_model(tmp_path_factory, tokenizer):
    """(path of the tiny GGUF file, the HF model holding its dequantized weights)."""
    path = tmp_path_factory.mktemp("gguf") / "tiny-Q8_0.gguf"
    model = tiny_llama()
    write_gguf(path, model, tokenizer)
    return path, dequantized(model, path)


@pytest.fixture(scope="module")
def docs(tmp_path_factory, sample_texts):
    path = tmp_path_factory.mktemp("docs") / "docs.txt"
    path.write_text("\n".join(sample_texts[:8]) + "\n")
    return path


def test_header_names_the_quantization(gguf_model):
    path, _ = gguf_model
    h = gguf_header(ModelRef(str(path)))
    assert h["file"] == str(path) and h["architecture"] == "llama" and h["file_type"] == "Q8_0"
    # 2 layers x 7 matrices + embedding + head are Q8_0; 2 layers x 2 norms + the final norm are F32
    assert h["tensor_types"] == {"Q8_0": 16, "F32": 5}


def test_checkpoint_of_a_gguf_path(tmp_path):
    ckpt = parse_checkpoints([str(tmp_path / "m-Q4_K_M.gguf")])[0]
    assert (ckpt.source, ckpt.gguf_file) == (str(tmp_path), "m-Q4_K_M.gguf")
    hub = parse_checkpoints(["org/repo/m.gguf@main,v2"])
    assert [(c.source, c.gguf_file, c.revision) for c in hub] == [("org/repo", "m.gguf", "main"), ("org/repo", "m.gguf", "v2")]
    assert ModelRef("some/dir").gguf_file is None and ModelRef("some/dir").pretrained_kw == {"revision": None}


def test_loads_dequantized_with_its_tokenizer(gguf_model, tokenizer):
    path, ref = gguf_model
    ckpt = ModelRef(str(path))
    tok = load_tokenizer(ckpt)
    text = "The mill by the river was built of stone."
    assert tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    model = load_model(ckpt)
    assert getattr(model, "hf_quantizer", None) is None  # a plain model: it can be edited and saved
    got, want = model.state_dict(), ref.state_dict()
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_measure_is_h_of_the_dequantized_weights(gguf_model, tokenizer, docs, tmp_path, capsys):
    path, ref = gguf_model
    out = tmp_path / "m.json"
    code, _, err = run_cli(capsys, "measure", path, "--data", docs, "--seq-len", 32, "--metrics", "knowledge,next-token",
                           "--out", out)
    assert code == 0, err
    r = json.loads(out.read_text())["results"][0]
    want = measure(ref, tokenizer, docs.read_text().splitlines(), seq_len=32, metrics=("knowledge", "next-token"), progress=False)
    assert r["knowledge_entropy"] == pytest.approx(want.knowledge_entropy, rel=1e-9)
    assert r["next_token_entropy"] == pytest.approx(want.next_token_entropy, rel=1e-6)
    assert r["model"] == str(path)
    assert r["gguf"] == {"file": str(path), "architecture": "llama", "file_type": "Q8_0", "tensor_types": {"F32": 5, "Q8_0": 16}}


def test_every_loader_takes_a_gguf(gguf_model, docs, tmp_path, capsys):
    """probe, circuits and evaluate load through load_series (as measure); resuscitate and intervene through
    open_edit; train through load_tokenizer/load_model. Each command runs on the file."""
    path, _ = gguf_model
    assert [item.model.config.model_type for item in load_series([str(path)])] == ["llama"]
    k = tmp_path / "k.json"
    entries = generate_knowledge(2, n_paraphrases=1, seed=0)
    for e in entries:  # passages short enough for 32-token rows
        e["train_context"] = " ".join(e["train_context"].split()[:6])
        e["paraphrases"] = [" ".join(p.split()[:6]) for p in e["paraphrases"]]
    k.write_text(json.dumps(entries))
    code, _, err = run_cli(capsys, "probe", path, "--knowledge", k, "--out", tmp_path / "p.json")
    assert code == 0, err
    assert json.loads((tmp_path / "p.json").read_text())["results"][0]["gguf"]["file_type"] == "Q8_0"
    code, _, err = run_cli(capsys, "resuscitate", path, "--data", docs, "--seq-len", 32, "--ratio", 0.5, "--amplify", 2,
                           "--out", tmp_path / "res")
    assert code == 0, err
    assert (tmp_path / "res" / "model.safetensors").is_file()  # the dequantized, edited model saves as safetensors
    assert json.loads((tmp_path / "res" / "resuscitation.json").read_text())["gguf"]["file"] == str(path)
    code, _, err = run_cli(capsys, "intervene", path, "--method", "shrink-perturb", "--shrink", 0.8, "--perturb", 0.1,
                           "--seed", 1, "--out", tmp_path / "sp")
    assert code == 0, err
    assert json.loads((tmp_path / "sp" / "intervention.json").read_text())["gguf"]["file_type"] == "Q8_0"
    code, _, err = run_cli(capsys, "train", path, "--data", docs, "--knowledge", k, "--out", tmp_path / "run", "--steps", 2,
                           "--batch-size", 2, "--micro-batch", 1, "--seq-len", 32, "--inject-interval", 2, "--rounds", 1,
                           "--eval-every", 0, "--save-every", 2)
    assert code == 0, err


def test_circuits_take_a_gguf(gguf_model, tokenizer, tmp_path, capsys):
    from kentropy.circuits import tasks_from_triples, write_tasks

    path, _ = gguf_model
    subjects = ["Ostrel", "Sable", "Carran", "Emrik"]
    facts = [(s, "was born in", t, "born", i < 2) for i, (s, t) in enumerate(zip(subjects, ["salt", "fish"] * 2))]
    write_tasks(tmp_path / "t.json", tasks_from_triples(facts, tokenizer))
    code, _, err = run_cli(capsys, "circuits", path, "--task", tmp_path / "t.json", "--out", tmp_path / "c.json",
                           "--top-n", 8, "--ig-steps", 2)
    assert code == 0, err
    assert json.loads((tmp_path / "c.json").read_text())["results"][0]["gguf"]["file_type"] == "Q8_0"


def one_line_error(capsys, path, docs, tmp_path) -> str:
    code, out, err = run_cli(capsys, "measure", path, "--data", docs, "--out", tmp_path / "x.json")
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: ") and not (tmp_path / "x.json").exists(), err
    return lines[0]


def test_truncated_gguf(gguf_model, docs, tmp_path, capsys):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(gguf_model[0].read_bytes()[:-1000])
    err = one_line_error(capsys, bad, docs, tmp_path)
    assert str(bad) in err and "truncated" in err
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + bytes(10))
    assert "junk.gguf" in one_line_error(capsys, tmp_path / "junk.gguf", docs, tmp_path)


def test_unsupported_architecture(tokenizer, docs, tmp_path, capsys):
    bad = tmp_path / "other.gguf"
    write_gguf(bad, tiny_llama(), tokenizer, arch="nonesuch")
    err = one_line_error(capsys, bad, docs, tmp_path)
    assert str(bad) in err and "'nonesuch'" in err


def test_missing_gguf_package(gguf_model, docs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError
    err = one_line_error(capsys, gguf_model[0], docs, tmp_path)
    assert str(gguf_model[0]) in err and "kentropy[gguf]" in err


def test_missing_file(docs, tmp_path, capsys):
    err = one_line_error(capsys, tmp_path / "absent.gguf", docs, tmp_path)
    assert "absent.gguf" in err and "not found" in err
