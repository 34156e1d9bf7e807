"""The decay study: arms and their regime numbers, OLMo's init, log-spaced checkpoints, verdicts, config errors."""

import math

import pytest
import torch

from kentropy.errors import KentropyError
from kentropy.lab.architectures import build_model
from kentropy.lab.config import Arm, decay_config
from kentropy.lab.judge.trajectory import combine_seeds, summarize_run
from kentropy.lab.judge.trajectory import trajectory_verdict as verdict
from kentropy.lab.regime import log_spaced_steps, olmo_1b_regime, regime


class Tok:
    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2


def non_embedding_parameters(model) -> int:
    """Parameters outside the token embeddings and the LM head (tied or not), counted on the built model."""
    skip = {id(p) for p in model.get_input_embeddings().parameters()}
    head = model.get_output_embeddings()
    if head is not None:
        skip |= {id(p) for p in head.parameters()}
    return sum(p.numel() for p in dict.fromkeys(model.parameters()) if id(p) not in skip)


def build(arch, init="hf", **kw):
    c = dict(vocab=512, hidden=48, layers=2, heads=3, gated_ffn=128, positions=64, tie=True, tok=Tok)
    c.update(kw)
    return build_model(arch, init, 0, **c)


@pytest.mark.parametrize("arch", ["swiglu", "reglu", "gelu", "relu"])
def test_arms_count_their_parameters(arch):
    model = build(arch)
    arm = Arm(arch=arch, hidden=48, layers=2, heads=3, ffn=128)
    assert non_embedding_parameters(model) == arm.non_embedding_parameters()
    emb = model.get_input_embeddings().weight.numel()
    assert non_embedding_parameters(model) == sum(p.numel() for p in model.parameters()) - emb  # tied head counted once
    mlp = model.model.layers[0].mlp
    assert hasattr(mlp, "gate_proj") == (arch in ("swiglu", "reglu"))
    assert mlp.up_proj.out_features == (128 if arch in ("swiglu", "reglu") else 192)  # plain: 1.5 x, equal parameters
    assert model.config.hidden_act == {"swiglu": "silu", "reglu": "relu", "gelu": "gelu", "relu": "relu"}[arch]


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
    arm = Arm(hidden=16, layers=1, heads=2, ffn=32, tokens_per_parameter=100, batch_size=2, seq_len=8, lr=1e-2,
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


def test_log_spaced_steps():
    s = log_spaced_steps(27000, 540, 14)
    assert len(s) >= 14 and s[-1] == 27000 and s == sorted(set(s)) and s[0] == 135
    ratios = [b / a for a, b in zip(s, s[1:])]
    assert max(ratios) / min(ratios) < 1.1  # evenly spaced in log
    assert len(log_spaced_steps(40, 0, 12)) >= 12


def run(h, change_ci=None, steps=(0, 10, 20, 40, 80)):
    draws = torch.tensor(h, dtype=torch.float64)[:, None] + torch.linspace(-0.01, 0.01, 101, dtype=torch.float64)[None, :]
    return summarize_run(list(steps), draws, list(h), warmup_steps=10)


def test_peak_after_warmup_and_verdicts():
    r = run([9.0, 9.9, 9.5, 9.4, 9.3])  # step 0 and warmup excluded; peak at step 10 (= warmup end)
    assert r["peak_step"] == 10 and r["change"] == pytest.approx(-0.6) and r["change_ci"][1] < 0
    assert run([9.95, 8.0, 9.5, 9.4, 9.3])["peak_step"] == 20  # the init's high entropy is not a peak
    rising = run([9.0, 9.1, 9.2, 9.3, 9.4])
    assert rising["peak_step"] == 80 and rising["change"] == 0.0
    assert verdict([r, r]) == "held" and verdict([r, rising]) == "did not hold"
    noisy = dict(r, change_ci=[-0.7, 0.05])
    assert verdict([r, noisy]) == "direction only"
    # a plateau: recovers 1.0 from its collapse, then loses 0.02 with a tight interval: a wiggle, not a decay
    plateau = run([9.0, 8.0, 8.5, 9.0, 8.98])
    assert plateau["collapse_step"] == 10 and plateau["peak_step"] == 40 and plateau["change_ci"][1] < 0
    assert plateau["share_lost"] == pytest.approx(0.02) and verdict([plateau]) == "did not hold"
    assert run([9.0, 8.0, 8.5, 9.0, 8.8])["share_lost"] == pytest.approx(0.2) and verdict([run([9.0, 8.0, 8.5, 9.0, 8.8])]) == "held"
    both = combine_seeds([r, run([9.0, 9.7, 9.6, 9.5, 9.1])], [torch.zeros(5, 8), torch.ones(5, 8)])
    assert both["knowledge_entropy"][1] == pytest.approx(9.8) and both["knowledge_entropy_seed_ci"][1][0] < 9.8


@pytest.mark.parametrize("data, message", [
    ({"bogus": 1}, "unknown key"),
    ({"reference": {"widht": 3}}, "reference: unknown key"),
    ({"arms": {"x": {"lr2": 1}}}, "arms.x: unknown key"),
    ({"checkpoints": 5}, "at least 12"),
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


def test_presets_parse_and_the_decay_preset_promises_the_regime():
    from kentropy.lab.config import config_from_yaml, load_preset
    from kentropy.lab.studies.decay import plan_text

    cfg = load_preset("decay")
    d = cfg.decay
    arms = d.all_arms()
    r = {n: regime(a) for n, a in arms.items()}
    assert r["reference"]["tokens_per_parameter"] >= 1000 and all(x["tokens_per_parameter"] >= 300 for x in r.values())
    assert all(x["cumulative_weight_decay"] >= 5 for n, x in r.items() if arms[n].weight_decay > 0)
    assert {a.arch for a in arms.values()} >= {"swiglu", "gelu", "relu"} and {a.init for a in arms.values()} == {"hf", "mitchell"}
    assert {a.schedule for a in arms.values()} == {"cosine", "wsd"} and len({a.hidden for a in arms.values()}) == 2
    assert any(a.weight_decay == 0 for a in arms.values()) and any(a.unique_fraction < 1 for a in arms.values())
    assert d.checkpoints >= 12 and len(d.seeds) >= 2
    assert "OLMo-1B" in plan_text(d) and "reference" in plan_text(d)
    assert load_preset("quick").decay is None
    with pytest.raises(KentropyError, match="x.yaml: decay: arms.bad: unknown key"):
        config_from_yaml("version: 1\ndecay: {arms: {bad: {depth: 3}}}\n", "x.yaml")
    with pytest.raises(KentropyError, match="unknown section"):
        config_from_yaml("version: 1\ndecya: {}\n", "x.yaml")


SMOKE_DECAY = """version: 1
lab: {entities: 300, tokenizer_vocab: 512, tokenizer_docs: 300, hidden: 32, layers: 2, heads: 2, ffn: 86,
      pretrain_tokens: 40960, seq_len: 64, checkpoints: 8, measure_docs: 24, continual_at: [1.0], continual_steps: 10,
      continual_batch: 8, injection_rounds: 2, knowledge_paraphrase: 2, knowledge_once: 2, tasks_per_kind: 12,
      resuscitate_amplify: [2.0], circuits: false}
decay:
  reference: {tokens_per_parameter: 6, batch_size: 8, seq_len: 64}
  arms: {GELU: {arch: gelu}}
  seeds: [0, 1]
  checkpoints: 12
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
    assert [a["name"] for a in study["arms"]] == ["reference", "GELU"]
    for a in study["arms"]:
        assert {"name", "overrides", "tokens_per_parameter", "cumulative_weight_decay", "steps", "knowledge_entropy",
                "knowledge_entropy_ci", "peak_step", "verdict"} <= set(a)
        assert len(a["steps"]) >= 13 and a["steps"][0] == 0 and a["steps"] == sorted(a["steps"])
        assert len(a["knowledge_entropy"]) == len(a["knowledge_entropy_ci"]) == len(a["steps"])
        assert all(lo <= h <= hi for h, (lo, hi) in zip(a["knowledge_entropy"], a["knowledge_entropy_ci"]))
        assert a["verdict"] in ("held", "direction only", "did not hold") and a["peak_step"] in a["steps"]
        assert a["seeds"] == [0, 1] and len(a["series"]["held_out"]["per_seed"]) == 2
    assert study["arms"][1]["overrides"] == {"arch": "gelu"}
    # the headline numbers are the mean over seeds of what each measure stage wrote
    meas = sorted(out.glob("stages/decay-reference-seed*-measure-*/result.json"))
    per_seed = [[r["knowledge_entropy"] for r in json.loads(p.read_text())["series"]["seen"]["results"]] for p in meas]
    assert study["arms"][0]["knowledge_entropy"] == pytest.approx([sum(x) / 2 for x in zip(*per_seed)])
    loop = study["loop"]
    # the loop's rows are the reference's 64 pretraining positions: its passages (>= 7 facts) do not fit, so it does not run
    assert loop["continual"]["seq_len"] == 64 and loop["note"].startswith("not run")
    report = (out / "report.md").read_text()
    assert "## The decay study" in report and "Closing the loop" in report
    assert (out / "figures" / "decay_study.png").read_bytes()[:4] == b"\x89PNG"
