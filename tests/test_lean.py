"""The lean trainer: logits equal to the HF model's on every block type the lab builds; per-step losses
equal to `kentropy train`'s; K members stacked equal to each trained alone."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers as T

from conftest import V, family_config
from kentropy.measurement.documents import sample_text_path
from kentropy.errors import KentropyError
from kentropy.lab.architectures import model_config
from kentropy.lab.lean.pretrain import pretrain
from kentropy.lab.lean.model import LeanLM, save_member
from kentropy.lab.lean.stacked import clip_per_member, decayed, pretrain_stacked
from kentropy.training.config import TrainConfig
from kentropy.training.loop import train
from kentropy.training.optimizer import decay_groups


def lab_config(arch: str, tokenizer, norm: str = "rmsnorm"):
    return model_config(arch, vocab=V, hidden=16, layers=2, heads=2, gated_ffn=24, positions=32, tie=True, tok=tokenizer, norm=norm)


def with_act(config, act: str):
    config = copy.deepcopy(config)
    config.hidden_act = act
    return config


def block_configs(tokenizer) -> dict:
    """Every block type: the lab's arms (Llama SwiGLU, OLMo's block, Arcee GELU with RMSNorm, Nemotron GELU
    with LayerNorm1P), a ReLU gate (ReGLU) and a plain ReLU FFN, OLMo tied and untied with q/k/v clipping, Llama
    untied with grouped-query attention, Nemotron with partial rotary."""
    out = {"swiglu": lab_config("swiglu", tokenizer), "olmo-lab": lab_config("swiglu", tokenizer, "layernorm"),
           "gelu": lab_config("gelu", tokenizer, "layernorm"), "arcee": lab_config("gelu", tokenizer, "rmsnorm")}
    out["reglu"], out["relu"] = with_act(out["swiglu"], "relu"), with_act(out["gelu"], "relu")
    out["olmo"] = family_config("olmo", clip_qkv=0.5)
    out["olmo-tied"] = family_config("olmo", tie_word_embeddings=True)
    out["llama-gqa-untied"] = T.LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    out["nemotron-partial-rotary"] = T.NemotronConfig(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                                      num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                                                      hidden_act="relu2", partial_rotary_factor=0.5, tie_word_embeddings=False)
    return out


def random_hf(config, seed: int):
    """An HF model with every parameter (norms and biases too) moved off its init, so that no term hides."""
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


@pytest.mark.parametrize("block", ["swiglu", "olmo-lab", "reglu", "gelu", "arcee", "relu", "olmo", "olmo-tied", "llama-gqa-untied", "nemotron-partial-rotary"])
def test_logits_equal_hf_one_and_stacked(block, tokenizer, tmp_path):
    config = block_configs(tokenizer)[block]
    models = [random_hf(config, s) for s in range(3)]
    ids = torch.randint(0, V, (3, 2, 24), generator=torch.Generator().manual_seed(0))
    refs = [m(input_ids=ids[k]).logits for k, m in enumerate(models)]
    with torch.no_grad():
        one = LeanLM.from_hf(models[:1])
        assert set(one.state_dict()) | ({"lm_head.weight"} if one.tied else set()) == set(models[0].state_dict())
        torch.testing.assert_close(one(ids[0]), refs[0], atol=1e-5, rtol=0)
        stacked = LeanLM.from_hf(models)
        out = stacked(ids)
        for k in range(3):
            torch.testing.assert_close(out[k], refs[k], atol=1e-5, rtol=0)
        # the loss is HF's causal-LM loss, member by member
        loss = stacked.loss(ids)
        for k, m in enumerate(models):
            torch.testing.assert_close(loss[k], m(input_ids=ids[k], labels=ids[k]).loss, atol=1e-5, rtol=1e-5)
    # member 1 saved as an HF directory loads back as member 1's HF model
    save_member(stacked, 1, tmp_path / "m1", tokenizer)
    back = T.AutoModelForCausalLM.from_pretrained(tmp_path / "m1")
    assert type(back) is type(models[1]) and (tmp_path / "m1" / "model.safetensors").is_file()
    for name, p in models[1].state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], p, atol=0, rtol=0)


def test_decay_groups_are_hfs(tokenizer):
    for block, config in block_configs(tokenizer).items():
        hf = random_hf(config, 0)
        names = {id(p): n for n, p in hf.named_parameters()}
        hf_decay = {names[id(p)] for p in decay_groups(hf)[0]}
        one = LeanLM.from_hf([hf])
        lean_names = {id(p): n for n, p in one.named_parameters()}
        assert {lean_names[id(p)] for p in decay_groups(one)[0]} == hf_decay, block
        stacked = LeanLM(config, members=2)
        assert {n for (n, _), d in zip(stacked.named_parameters(), decayed(stacked)) if d} == hf_decay, block


def test_clip_per_member_is_clip_grad_norm_of_each():
    g = torch.Generator().manual_seed(0)
    params = [torch.zeros(3, 4, 5, requires_grad=True), torch.zeros(3, 7, requires_grad=True)]
    for p, scale in zip(params, (1.0, 0.05)):
        p.grad = torch.randn(p.shape, generator=g) * scale
    alone = [[p.grad[k].clone().requires_grad_() for p in params] for k in range(3)]
    limits = torch.tensor([1.0, 0.0, 100.0])  # clipped, off, above the norm
    norms = clip_per_member(params, limits)
    for k in range(3):
        ps = [torch.zeros_like(t, requires_grad=True) for t in alone[k]]
        for p, t in zip(ps, alone[k]):
            p.grad = t.detach().clone()
        expect = torch.nn.utils.clip_grad_norm_(ps, limits[k].item()) if limits[k] > 0 else torch.stack([p.grad.norm() for p in ps]).norm()
        torch.testing.assert_close(norms[k], expect, atol=1e-6, rtol=1e-6)
        for p, q in zip(params, ps):
            torch.testing.assert_close(p.grad[k], q.grad, atol=1e-7, rtol=1e-6)


def tcfg(model, out, **kw) -> TrainConfig:
    base = dict(model=str(model), data=str(sample_text_path()), out=str(out), steps=30, batch_size=4, micro_batch=2, seq_len=32,
                lr=3e-3, weight_decay=0.5, warmup=0.1, eval_every=0, save_every=0, save_at=[10], epochs=20, device="cpu")
    return TrainConfig(**{**base, **kw})


def metrics(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def final_state(out, steps=30) -> dict:
    return T.AutoModelForCausalLM.from_pretrained(out / "checkpoints" / f"step-{steps:06d}").state_dict()


@pytest.fixture(scope="module")
def lab_dirs(tmp_path_factory, tokenizer):
    """Init directories of the lab's reference arm (Llama SwiGLU, tied) for three seeds, and a plain-FFN arm."""

    def save(config, seed):
        d = tmp_path_factory.mktemp(f"init-{config.model_type}-{seed}")
        torch.manual_seed(seed)
        T.AutoModelForCausalLM.from_config(config).save_pretrained(d)
        tokenizer.save_pretrained(d)
        return d

    return {"swiglu": [save(lab_config("swiglu", tokenizer), s) for s in range(3)], "gelu": [save(lab_config("gelu", tokenizer, "layernorm"), 0)],
            "arcee": [save(lab_config("gelu", tokenizer, "rmsnorm"), 0)]}


@pytest.mark.parametrize("arch", ["swiglu", "gelu", "arcee"])
def test_losses_equal_kentropy_train(arch, lab_dirs, tmp_path):
    init = lab_dirs[arch][0]
    train(tcfg(init, tmp_path / "train", seed=3))
    lean = pretrain(tcfg(init, tmp_path / "lean", seed=3))
    ref = [r for r in metrics(tmp_path / "train") if r.get("step", -1) >= 0]
    assert [r["step"] for r in lean] == [r["step"] for r in ref] == list(range(30))
    for a, b in zip(lean, ref):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=0) and a["lr"] == b["lr"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert ref[-1]["loss"] < ref[0]["loss"] - 0.5  # it learned: the comparison is not between two idle runs
    assert [r["loss"] for r in metrics(tmp_path / "lean")] == [r["loss"] for r in lean]
    for step in (10, 30):
        theirs, ours = final_state(tmp_path / "train", step), final_state(tmp_path / "lean", step)
        for name, p in theirs.items():
            torch.testing.assert_close(ours[name], p, atol=1e-5, rtol=1e-4)
    config = json.loads((tmp_path / "lean" / "config.json").read_text())
    assert config["trainer"] == "kentropy.lab.lean" and config["seed"] == 3


def test_three_members_stacked_equal_each_alone(lab_dirs, tmp_path):
    """Different init, seed (row order), lr, schedule, weight decay and clipping per member."""
    own = [dict(seed=0, lr=3e-3, weight_decay=0.5), dict(seed=1, lr=1e-2, weight_decay=0.0, schedule="wsd", grad_clip=0.0),
           dict(seed=2, lr=5e-3, weight_decay=2.0, grad_clip=0.3, save_at=[7, 20])]
    cfgs = [tcfg(d, tmp_path / f"stacked-{k}", **o) for k, (d, o) in enumerate(zip(lab_dirs["swiglu"], own))]
    logs = pretrain_stacked(cfgs)
    for k, (d, o) in enumerate(zip(lab_dirs["swiglu"], own)):
        alone = pretrain(tcfg(d, tmp_path / f"alone-{k}", **o))
        for a, b in zip(logs[k], alone):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=0), (k, a["step"])
        assert [r["loss"] for r in metrics(tmp_path / f"stacked-{k}")] == [r["loss"] for r in logs[k]]
        saved = sorted(p.name for p in (tmp_path / f"stacked-{k}" / "checkpoints").iterdir())
        assert saved == sorted(p.name for p in (tmp_path / f"alone-{k}" / "checkpoints").iterdir())
        theirs, ours = final_state(tmp_path / f"alone-{k}"), final_state(tmp_path / f"stacked-{k}")
        for name, p in theirs.items():
            torch.testing.assert_close(ours[name], p, atol=1e-5, rtol=0)
    assert logs[0][5]["loss"] != logs[1][5]["loss"]  # members differ: a swap would show


def test_bad_input(lab_dirs, tokenizer, tmp_path):
    d = lab_dirs["swiglu"][0]
    with pytest.raises(KentropyError, match="--knowledge"):
        pretrain(tcfg(d, tmp_path / "a", knowledge="fk.json"))
    with pytest.raises(KentropyError, match="member 1: --seq-len"):
        pretrain_stacked([tcfg(d, tmp_path / "b"), tcfg(d, tmp_path / "c", seq_len=16)])
    with pytest.raises(KentropyError, match="own --out"):
        pretrain_stacked([tcfg(d, tmp_path / "b"), tcfg(d, tmp_path / "b")])
    with pytest.raises(KentropyError, match="member 1: config differs"):
        pretrain_stacked([tcfg(d, tmp_path / "b"), tcfg(lab_dirs["gelu"][0], tmp_path / "c")])
    with pytest.raises(KentropyError, match="model type 'gpt2'"):
        LeanLM(family_config("gpt2"))
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_compiled_losses_equal_eager(lab_dirs, tmp_path):
    init = lab_dirs["swiglu"][0]
    eager = pretrain(tcfg(init, tmp_path / "eager", save_at=[]))
    compiled = pretrain(tcfg(init, tmp_path / "compiled", save_at=[]), compile=True)
    for a, b in zip(compiled, eager):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=0)
    stacked = pretrain_stacked([tcfg(init, tmp_path / f"s{k}", save_at=[], seed=k) for k in range(2)], compile=True)
    for a, b in zip(stacked[0], eager):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=0)


def test_cross_entropy_and_its_gradient_by_hand():
    from kentropy.lab.lean.model import CrossEntropy

    g = torch.Generator().manual_seed(0)
    z = (torch.randn(7, 11, generator=g, dtype=torch.float64) * 3).requires_grad_()
    y = torch.randint(0, 11, (7,), generator=g)
    w = torch.rand(7, generator=g, dtype=torch.float64)
    loss = CrossEntropy.apply(z, y)
    expect = torch.stack([torch.log(torch.exp(z[i]).sum()) - z[i, y[i]] for i in range(7)])  # -log softmax(z_i)[y_i]
    torch.testing.assert_close(loss, expect)
    (loss * w).sum().backward()
    p = torch.exp(z.detach()) / torch.exp(z.detach()).sum(-1, keepdim=True)
    torch.testing.assert_close(z.grad, (p - torch.eye(11, dtype=torch.float64)[y]) * w[:, None])
