"""Algorithm 1 against a reference written here: exact rows, untouched tensors, undo, entropy direction."""

import copy
import json
import re

import pytest
import torch
from conftest import run_cli, tiny_model
from test_ffn_layouts import build

from kentropy.errors import KentropyError
from kentropy.measurement.workflow import measure
from kentropy.edits.resuscitate import resuscitate, select_and_scale

# where each family keeps the weight that produces coefficient i, and whether it is stored [in, out]
UP = {"llama": ("model.layers.{l}.mlp.up_proj", False), "qwen2": ("model.layers.{l}.mlp.up_proj", False),
      "gpt2": ("transformer.h.{l}.mlp.c_fc", True), "gpt_neox": ("gpt_neox.layers.{l}.mlp.dense_h_to_4h", False)}


def reference_multipliers(cbar_l, q, p):
    """Neurons with Cbar <= the q-quantile (linear interpolation, computed by hand) get mean/Cbar*p."""
    vals = sorted(cbar_l.tolist())
    pos = q * (len(vals) - 1)
    lo = int(pos)
    thr = vals[lo] + (pos - lo) * (vals[min(lo + 1, len(vals) - 1)] - vals[lo])
    mean = sum(vals) / len(vals)
    return {i: mean / v * p for i, v in enumerate(cbar_l.tolist()) if v <= thr and v > 0}


def test_select_and_scale_by_hand():
    cbar = torch.tensor([4.0, 1.0, 2.0, 3.0, 10.0])
    idx, mult = select_and_scale(cbar, 0.5, 2.0)  # quantile 0.5 = 3.0; mean 4.0
    assert idx.tolist() == [1, 2, 3]
    assert mult.tolist() == pytest.approx([4 / 1 * 2, 4 / 2 * 2, 4 / 3 * 2])
    idx, _ = select_and_scale(torch.tensor([0.0, 1.0, 2.0, 3.0]), 0.5, 1.0)
    assert idx.tolist() == [1]  # a dead neuron (Cbar 0) cannot be raised by scaling


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gpt_neox"])
def test_exact_rows_changed_and_nothing_else(family, tokenizer, sample_texts):
    model = tiny_model(family)
    with torch.no_grad():  # give plain FFNs a non-zero bias so that bias scaling is checked
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    original = copy.deepcopy(model.state_dict())
    cbar = measure(model, tokenizer, sample_texts[:8], seq_len=32, progress=False).coefficients
    q, p = 0.5, 2.0
    done = resuscitate(model, cbar, q, p)
    state = model.state_dict()
    path, transposed = UP[family]
    changed = set()
    for l in range(2):
        ref = reference_multipliers(cbar[l], q, p)
        assert done.edits[l].neurons.tolist() == sorted(ref)
        name = path.format(l=l) + ".weight"
        w0, w1 = original[name], state[name]
        rows0, rows1 = (w0.t(), w1.t()) if transposed else (w0, w1)
        for i in range(rows0.shape[0]):
            expect = rows0[i].double() * ref[i] if i in ref else rows0[i].double()
            assert torch.allclose(rows1[i].double(), expect, rtol=1e-6, atol=0), (name, i)
            if i not in ref:
                assert torch.equal(rows1[i], rows0[i])
        changed.add(name)
        bname = path.format(l=l) + ".bias"
        if bname in original:
            b0, b1 = original[bname], state[bname]
            for i in range(b0.numel()):
                assert b1[i].item() == pytest.approx(b0[i].item() * ref.get(i, 1.0), rel=1e-6)
            changed.add(bname)
    for name in original:  # every other tensor bit-identical (gate included)
        if name not in changed:
            assert torch.equal(original[name], state[name]), name
    done.undo()
    for name, t in model.state_dict().items():
        assert torch.equal(t, original[name]), name  # undo restores bit for bit
    assert done.exact is (family in {"llama", "qwen2"})


@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_selected_coefficients_become_mean_times_p(family, tokenizer, sample_texts):
    """Gated FFN (up rows), or gated experts (rows of expert e's up half, scaling g_e * c_{e,i} exactly: the router
    reads the FFN input, unchanged): layer 0's Cbar of the selected neurons is mean(Cbar) * P after the edit."""
    model = tiny_model(family) if family == "llama" else build(family)
    texts = sample_texts[:6]
    cbar = measure(model, tokenizer, texts, seq_len=24, progress=False).coefficients
    done = resuscitate(model, cbar, 0.5, 1.0)
    after = measure(model, tokenizer, texts, seq_len=24, progress=False).coefficients
    idx = done.edits[0].neurons
    assert torch.allclose(after[0, idx], torch.full((len(idx),), float(cbar[0].mean()), dtype=torch.float64), rtol=1e-5)


def skewed(model, family, sigma=2.0):
    """Heavy-tailed memory usage, as in a trained model: input rows scaled by log-normal factors.

    A random model's Cbar is nearly uniform, where P > 1 overshoots (the bottom half ends above
    the rest) and entropy can fall; the paper's claim is about skewed, trained distributions.
    """
    path, transposed = UP[family]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for l in range(2):
            w = model.get_submodule(path.format(l=l)).weight
            rows = w.t() if transposed else w
            rows.mul_(torch.exp(sigma * torch.randn(rows.shape[0], 1, generator=g)))
    return model


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_entropy_goes_up_with_amplify_at_least_one(family, tokenizer, sample_texts):
    texts = sample_texts[:10]
    model = skewed(tiny_model(family), family)
    m0 = measure(model, tokenizer, texts, seq_len=32, progress=False)
    gains = {}
    for p in (0.5, 1.0, 2.0, 3.0):
        edited = copy.deepcopy(model)
        resuscitate(edited, m0.coefficients, 0.5, p)
        gains[p] = measure(edited, tokenizer, texts, seq_len=32, progress=False).knowledge_entropy - m0.knowledge_entropy
    assert all(gains[p] > 0 for p in (1.0, 2.0, 3.0)), gains
    # with heavy-tailed usage the selected neurons sit far below mean/2, so even P = 0.5 raises them
    assert gains[0.5] < gains[1.0], gains


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_entropy_goes_down_with_amplify_half(family, tokenizer, sample_texts):
    """P = 0.5 sets the selected neurons to mean/2: below where most of them were when usage is near uniform
    (a random model); contrast with the skewed case above, where P = 0.5 raises entropy too."""
    texts = sample_texts[:10]
    model = tiny_model(family)
    m0 = measure(model, tokenizer, texts, seq_len=32, progress=False)
    cb = m0.coefficients
    for p, up in [(0.5, False), (1.0, True)]:
        edited = copy.deepcopy(model)
        resuscitate(edited, cb, 0.5, p)
        h = measure(edited, tokenizer, texts, seq_len=32, progress=False).knowledge_entropy
        assert (h > m0.knowledge_entropy) is up, (p, h, m0.knowledge_entropy)


def test_bad_arguments_are_named_as_the_caller_wrote_them():
    """The Python API refuses what the CLI refuses, naming its own arguments (the CLI names flags), and
    changes nothing: all-zero, non-finite, negative or misshapen coefficients, ratio and amplify out of range."""
    model = tiny_model("llama")
    before = copy.deepcopy(model.state_dict())
    cbar = torch.rand(2, 24, dtype=torch.float64) + 0.1
    for q in (0.0, 1.0, -0.2, 1.5, float("nan"), "0.5"):
        with pytest.raises(KentropyError, match=rf"^ratio={re.escape(repr(q))}: must be in \(0, 1\)$"):
            resuscitate(model, cbar, q, 1.0)
    for p in (0.0, -1.0, float("inf")):
        with pytest.raises(KentropyError, match=rf"^amplify={re.escape(repr(p))}: must be a finite number > 0$"):
            resuscitate(model, cbar, 0.5, p)
    zero, nan, neg = cbar.clone(), cbar.clone(), cbar.clone()
    zero[1] = 0.0
    nan[0, 3] = float("nan")
    neg[1, 7] = -0.5
    for bad, says in [(torch.zeros(2, 24), "layer 0 is all zero"), (zero, "layer 1 is all zero"),
                      (nan, "layer 0 holds NaN or infinite values"), (neg, "layer 1 holds negative values"),
                      (torch.rand(3, 24), r"shape \(3, 24\); the model needs 2 layers of \[24, 24\] memory vectors"),
                      ([torch.rand(24), torch.rand(20)], r"shape \[24, 20\]"), (torch.ones(2, 24, dtype=torch.long), "layer 0 is torch.int64, not a float vector"),
                      ([[0.5] * 24] * 2, "a list; expected a tensor")]:
        with pytest.raises(KentropyError, match=rf"^coefficients: {says}"):
            resuscitate(model, bad, 0.5, 1.0)
    assert all(torch.equal(t, before[k]) for k, t in model.state_dict().items())


def test_overflowing_multipliers_are_refused_and_undone():
    """A Cbar entry so small that mean/Cbar[i] * P overflows bf16: an error naming coefficients, the model as it was."""
    model = tiny_model("llama").to(torch.bfloat16)
    before = copy.deepcopy(model.state_dict())
    cbar = torch.rand(2, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    cbar[1, 4] = 1e-60  # layer 0 is scaled first (and undone), layer 1 overflows
    with pytest.raises(KentropyError, match=r"^coefficients: layer 1: multipliers up to .* overflow torch.bfloat16 weights"):
        resuscitate(model, cbar, 0.5, 1.0)
    assert all(torch.equal(t, before[k]) for k, t in model.state_dict().items())


def test_cli_writes_loadable_model(model_dir, sample_texts, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from kentropy.cli.app import main

    src = model_dir("llama", 2)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(sample_texts[:8]))
    out = tmp_path / "res"
    main(["resuscitate", str(src), "--data", str(data), "--ratio", "0.5", "--amplify", "2", "--seq-len", "32", "--out", str(out)])
    rep = json.loads((out / "resuscitation.json").read_text())
    assert rep["ratio"] == 0.5 and rep["amplify"] == 2.0 and len(rep["layers"]) == 2
    assert rep["knowledge_entropy_after"] > rep["knowledge_entropy_before"]
    assert all(x["neurons_scaled"] > 0 and x["min_multiplier"] <= x["max_multiplier"] for x in rep["layers"])
    assert (out / "tokenizer.json").exists()
    m = AutoModelForCausalLM.from_pretrained(out)  # a normal HF model directory
    ref = AutoModelForCausalLM.from_pretrained(src)
    assert not torch.equal(m.model.layers[0].mlp.up_proj.weight, ref.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(m.model.layers[0].mlp.gate_proj.weight, ref.model.layers[0].mlp.gate_proj.weight)
    # measured entropy of the saved model equals the reported "after"
    tok_out = capsys.readouterr().out
    assert "knowledge entropy" in tok_out
    main(["measure", str(out), "--data", str(data), "--seq-len", "32", "--out", str(tmp_path / "m.json")])
    again = json.loads((tmp_path / "m.json").read_text())["results"][0]["knowledge_entropy"]
    assert again == pytest.approx(rep["knowledge_entropy_after"], rel=1e-6)
    # an existing directory is refused without --overwrite; bad ratio is a one-line error
    for args, needle in [(["--ratio", "0.5", "--amplify", "1"], "--overwrite"), (["--ratio", "1.5", "--amplify", "1"], "--ratio")]:
        with pytest.raises(SystemExit) as e:
            main(["resuscitate", str(src), "--data", str(data), "--out", str(out), *args])
        assert e.value.code == 2 and needle in capsys.readouterr().err


def test_resuscitate_is_intervene_method_resuscitate(model_dir, sample_texts, tmp_path, capsys):
    """The two commands run one implementation: the same weights, numbers and checks; each its own report."""
    from safetensors.torch import load_file, save_file

    src = model_dir("llama", 3)
    data = tmp_path / "d.txt"
    data.write_text("\n".join(sample_texts[:6]))
    common = [src, "--data", data, "--ratio", 0.4, "--amplify", 1.5, "--seq-len", 24]
    assert run_cli(capsys, "resuscitate", *common, "--out", tmp_path / "a")[0] == 0
    assert run_cli(capsys, "intervene", *common, "--method", "resuscitate", "--out", tmp_path / "b")[0] == 0
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra = json.loads((tmp_path / "a" / "resuscitation.json").read_text())
    rb = json.loads((tmp_path / "b" / "intervention.json").read_text())
    assert rb["params"] == {"ratio": 0.4, "amplify": 1.5, "exact": ra["exact"], "note": ra["note"]}
    assert [{k: v for k, v in x.items() if k != "neurons"} for x in rb["layers"]] == ra["layers"]
    for k in ("knowledge_entropy_before", "knowledge_entropy_after", "model", "coefficients_from", "measured_on"):
        assert ra[k] == rb[k], k
    # a Cbar file of another model: the same one-line error from both, naming the flag, before anything is written
    save_file({f"layers.{l}": torch.rand(20, dtype=torch.float64) + 0.5 for l in range(2)}, str(tmp_path / "c20.safetensors"))
    for argv in (["resuscitate"], ["intervene", "--method", "resuscitate"]):
        code, _, err = run_cli(capsys, *argv, src, "--coefficients", tmp_path / "c20.safetensors", "--ratio", 0.5, "--amplify", 1,
                               "--out", tmp_path / "c")
        assert code == 2 and f"error: --coefficients {tmp_path / 'c20.safetensors'}: shape (2, 20); the model needs 2 layers of [24, 24] memory vectors" in err
        assert not (tmp_path / "c").exists()


# ---- fused gate_up and mixture-of-experts layouts -------------------------------------------------
def _flat_reference(cbar_l, q, p):
    return reference_multipliers(cbar_l, q, p)


@pytest.mark.parametrize("family", ["phi3", "modernbert"])
def test_fused_gate_up_scales_only_the_up_half(family, tokenizer, sample_texts):
    model = build(family)
    original = copy.deepcopy(model.state_dict())
    cbar = measure(model, tokenizer, sample_texts[:6], seq_len=24, progress=False).coefficients
    done = resuscitate(model, cbar, 0.5, 2.0)
    name = "model.layers.{l}.mlp.gate_up_proj.weight" if family == "phi3" else "layers.{l}.mlp.Wi.weight"
    state = model.state_dict()
    for l in range(2):
        ref = _flat_reference(cbar[l], 0.5, 2.0)
        w0, w1 = original[name.format(l=l)], state[name.format(l=l)]
        assert torch.equal(w1[:24], w0[:24])  # the first half (gate / activated input) is never touched
        for i in range(24):
            assert torch.allclose(w1[24 + i].double(), w0[24 + i].double() * ref.get(i, 1.0), rtol=1e-6, atol=0)
    changed = {name.format(l=l) for l in range(2)}
    assert all(torch.equal(original[k], state[k]) for k in original if k not in changed)
    assert done.exact
    done.undo()
    assert all(torch.equal(t, original[k]) for k, t in model.state_dict().items())


@pytest.mark.parametrize("family", ["qwen2_moe", "deepseek_v3", "olmoe"])
def test_moe_scales_expert_up_halves_and_shared_up(family, tokenizer, sample_texts):
    model = build(family)
    original = copy.deepcopy(model.state_dict())
    texts = sample_texts[:6]
    m0 = measure(model, tokenizer, texts, seq_len=24, progress=False)
    q, p = 0.5, 2.0
    done = resuscitate(model, m0.coefficients, q, p)
    state = model.state_dict()
    changed = set()
    for l, cbar in enumerate(m0.coefficients):
        ref = _flat_reference(cbar, q, p)  # the quantile over all of the layer's memory vectors
        assert done.edits[l].neurons.tolist() == sorted(ref)
        prefix = f"model.layers.{l}.mlp."
        if prefix + "experts.gate_up_proj" not in original:  # a dense layer: its up projection
            up = prefix + "up_proj.weight"
            for i in range(original[up].shape[0]):
                assert torch.allclose(state[up][i].double(), original[up][i].double() * ref.get(i, 1.0), rtol=1e-6, atol=0)
            changed.add(up)
            continue
        gu0, gu1 = original[prefix + "experts.gate_up_proj"], state[prefix + "experts.gate_up_proj"]  # [E, 2m, h]
        E, m = gu0.shape[0], gu0.shape[1] // 2
        assert torch.equal(gu1[:, :m], gu0[:, :m])  # gates untouched
        for e in range(E):
            for i in range(m):
                s = ref.get(e * m + i, 1.0)  # memory (e, i) is row i of expert e's up half
                assert torch.allclose(gu1[e, m + i].double(), gu0[e, m + i].double() * s, rtol=1e-6, atol=0)
        changed.add(prefix + "experts.gate_up_proj")
        shared = [k for k in original if k.startswith(prefix + "shared_expert") and k.endswith("up_proj.weight")]
        for k in shared:
            for i in range(original[k].shape[0]):
                s = ref.get(E * m + i, 1.0)
                assert torch.allclose(state[k][i].double(), original[k][i].double() * s, rtol=1e-6, atol=0)
            changed.add(k)
        assert shared or family == "olmoe"
    assert all(torch.equal(original[k], state[k]) for k in original if k not in changed)
    assert done.exact
    done.undo()
    assert all(torch.equal(t, original[k]) for k, t in model.state_dict().items())


def test_coefficient_shape_mismatch_is_a_clear_error():
    with pytest.raises(KentropyError, match=r"model needs 2 layers of \[24, 68\] memory vectors"):
        resuscitate(build("qwen2_moe"), torch.ones(2, 24), 0.5, 1.0)
