"""ReDo and shrink-and-perturb against references written here, on gated, plain, fused and MoE layouts;
`kentropy intervene` end to end; its bad input (one `error:` line, nothing written)."""

import copy
import json

import pytest
import torch
from conftest import run_cli, tiny_model
from safetensors.torch import save_file
from test_ffn_layouts import build

from kentropy.errors import KentropyError
from kentropy.edits.redo import redo, select
from kentropy.edits.shrink_perturb import shrink_perturb


def ref_scores(cbar, groups):
    """s_i = Cbar_i / mean(Cbar over i's group), by hand; None where the group's mean is 0."""
    out = [None] * len(cbar)
    for start, n in groups:
        part = [float(x) for x in cbar[start : start + n]]
        mean = sum(part) / n
        for j, v in enumerate(part):
            out[start + j] = v / mean if mean > 0 else None
    return out


def ref_dormant(cbar, groups, tau):
    return [i for i, s in enumerate(ref_scores(cbar, groups)) if s is not None and s <= tau]


# Where neuron i's weights are, per family: input matrices in draw order (name, index of i -> slice), bias, output.
# Dense: rows(W) is W, or W.T for GPT-2's Conv1D. All names relative to block l.
DENSE = {
    "llama": dict(block="model.layers.{l}.mlp.", ins=["gate_proj.weight", "up_proj.weight"], bias=[], out="down_proj.weight", t=False),
    "gpt2": dict(block="transformer.h.{l}.mlp.", ins=["c_fc.weight"], bias=["c_fc.bias"], out="c_proj.weight", t=True),
    "gpt_neox": dict(block="gpt_neox.layers.{l}.mlp.", ins=["dense_h_to_4h.weight"], bias=["dense_h_to_4h.bias"],
                     out="dense_4h_to_h.weight", t=False),
}


def reference_dense(state, family, l, idx, gen, std):
    """The expected state after recycling `idx` of layer l: input rows from the generator, bias 0, output column 0."""
    spec = DENSE[family]
    pre = spec["block"].format(l=l)
    for name in spec["ins"]:
        w = state[pre + name]
        rows = w.t() if spec["t"] else w
        draws = torch.randn(len(idx), rows.shape[1], generator=gen) * std
        for k, i in enumerate(idx):
            rows[i] = draws[k]
    for name in spec["bias"]:
        state[pre + name][idx] = 0
    out = state[pre + spec["out"]]
    if spec["t"]:
        out[idx, :] = 0  # Conv1D [m, d]: row i is memory vector i
    else:
        out[:, idx] = 0  # Linear [d, m]: column i


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_redo_dense_matches_reference_and_changes_nothing_else(family):
    model = tiny_model(family)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)  # non-zero biases, so that "bias entry set to 0" is checked
    original = copy.deepcopy(model.state_dict())
    cbar = torch.rand(2, 24, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.05
    cbar[0, 5] = 0.0  # a dead neuron: score 0, recycled at any τ >= 0
    tau, std = 0.6, 0.05
    done = redo(model, cbar, tau, init_std=std, generator=torch.Generator().manual_seed(7))
    expect = copy.deepcopy(original)
    gen = torch.Generator().manual_seed(7)
    for l in range(2):
        idx = ref_dormant(cbar[l].tolist(), [(0, 24)], tau)
        assert done.layers[l].neurons == idx and idx
        reference_dense(expect, family, l, idx, gen, std)
    assert 5 in done.layers[0].neurons
    state = model.state_dict()
    for name in original:
        assert torch.equal(state[name], expect[name]), name  # exact: the same draws, nothing outside the rows/columns
    js = done.to_json()
    assert js[0]["output_norm_after"] == 0.0 and js[0]["input_norm_before"] > 0


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe"])
def test_redo_moe_scores_within_each_expert(family):
    from kentropy.models.registry import find_layout

    model = build(family)
    layout = find_layout(model)
    original = copy.deepcopy(model.state_dict())
    g = torch.Generator().manual_seed(5)
    cbar = [torch.rand(n, generator=g, dtype=torch.float64) + 0.05 for n in layout.sizes]
    moe_l = next(l for l, layer in enumerate(layout.layers) if layer.moe)
    E, m = 4, layout.layers[moe_l].expert_dim
    cbar[moe_l][m : 2 * m] *= 100  # expert 1 used 100x more: within-expert scores are unchanged by that
    cbar[moe_l][2 * m : 3 * m] = 0  # expert 2: no token routed, no score: never recycled
    tau, std = 0.7, 0.05
    done = redo(model, cbar, tau, init_std=std, generator=torch.Generator().manual_seed(9))
    expect = copy.deepcopy(original)
    gen = torch.Generator().manual_seed(9)
    for l, layer in enumerate(layout.layers):
        if not layer.moe:  # qwen2_moe's dense layer 0 (mlp_only_layers)
            idx = ref_dormant(cbar[l].tolist(), [(0, layer.size)], tau)
            assert done.layers[l].neurons == idx
            reference_dense(expect, "llama", l, idx, gen, std)
            continue
        groups = [(e * m, m) for e in range(E)] + ([(E * m, layer.shared.size)] if layer.shared is not None else [])
        idx = ref_dormant(cbar[l].tolist(), groups, tau)
        assert done.layers[l].neurons == idx
        if l == moe_l:
            assert not [i for i in idx if 2 * m <= i < 3 * m]  # the unrouted expert
            assert [i - m for i in idx if m <= i < 2 * m] == ref_dormant(cbar[l][m : 2 * m].tolist(), [(0, m)], tau)
        pre = f"model.layers.{l}.mlp."
        routed = [i for i in idx if i < E * m]
        gu, down = expect[pre + "experts.gate_up_proj"], expect[pre + "experts.down_proj"]  # [E, 2m, h], [E, h, m]
        for half in (0, 1):  # gate rows, then up rows
            draws = torch.randn(len(routed), gu.shape[2], generator=gen) * std
            for k, i in enumerate(routed):
                gu[i // m, half * m + i % m] = draws[k]
        for i in routed:
            down[i // m, :, i % m] = 0
        if layer.shared is not None:
            shared = [i - E * m for i in idx if i >= E * m]
            assert shared
            sp = pre + "shared_expert."
            for name in ("gate_proj.weight", "up_proj.weight"):
                draws = torch.randn(len(shared), expect[sp + name].shape[1], generator=gen) * std
                for k, i in enumerate(shared):
                    expect[sp + name][i] = draws[k]
            expect[sp + "down_proj.weight"][:, shared] = 0
    state = model.state_dict()
    for name in original:
        assert torch.equal(state[name], expect[name]), name


def test_redo_fused_gate_up_reinitialises_both_halves():
    model = build("phi3")
    original = copy.deepcopy(model.state_dict())
    cbar = torch.rand(2, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.05
    done = redo(model, cbar, 0.5, init_std=0.02, generator=torch.Generator().manual_seed(2))
    expect = copy.deepcopy(original)
    gen = torch.Generator().manual_seed(2)
    for l in range(2):
        idx = ref_dormant(cbar[l].tolist(), [(0, 24)], 0.5)
        assert done.layers[l].neurons == idx
        w = expect[f"model.layers.{l}.mlp.gate_up_proj.weight"]  # [2m, h]: [gate | up]
        for half in (0, 1):
            draws = torch.randn(len(idx), w.shape[1], generator=gen) * 0.02
            for k, i in enumerate(idx):
                w[half * 24 + i] = draws[k]
        expect[f"model.layers.{l}.mlp.down_proj.weight"][:, idx] = 0
    for name, t in model.state_dict().items():
        assert torch.equal(t, expect[name]), name


def test_redo_leaves_outputs_of_the_rest_unchanged():
    """Zeroed memory vectors: the recycled model computes what the original computes without those neurons."""
    model = tiny_model("llama")
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    cbar = torch.rand(2, 24, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 0.05
    ref = copy.deepcopy(model)
    done = redo(model, cbar, 0.5)
    with torch.no_grad():
        for l, x in enumerate(done.layers):
            ref.model.layers[l].mlp.down_proj.weight[:, x.neurons] = 0
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-5)


def test_redo_threshold_selecting_none_or_every_neuron_is_refused():
    model = tiny_model("llama")
    cbar = torch.rand(2, 24, dtype=torch.float64) + 0.5
    with pytest.raises(KentropyError, match="^threshold=0.0: selects no neuron"):
        select(model, cbar, 0.0)
    with pytest.raises(KentropyError, match="^threshold=100.0: selects every neuron of layer 0"):
        select(model, cbar, 100.0)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(KentropyError, match=f"^threshold={bad}: must be a finite number >= 0"):
            select(model, cbar, bad)
    with pytest.raises(KentropyError, match=r"^coefficients: shape \(3, 24\)"):
        select(model, torch.rand(3, 24), 0.5)
    nan = cbar.clone()
    nan[1, 2] = float("inf")
    with pytest.raises(KentropyError, match="^coefficients: layer 1 holds NaN or infinite values"):
        redo(model, nan, 0.5)


def test_redo_undefined_cases_are_one_line_errors():
    model = tiny_model("llama")
    cbar = torch.rand(2, 24, dtype=torch.float64) + 0.05
    mlp = model.model.layers[1].mlp
    mlp.up_proj.weight = torch.nn.Parameter(mlp.up_proj.weight.detach().round().to(torch.int8), requires_grad=False)  # quantized
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(KentropyError, match="^model: layer 1 has torch.int8 weights; ReDo re-initialises floating-point weights only"):
        redo(model, cbar, 0.6)
    assert all(torch.equal(t, before[k]) for k, t in model.state_dict().items())  # refused before any edit
    from types import SimpleNamespace

    from kentropy.edits.redo import init_std_of

    with pytest.raises(KentropyError, match="^init_std: not given, and SimpleNamespace's config has no initializer_range"):
        init_std_of(SimpleNamespace(config=SimpleNamespace()), None)  # a config without one (remote code)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(KentropyError, match=f"^init_std={bad}: must be a finite number > 0"):
            redo(model, cbar, 0.6, init_std=bad)
    assert init_std_of(SimpleNamespace(config=SimpleNamespace()), 0.01) == 0.01


def test_library_errors_name_the_flags_on_the_command_path():
    """The edits name their arguments (`ArgumentError`); on the command path the same error names the flag (or the
    positional argument); a name that is no field of the command's config stays as it is."""
    from dataclasses import dataclass

    from kentropy.errors import ArgumentError
    from kentropy.runtime.options import as_flag, option

    @dataclass
    class Cfg:
        model: str = option(help="", argument=True)
        init_std: float | None = option(None, "")

    cases = [(ArgumentError("init_std", "not given, and X's config has no initializer_range"), {},
              "--init-std: not given, and X's config has no initializer_range"),
             (ArgumentError("init_std", "must be a finite number > 0", -1.0), {}, "--init-std -1.0: must be a finite number > 0"),
             (ArgumentError("model", "layer 1 has torch.int8 weights"), {"model": "m"}, "MODEL m: layer 1 has torch.int8 weights"),
             (ArgumentError("init_stdx", "not a field"), {}, "init_stdx: not a field")]
    for raised, given, said in cases:
        assert str(as_flag(raised, Cfg, given)) == said


# ---- shrink and perturb ------------------------------------------------------------------------
EMBEDDINGS = ("embed_tokens", "wte", "wpe")


def is_weight_matrix(name, t, model):
    """dim >= 2, not an embedding, not an LM head tied to the embedding (an untied head is a weight matrix)."""
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return t.dim() >= 2 and not any(x in name for x in EMBEDDINGS) and not (tied and name == "lm_head.weight")


@pytest.mark.parametrize("family", ["llama", "gpt2", "olmoe"])
def test_shrink_with_zero_perturb_is_exactly_lambda_theta(family):
    model = tiny_model(family) if family != "olmoe" else build("olmoe")
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == (family == "gpt2")  # both cases
    original = {k: v.clone() for k, v in model.state_dict().items()}
    lam = 0.37
    rep = shrink_perturb(model, lam, 0.0, torch.Generator().manual_seed(0))
    changed = set()
    for name, t in model.state_dict().items():
        if is_weight_matrix(name, t, model):
            assert torch.equal(t, original[name] * lam), name
            changed.add(name)
        else:
            assert torch.equal(t, original[name]), name  # embeddings, norms, biases
    assert changed and {n for b in rep["layers"] for n in b["matrices"]} == changed
    assert all(b["norm_after"] == pytest.approx(lam * b["norm_before"]) for b in rep["layers"])


def test_shrink_perturb_draws_epsilon_from_the_init():
    model = tiny_model("gpt2")
    original = {k: v.clone() for k, v in model.named_parameters()}
    shrink_perturb(model, 0.5, 0.3, torch.Generator().manual_seed(11))
    gen = torch.Generator().manual_seed(11)
    std = model.config.initializer_range
    for name, p in model.named_parameters():  # parameter order, one draw per matrix
        if is_weight_matrix(name, p, model):
            eps = torch.randn(p.shape, generator=gen) * std
            assert torch.allclose(p, 0.5 * original[name] + 0.3 * eps, atol=1e-7), name
        else:
            assert torch.equal(p, original[name]), name


# ---- the command -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def docs(sample_texts, tmp_path_factory):
    p = tmp_path_factory.mktemp("iv") / "docs.txt"
    p.write_text("\n".join(sample_texts[:8]) + "\n")
    return p


def test_cli_redo_writes_model_and_report(model_dir, docs, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    src, out = model_dir("gpt2"), tmp_path / "redo"
    code, stdout, err = run_cli(capsys, "intervene", src, "--method", "redo", "--threshold", 0.5, "--data", docs, "--seq-len", 32,
                                "--seed", 3, "--out", out)
    assert code == 0, err
    rep = json.loads((out / "intervention.json").read_text())
    assert {"method", "params", "layers", "knowledge_entropy_before", "knowledge_entropy_after"} <= set(rep)
    assert rep["method"] == "redo" and rep["params"]["threshold"] == 0.5 and rep["params"]["seed"] == 3
    assert [x["layer"] for x in rep["layers"]] == [0, 1] and sum(len(x["neurons"]) for x in rep["layers"]) > 0
    # only the recycled rows and columns changed
    m, ref = AutoModelForCausalLM.from_pretrained(out), AutoModelForCausalLM.from_pretrained(src)
    for l, x in enumerate(rep["layers"]):
        keep = [i for i in range(24) if i not in x["neurons"]]
        fc, fc0 = m.transformer.h[l].mlp.c_fc.weight, ref.transformer.h[l].mlp.c_fc.weight
        assert torch.equal(fc[:, keep], fc0[:, keep])
        assert not x["neurons"] or not torch.equal(fc[:, x["neurons"]], fc0[:, x["neurons"]])
        assert torch.equal(m.transformer.h[l].mlp.c_proj.weight[x["neurons"]], torch.zeros(len(x["neurons"]), 16))
    # "after" is the saved model's H on the same documents
    code, _, err = run_cli(capsys, "measure", out, "--data", docs, "--seq-len", 32, "--out", tmp_path / "m.json")
    assert code == 0, err
    again = json.loads((tmp_path / "m.json").read_text())["results"][0]["knowledge_entropy"]
    assert again == pytest.approx(rep["knowledge_entropy_after"], rel=1e-6)
    assert rep["knowledge_entropy_before"] != rep["knowledge_entropy_after"]
    assert (out / "tokenizer.json").exists() and "redo on" in stdout


def test_cli_shrink_perturb_without_data_and_resuscitate(model_dir, docs, tmp_path, capsys):
    src = model_dir("llama")
    code, _, err = run_cli(capsys, "intervene", src, "--method", "shrink-perturb", "--shrink", 0.8, "--perturb", 0.1, "--seed", 1,
                           "--out", tmp_path / "sp")
    assert code == 0, err
    rep = json.loads((tmp_path / "sp" / "intervention.json").read_text())
    assert rep["knowledge_entropy_before"] is None and rep["knowledge_entropy_after"] is None  # no --data: not measured
    assert rep["params"] == {"shrink": 0.8, "perturb": 0.1, "init_std": 0.02, "epsilon": "N(0, 0.02^2) elementwise", "seed": 1}
    assert all(b["neurons"] is None and b["matrices"] for b in rep["layers"])
    code, _, err = run_cli(capsys, "intervene", src, "--method", "resuscitate", "--ratio", 0.5, "--amplify", 2, "--data", docs,
                           "--seq-len", 32, "--out", tmp_path / "rs")
    assert code == 0, err
    rep = json.loads((tmp_path / "rs" / "intervention.json").read_text())
    assert rep["knowledge_entropy_after"] > rep["knowledge_entropy_before"]
    assert all(len(x["neurons"]) == x["neurons_scaled"] > 0 for x in rep["layers"])


# ---- bad input: one error line, before any output -----------------------------------------------
@pytest.fixture(scope="module")
def env(model_dir, docs, tmp_path_factory):
    d = tmp_path_factory.mktemp("iv-bad")
    save_file({f"layers.{l}": torch.rand(24, dtype=torch.float64) + 0.5 for l in range(2)}, str(d / "coef.safetensors"))
    save_file({f"layers.{l}": torch.rand(20, dtype=torch.float64) + 0.5 for l in range(2)}, str(d / "coef20.safetensors"))
    return {"model": model_dir("llama"), "docs": docs, "coef": d / "coef.safetensors", "coef20": d / "coef20.safetensors"}


def iv(e, out, method, *extra, src=None):
    src = ["--coefficients", e["coef"]] if src is None else src
    return ["intervene", e["model"], "--method", method, *src, *extra, "--out", out]


def _file_at(w):
    (w / "o").write_text("a user's file")
    return w / "o"


def _full_dir(w):
    (w / "o").mkdir()
    (w / "o" / "keep.txt").write_text("a user's file")
    return w / "o"


CASES = {
    "threshold-selects-none": (lambda e, w: iv(e, w / "o", "redo", "--threshold", 0), "error: --threshold 0.0: selects no neuron"),
    "threshold-selects-all": (lambda e, w: iv(e, w / "o", "redo", "--threshold", 50), "error: --threshold 50.0: selects every neuron"),
    "coefficients-of-another-model": (lambda e, w: iv(e, w / "o", "redo", "--threshold", 0.5, src=["--coefficients", e["coef20"]]),
                                      "coef20.safetensors: shape (2, 20); the model needs 2 layers of [24, 24]"),
    "resuscitate-coefficients-of-another-model": (lambda e, w: iv(e, w / "o", "resuscitate", "--ratio", 0.5, "--amplify", 1,
                                                                  src=["--coefficients", e["coef20"]]), "coef20.safetensors: shape (2, 20)"),
    "threshold-negative": (lambda e, w: iv(e, w / "o", "redo", "--threshold", -0.5), "error: --threshold -0.5: must be"),
    "threshold-nan": (lambda e, w: iv(e, w / "o", "redo", "--threshold", "nan"), "error: --threshold nan: must be"),
    "threshold-missing": (lambda e, w: iv(e, w / "o", "redo"), "needs --threshold"),
    "redo-no-cbar": (lambda e, w: iv(e, w / "o", "redo", "--threshold", 0.5, src=[]), "give --data DATA or --coefficients"),
    "init-std-negative": (lambda e, w: iv(e, w / "o", "redo", "--threshold", 0.5, "--init-std", -1), "--init-std -1"),
    "init-std-0": (lambda e, w: iv(e, w / "o", "redo", "--threshold", 0.5, "--init-std", 0), "--init-std 0"),
    "seed-negative": (lambda e, w: iv(e, w / "o", "redo", "--threshold", 0.5, "--seed", -1), "--seed -1"),
    "shrink-0": (lambda e, w: iv(e, w / "o", "shrink-perturb", "--shrink", 0, "--perturb", 0.1, src=[]), "error: --shrink 0.0: must be"),
    "shrink-above-1": (lambda e, w: iv(e, w / "o", "shrink-perturb", "--shrink", 1.5, "--perturb", 0.1, src=[]), "--shrink 1.5"),
    "shrink-nan": (lambda e, w: iv(e, w / "o", "shrink-perturb", "--shrink", "nan", "--perturb", 0.1, src=[]), "--shrink nan"),
    "perturb-negative": (lambda e, w: iv(e, w / "o", "shrink-perturb", "--shrink", 0.5, "--perturb", -0.1, src=[]), "error: --perturb -0.1: must be"),
    "shrink-perturb-coefficients": (lambda e, w: iv(e, w / "o", "shrink-perturb", "--shrink", 0.5, "--perturb", 0), "--coefficients"),
    "option-of-another-method": (lambda e, w: iv(e, w / "o", "redo", "--threshold", 0.5, "--shrink", 0.5), "--shrink is an option of"),
    "unknown-method": (lambda e, w: iv(e, w / "o", "prune"), "--method prune"),
    "ratio-out-of-range": (lambda e, w: iv(e, w / "o", "resuscitate", "--ratio", 1.5, "--amplify", 1), "error: --ratio 1.5: must be"),
    "out-is-a-file": (lambda e, w: iv(e, _file_at(w), "redo", "--threshold", 0.5), "exists and is not a directory"),
    "out-not-empty": (lambda e, w: iv(e, _full_dir(w), "redo", "--threshold", 0.5), "use --overwrite"),
    "data-missing": (lambda e, w: iv(e, w / "o", "redo", "--threshold", 0.5, src=["--data", w / "none.txt"]), "none.txt"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, env, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    build_argv, names = CASES[case]
    argv = build_argv(env, work)
    before = {str(p): (p.read_bytes() if p.is_file() else None) for p in sorted(work.rglob("*"))}
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert names in errors[0], errors[0]
    assert {str(p): (p.read_bytes() if p.is_file() else None) for p in sorted(work.rglob("*"))} == before
