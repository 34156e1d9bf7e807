"""The decay study: the norm x FFN cells and their parameters, OLMo's block and init, saves at the plan's steps, the
preset's plan, config errors, and the study end to end at smoke size (the contract)."""

import math

import pytest
import torch

from kentropy.errors import KentropyError
from kentropy.lab.architectures import build_model
from kentropy.lab.config import Arm, decay_config
from kentropy.lab.regime import olmo_1b_regime, regime


class Tok:
    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2


def non_embedding_parameters(model) -> int:
    """Parameters outside the token embeddings and the LM head (tied or not), counted on the built model."""
    skip = {id(p) for p in model.get_input_embeddings().parameters()}
    head = model.get_output_embeddings()
    if head is not None:
        skip |= {id(p) for p in head.parameters()}
    return sum(p.numel() for p in dict.fromkeys(model.parameters()) if id(p) not in skip)


def build(arch, init="hf", norm="rmsnorm", **kw):
    c = dict(vocab=512, hidden=48, layers=2, heads=3, gated_ffn=128, positions=64, tie=True, tok=Tok)
    c.update(kw)
    return build_model(arch, init, 0, norm=norm, **c)


CELLS = [("swiglu", "layernorm", "OlmoForCausalLM"), ("swiglu", "rmsnorm", "LlamaForCausalLM"),
         ("gelu", "rmsnorm", "ArceeForCausalLM"), ("gelu", "layernorm", "NemotronForCausalLM")]


@pytest.mark.parametrize("arch, norm, cls", CELLS)
def test_factorial_cells_count_their_parameters(arch, norm, cls):
    model = build(arch, norm=norm)
    arm = Arm(arch=arch, norm=norm, hidden=48, layers=2, heads=3, ffn=128)
    assert type(model).__name__ == cls and arm.family == cls[: -len("ForCausalLM")].lower()
    assert non_embedding_parameters(model) == arm.non_embedding_parameters()
    emb = model.get_input_embeddings().weight.numel()
    assert non_embedding_parameters(model) == sum(p.numel() for p in model.parameters()) - emb  # tied head counted once
    mlp = model.model.layers[0].mlp
    assert hasattr(mlp, "gate_proj") == (arch == "swiglu") and mlp.up_proj.out_features == 128  # equal m in every cell
    assert model.config.hidden_act == {"swiglu": "silu", "gelu": "gelu"}[arch]
    from kentropy.models.registry import find_layout

    assert len(find_layout(model).layers) == 2  # the FFN registry finds every cell


def test_every_norm_starts_as_a_plain_normalization():
    """At init every cell's norm is (x − mean)/std (LayerNorm) or x/rms (RMSNorm) with gain 1 and no shift:
    Nemotron's LayerNorm1P (gain stored as weight + 1) starts at OLMo's non-parametric LayerNorm."""
    x = torch.randn(3, 48)
    ln = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    rms = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    for arch, norm, _ in CELLS:
        got = build(arch, norm=norm).model.layers[0].input_layernorm(x)
        assert torch.allclose(got, ln if norm == "layernorm" else rms, atol=1e-5), (arch, norm)


def test_reference_is_olmos_block():
    ref = Arm()
    assert (ref.arch, ref.norm, ref.init, ref.family) == ("swiglu", "layernorm", "mitchell", "olmo")
    assert not any(p.requires_grad for p in build("swiglu", norm="layernorm").model.norm.parameters())  # non-parametric


def test_arm_changes_are_derived_from_the_config():
    from kentropy.lab.config import arm_changes, changes_text

    ch = arm_changes(Arm(), Arm(arch="gelu"))
    assert ch["fields"] == {"arch": {"reference": "swiglu", "arm": "gelu"}}
    assert ch["derived"]["family"] == {"reference": "olmo", "arm": "nemotron"}
    assert ch["derived"]["non_embedding_parameters"]["arm"] == Arm(arch="gelu").non_embedding_parameters()
    assert "ffn_dim" not in ch["derived"] and "arch swiglu -> gelu" in changes_text(ch)
    assert arm_changes(Arm(), Arm()) == {"fields": {}, "derived": {}}


def test_mitchell_init_is_olmos():
    model = build("swiglu", "mitchell", hidden=64, heads=4, gated_ffn=256, vocab=2048)
    d, m = 64, 256
    expect = {"model.embed_tokens.weight": 1 / math.sqrt(d), "model.layers.0.self_attn.q_proj.weight": 1 / math.sqrt(d),
              "model.layers.1.mlp.up_proj.weight": 1 / math.sqrt(d),
              "model.layers.0.self_attn.o_proj.weight": 1 / math.sqrt(2 * d * 1),
              "model.layers.1.self_attn.o_proj.weight": 1 / math.sqrt(2 * d * 2),
              "model.layers.1.mlp.down_proj.weight": 1 / math.sqrt(2 * m * 2)}
    params = dict(model.named_parameters())
    for name, std in expect.items():
        w = params[name]
        assert w.abs().max() <= 3 * std + 1e-7, name  # truncated at 3 std
        # a normal truncated at 3 std has std 0.9866 of the untruncated one
        assert w.std().item() == pytest.approx(0.9866 * std, rel=0.08), name
    assert torch.equal(params["model.norm.weight"], torch.ones(d))
    hf = build("swiglu", "hf", hidden=64, heads=4, gated_ffn=256, vocab=2048)
    assert dict(hf.named_parameters())["model.layers.1.mlp.down_proj.weight"].std().item() == pytest.approx(0.02, rel=0.08)


def test_regime_numbers_by_hand():
    arm = Arm(norm="rmsnorm", hidden=16, layers=1, heads=2, ffn=32, tokens_per_parameter=100, batch_size=2, seq_len=8, lr=1e-2,
              warmup=0.0, min_lr_ratio=0.1, weight_decay=0.5)
    n = 4 * 16 * 16 + 3 * 16 * 32 + 2 * 16 + 16  # attention, gated FFN, two RMSNorms, final norm
    assert arm.non_embedding_parameters() == n
    steps = round(100 * n / 16)
    r = regime(arm)
    assert r["steps"] == steps and r["tokens"] == steps * 16 and r["tokens_per_parameter"] == pytest.approx(steps * 16 / n)
    # OLMo's cosine to 0.1 lr at t = step + 1 over the run, no warmup
    lrs = [1e-3 + (1e-2 - 1e-3) * (1 + math.cos(math.pi * t / steps)) / 2 if t < steps else 1e-3 for t in range(1, steps + 1)]
    assert r["cumulative_weight_decay"] == pytest.approx(0.5 * sum(lrs))
    assert r["equilibrium_steps"] == pytest.approx(1 / (1e-2 * 0.5))
    o = olmo_1b_regime()
    assert 15 < o["cumulative_weight_decay"] < 17.5 and 2400 < o["tokens_per_parameter"] < 2700  # the issue's ~16 and ~2,600


def test_saves_hold_the_plans_steps_exactly():
    from kentropy.lab.judge.plan import contrast_steps
    from kentropy.lab.studies.decay import arm_saves

    d = decay_config({})
    arm = d.reference
    saves = arm_saves(arm, d)
    pairs = contrast_steps(d.analysis_plan(), arm.steps())
    assert pairs == {"end vs half": (round(arm.steps() / 2 + 1e-9), arm.steps()),
                     "end vs quarter": (math.floor(arm.steps() / 4 + 0.5), arm.steps())}
    assert {s for p in pairs.values() for s in p} <= set(saves) and saves[-1] == arm.steps()
    assert sum(s >= arm.steps() / 2 for s in saves) >= d.late_checkpoints  # the second half is linearly covered


@pytest.mark.parametrize("data, message", [
    ({"bogus": 1}, "unknown key"),
    ({"reference": {"widht": 3}}, "reference: unknown key"),
    ({"arms": {"x": {"lr2": 1}}}, "arms.x: unknown key"),
    ({"plan": {"contrasts": [], "primary": "x", "sesoi": 0.01, "alpha": 0.05}}, "decay: plan: contrasts must be"),
    ({"plan": {"contrasts": [{"name": "a", "from": 0.5, "to": 1.0}], "primary": "a", "sesoi": -1, "alpha": 0.05}},
     "plan: sesoi must be > 0"),
    ({"plan": {"contrasts": [{"name": "a", "from": 0.5, "to": 1.0}], "primary": "b", "sesoi": 0.01, "alpha": 0.05}},
     "plan: primary must name"),
    ({"arms": {"x": {"norm": "batchnorm"}}}, "norm 'batchnorm'"),
    ({"arms": {"x": {"world_fraction": 0}}}, "world_fraction must be in"),
    ({"reference": {"tokens_per_parameter": 500}}, "below the study's 1000"),
    ({"arms": {"short": {"tokens_per_parameter": 100}}}, "arm short: .* below the study's 300"),
    ({"arms": {"weak": {"weight_decay": 0.05}}}, "cumulative weight decay"),
    ({"arms": {"x": {"arch": "tanh"}}}, "arch 'tanh'"),
    ({"seeds": []}, "at least one seed"),
])
def test_bad_decay_config_names_the_field(data, message):
    with pytest.raises(KentropyError, match=message):
        decay_config(data, "lab-decay.yaml: decay")


def test_no_weight_decay_arm_is_exempt_from_the_decay_floor():
    cfg = decay_config({"arms": {"no weight decay": {"weight_decay": 0.0, "tokens_per_parameter": 300}}})
    assert regime(cfg.all_arms()["no weight decay"])["cumulative_weight_decay"] == 0.0


def test_presets_parse_and_the_decay_preset_holds_the_plan():
    from kentropy.lab.config import config_from_yaml, load_preset
    from kentropy.lab.judge.deviations import RULES
    from kentropy.lab.studies.decay import estimate_seconds, plan_text

    cfg = load_preset("decay")
    d = cfg.decay
    plan = d.analysis_plan()
    assert plan.to_json() == {"contrasts": [{"name": "end vs half", "from": 0.5, "to": 1.0},
                                            {"name": "end vs quarter", "from": 0.25, "to": 1.0}],
                              "primary": "end vs half", "sesoi": 0.01, "alpha": 0.05, "correction": "holm", "unit": "seed"}
    arms = d.all_arms()
    assert list(arms) == ["reference"]  # the other arms were cut to fit six seeds into the hour
    r = regime(arms["reference"])
    assert r["tokens_per_parameter"] >= 300 and r["cumulative_weight_decay"] >= 5  # the paper's regime
    assert all(len(d.seeds_of(n)) >= 6 for n in arms)  # a test across seeds can reach 0.05
    assert estimate_seconds(d) < 30 * 60  # training at today's speed leaves room for measuring and the loop
    text = plan_text(d)
    assert text.index("analysis plan") < text.index("reference") and "estimate" in text and "OLMo-1B" in text
    assert d.deviations and all(f"[lab] changed after a run was seen: {x}" in text for x in (*RULES, *d.deviations))
    assert any("7 -> 8" in x for x in d.deviations) and any("weight decay x4" in x for x in d.deviations)
    assert any("six seeds" in x and "cut" in x for x in d.deviations)
    assert any("against_floor" in x and "shift of preferences" in x for x in RULES)
    with pytest.raises(KentropyError, match="x.yaml: decay: deviations must list non-empty strings"):
        config_from_yaml("version: 1\ndecay: {deviations: ['']}\n", "x.yaml")
    assert load_preset("quick").decay is None
    with pytest.raises(KentropyError, match="x.yaml: decay: arms.bad: unknown key"):
        config_from_yaml("version: 1\ndecay: {arms: {bad: {depth: 3}}}\n", "x.yaml")
    with pytest.raises(KentropyError, match="unknown section"):
        config_from_yaml("version: 1\ndecya: {}\n", "x.yaml")


SMOKE_DECAY = """version: 1
lab: {entities: 300, tokenizer_vocab: 512, tokenizer_docs: 300, hidden: 32, layers: 2, heads: 2, ffn: 86,
      pretrain_seeds: [0], pretrain_tokens: 61440, seq_len: 384, batch_size: 4, checkpoints: 8, measure_docs: 24,
      continual_at: [1.0], continual_steps: 10,
      continual_batch: 8, injection_rounds: 2, knowledge_paraphrase: 2, knowledge_once: 2, tasks_per_kind: 12,
      resuscitate_amplify: [2.0], circuits: false}
decay:
  reference: {tokens_per_parameter: 6, batch_size: 8, seq_len: 64}
  arms: {GELU: {arch: gelu}}
  seeds: [0, 1]
  deviations: [a change made after a run was seen]
  early_checkpoints: 3
  late_checkpoints: 3
  measure_docs: 16
  bootstrap: 100
  workers: 1
  compile: false
  min_reference_tokens_per_parameter: 0
  min_tokens_per_parameter: 0
  min_cumulative_weight_decay: 0
"""


@pytest.mark.slow
def test_decay_study_smoke_end_to_end(tmp_path):
    """A smoke-sized study through the lab recipe: the contract fields of `decay_study.arms`, numbers from the
    stages, a report section, and closing the loop from the arm that decays (if any)."""
    import json

    from kentropy.lab.config import config_from_yaml
    from kentropy.lab.pipeline import run_lab

    cfg = config_from_yaml(SMOKE_DECAY, "smoke-decay.yaml")
    out = tmp_path / "lab"
    results = run_lab(cfg, str(out), "cpu", "smoke-decay")
    study = results["decay_study"]
    assert study["plan"] == cfg.decay.analysis_plan().to_json() and study["plan"]["primary"] == "end vs half"
    assert study["deviations"] == ["a change made after a run was seen"]
    assert results["deviations"][-1] == "a change made after a run was seen" and len(results["deviations"]) > 1
    assert study["paper_reference"]["delta_kl_per_layer"] == pytest.approx(0.03125) and study["paper_reference"]["second_half_share"] is None
    # the gates, per finding, before any verdict; the loop did not run, so its findings are not measurable
    assert set(study["gates"]) == {"1", "2c", "2d", "2e", "3a", "3b"}
    assert all({"knowledge", "power", "manipulation"} <= set(g) for g in study["gates"].values())
    assert all(isinstance(x["passed"], bool) for g in study["gates"].values() for x in g.values())
    assert [r["finding"] for r in study["testable"]] == ["1", "2c", "2d", "2e", "3a", "3b"]
    assert study["testable"][0]["testable"] and not any(r["testable"] for r in study["testable"][1:])
    assert [a["name"] for a in study["arms"]] == ["reference", "GELU"]
    for a in study["arms"]:
        assert {"name", "changes", "layers", "ffn_dim", "seeds", "contrasts", "verdict", "diagnostics", "effect",
                "steps", "knowledge_entropy", "knowledge_entropy_ci"} <= set(a)
        assert [s["seed"] for s in a["seeds"]] == [0, 1]
        for s in a["seeds"]:
            assert set(s) == {"seed", "steps", "knowledge_entropy", "knowledge_entropy_per_layer", "loss"}
            assert len(s["knowledge_entropy"]) == len(s["steps"]) == len(s["loss"]) == len(s["knowledge_entropy_per_layer"])
            assert s["loss"][0] is None and all(x > 0 for x in s["loss"][1:])
            assert all(len(h) == a["layers"] for h in s["knowledge_entropy_per_layer"])
        assert [c["name"] for c in a["contrasts"]] == ["end vs half", "end vs quarter"]
        for c in a["contrasts"]:
            # the contract: per_seed = (H[from_step] − H[to_step]) / layers from each seed's knowledge_entropy
            want = [(s["knowledge_entropy"][s["steps"].index(c["from_step"])] - s["knowledge_entropy"][s["steps"].index(c["to_step"])])
                    / a["layers"] for s in a["seeds"]]
            assert c["per_seed"] == pytest.approx(want, abs=1e-12) and c["to_step"] == a["steps"][-1]
            assert c["mean"] == pytest.approx(sum(want) / 2) and c["ci"][0] <= c["mean"] <= c["ci"][1]
            assert c["verdict"] in ("decayed", "decayed, at least the SESOI", "no decay", "rose", "inconclusive")
            assert all(c[t + "_adjusted"] >= c[t] for t in ("p_direction", "p_minimum_effect", "p_equivalence"))
            last = [s["knowledge_entropy_per_layer"][s["steps"].index(c["from_step"])][-1]
                    - s["knowledge_entropy_per_layer"][s["steps"].index(c["to_step"])][-1] for s in a["seeds"]]
            assert c["last_layer"]["per_seed"] == pytest.approx(last, abs=1e-12)
        assert a["verdict"] == a["contrasts"][0]["verdict"]
        assert a["effect"]["relation"] in ("a rise or no change", "within OLMo-1B's whole-run range", "beyond OLMo-1B's whole-run bound")
        d = a["diagnostics"]
        assert d["steps"] == a["steps"] and len(d["per_seed"]) == 2
        for k in ("kl_to_uniform", "top1_share", "top5_share", "dormant_fraction", "max_over_median", "first_position_share",
                  "weight_norm_cv"):
            assert len(d["mean"][k]) == len(a["steps"]) and len(d["mean"][k][-1]) == a["layers"]
        # KL_l = ln m − H_l of the headline series, per seed
        s0 = a["seeds"][0]
        assert d["per_seed"][0]["kl_to_uniform"][-1] == pytest.approx(
            [math.log(a["ffn_dim"]) - h for h in s0["knowledge_entropy_per_layer"][-1]], abs=1e-6)
        assert all(lo <= h <= hi for h, (lo, hi) in zip(a["knowledge_entropy"], a["knowledge_entropy_ci"]))
    assert study["arms"][1]["changes"]["fields"] == {"arch": {"reference": "swiglu", "arm": "gelu"}}
    # the headline numbers are the mean over seeds of what each measure stage wrote
    meas = sorted(out.glob("stages/decay-reference-seed*-measure-*/result.json"))
    per_seed = [[r["knowledge_entropy"] for r in json.loads(p.read_text())["series"]["seen"]["results"]] for p in meas]
    assert study["arms"][0]["knowledge_entropy"] == pytest.approx([sum(x) / 2 for x in zip(*per_seed)])
    loop = study["loop"]
    # the loop's rows are the reference's 64 pretraining positions: its passages (>= 7 facts) do not fit, so it does not run
    assert loop["continual"]["seq_len"] == 64 and loop["note"].startswith("not run")
    report = (out / "report.md").read_text()
    assert "## The decay study" in report and "analysis plan" in report and "OLMo-1B" in report
    assert "**Changed after a run was seen** (the plan above was not): a change made after a run was seen" in report
    assert report.index("## What this design can test") < report.index("The decay study (its gates") < report.index("## Findings")
    assert "Closing the loop" in report
    assert (out / "figures" / "decay_study.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figures" / "decay_diagnostics.png").read_bytes()[:4] == b"\x89PNG"


def test_loss_beside_h_and_the_estimate_by_hand():
    from kentropy.lab.studies.decay import checkpoint_loss, estimate_seconds

    log = [(s, float(s)) for s in range(30)]  # the loss of 0-based optimizer step s is s
    assert checkpoint_loss(log, 0) is None  # the initialization has no training loss
    assert checkpoint_loss(log, 3) == pytest.approx((0 + 1 + 2) / 3)  # steps 0..2 come before checkpoint 3
    assert checkpoint_loss(log, 25) == pytest.approx(sum(range(15, 25)) / 10)  # the last 10 steps
    d = decay_config({"seeds": [0, 1, 2], "workers": 2, "tokens_per_second": 1000.0})
    assert estimate_seconds(d) == pytest.approx(regime(d.reference)["tokens"] * 3 / 2000)


def test_the_loops_knowledge_is_generated_before_any_pretraining(tmp_path, monkeypatch):
    """A loop whose knowledge cannot be generated (or is refused) stops the study before its first pretraining run."""
    from kentropy.lab.cache import Stages
    from kentropy.lab.config import config_from_yaml
    from kentropy.lab.studies import decay

    def refuse(stages, cfg, dcfg):
        raise KentropyError("facts 7: too few for the probes of a person entry (its compositions need more facts)")

    monkeypatch.setattr(decay, "loop_world", refuse)
    cfg = config_from_yaml(SMOKE_DECAY, "smoke-decay.yaml")
    stages = Stages(tmp_path)
    with pytest.raises(KentropyError, match="facts 7"):
        decay.run_decay_study(stages, cfg, cfg.decay, "cpu")
    made = [p.name for p in (tmp_path / "stages").iterdir()]
    assert any(n.startswith("decay-corpora") for n in made) and not any("pretrain" in n for n in made)


def test_lab_summary_prints_what_could_be_tested_first():
    from kentropy.cli.app import lab_summary
    from kentropy.lab.judge.paper import compare_to_paper

    rows = [{"finding": "1", "title": "Knowledge entropy decays during pretraining", "testable": False,
             "why": "not in the paper's regime", "verdict": "not measurable"},
            {"finding": "2e", "title": "The raw probe gain follows it (slope of ΔP on H)", "testable": True, "why": None,
             "verdict": "inconclusive"}]
    arm = {"name": "reference", "tokens_per_parameter": 600.0, "verdict": "decayed", "effect": compare_to_paper(0.0078, 2, 86)}
    decay = {"arms": [arm], "testable": [dict(rows[1], finding="2c")]}
    text = lab_summary({"testable": rows, "decay_study": decay, "timings": {"a": {"seconds": 2.0}}}, "lab", "decay")
    lines = text.splitlines()
    assert lines[1] == "  decay study:" and lines[2].startswith("    2c ") and "testable: yes; inconclusive" in lines[2]
    assert lines[4] == "  core study (the decay study's scaffolding):"
    assert lines[5].startswith("  1   Knowledge entropy decays") and "testable: no (not in the paper's regime); not measurable" in lines[5]
    line = next(x for x in lines if "arm reference" in x)
    assert "600 tokens/param: decayed (ΔKL +0.0078 nats per layer" in line and "within OLMo-1B's whole-run range" in line
    assert lines[-1] == "  total stage time 2 s; report: lab/report.md"
    demo = lab_summary({"testable": rows, "timings": {}}, "demo", "quick")
    assert "testable: no (not in the paper's regime); not measurable in the demo (make decay)" in demo
