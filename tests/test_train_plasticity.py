"""`kentropy train --replay / --freeze-half / --recycle-every` against references written here:
replay rows never touch injected rows; HFT leaves frozen matrices (and their AdamW state) bit-identical
through a round; recycling zeroes exactly the recycled neurons' moments; bad flags are one-line errors."""

import copy
import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli, tiny_model
from safetensors.torch import load_file
from test_ffn_layouts import build
from test_intervene import DENSE
from test_train import short_passages

from kentropy.knowledge import generate_knowledge
from kentropy.training.plasticity import hft_frozen, prepare, round_of
from kentropy.edits.redo import redo
from kentropy.training.config import TrainConfig
from kentropy.training.loop import global_batch
from kentropy.training.optimizer import decay_groups


@pytest.fixture(scope="module")
def inputs(model_dir, sample_texts, tmp_path_factory):
    d = tmp_path_factory.mktemp("plasticity-inputs")
    (d / "corpus.txt").write_text("\n".join(sample_texts) + "\n")
    (d / "replay.txt").write_text("\n".join(reversed(sample_texts)) + "\n")
    (d / "fk.json").write_text(json.dumps(short_passages(generate_knowledge(3, n_paraphrases=2, seed=0))))
    return {"model": model_dir("llama", 11), "corpus": d / "corpus.txt", "replay": d / "replay.txt", "fk": d / "fk.json"}


def args(inputs, out, *extra, steps=12, batch=4):
    return ["train", str(inputs["model"]), "--data", str(inputs["corpus"]), "--knowledge", str(inputs["fk"]),
            "--out", str(out), "--steps", str(steps), "--batch-size", str(batch), "--micro-batch", "2", "--seq-len", "32",
            "--inject-interval", "4", "--rounds", "3", "--eval-every", "0", "--save-every", "4", *map(str, extra)]


# ---- rehearsal -----------------------------------------------------------------------------------
def test_replay_takes_the_last_rows_and_never_an_injected_row(tokenizer, inputs):
    T, B = 16, 8
    cfg = TrainConfig(model="m", data="d", out="o", replay=str(inputs["replay"]), replay_fraction=0.25, batch_size=B, seq_len=T,
                      steps=4, seed=3)
    passages = {(0, 0): torch.tensor([7, 8, 9, 1]), (1, 0): torch.tensor([10, 11, 1]), (2, 0): torch.tensor([12, 1])}
    schedule = {1: [{"entry": e, "variant": 0} for e in range(3)]}
    plast = prepare(cfg.plasticity_settings, tokenizer, schedule)
    assert plast.n_replay == 2  # round(0.25 x 8)
    rows = torch.arange(40 * T).reshape(40, T)  # distinct tokens: every row is recognisable
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    r = SimpleNamespace(rows=rows, order=order, schedule=schedule, passages=passages, plasticity=plast)
    plain = SimpleNamespace(**{**vars(r), "plasticity": None})
    for step in range(4):
        got, n = global_batch(r, cfg, step)
        without, _ = global_batch(plain, cfg, step)
        corpus = rows[order[step * B : (step + 1) * B]]
        expect = corpus.clone()
        if step == 1:  # the official insert: passage j prepended to row j, truncated to T
            for j, p in enumerate(passages.values()):
                expect[j] = torch.cat([p, corpus[j]])[:T]
        expect[B - 2 :] = plast.replay[plast.replay_order[step * 2 : (step + 1) * 2]]
        assert torch.equal(got, expect)
        assert torch.equal(got[: B - 2], without[: B - 2])  # injected rows and the other corpus rows: as without replay
        assert n == (3 if step == 1 else 0)
    # a fraction that leaves no room beside the 3 injected rows
    with pytest.raises(Exception, match="--replay-fraction 0.75: 6 replay rows and up to 3 injected rows exceed --batch-size 8"):
        prepare(dataclasses.replace(cfg, replay_fraction=0.75).plasticity_settings, tokenizer, schedule)


# ---- half fine-tuning ----------------------------------------------------------------------------
def test_round_boundaries():
    inj = [3, 7, 11]
    assert [round_of(s, inj) for s in range(13)] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3]


def _param_order(model_dir):
    """The optimizer's parameter order (decay group, then the rest), as names."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = decay_groups(model)
    return [names[id(p)] for p in decay + no_decay], model


def test_freeze_half_keeps_frozen_matrices_and_their_state_bit_identical(inputs, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, *args(inputs, run, "--freeze-half", "--replay", inputs["replay"], "--replay-fraction", 0.25))
    assert code == 0, err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["freeze_half"] is True and cfg["replay_fraction"] == 0.25
    summary = json.loads((run / "summary.json").read_text())["plasticity"]
    assert summary["replay_rows_per_step"] == 1 and [r["round"] for r in summary["rounds"]] == [1, 2, 3]
    ck = sorted((run / "checkpoints").iterdir())  # step-4 (end of round 1), step-8 (end of round 2), step-12
    w4, w8 = load_file(str(ck[0] / "model.safetensors")), load_file(str(ck[1] / "model.safetensors"))
    s4, s8 = (torch.load(c / "trainer_state.pt", weights_only=True)["optimizer"]["state"] for c in ck[:2])
    order, model = _param_order(inputs["model"])
    blocks = [[(f"model.layers.{i}.{n}", p) for n, p in b.named_parameters() if p.dim() >= 2] for i, b in enumerate(model.model.layers)]
    frozen = {n for n, _ in hft_frozen(blocks, 0, 1)}  # round 2 (index 1): steps 4 .. 7
    for block in blocks:
        same = {n for n, _ in block if torch.equal(w4[n], w8[n])}
        assert len(same) in (len(block) // 2, (len(block) + 1) // 2)
        assert same == {n for n, _ in block} & frozen  # exactly the frozen half is unchanged, every other matrix moved
    kept = 0
    for k, name in enumerate(order):
        if name in frozen:  # AdamW state kept as it was, not reset (none yet: frozen in round 1 as well)
            assert (k in s4) == (k in s8), name
            if k in s4:
                assert all(torch.equal(s4[k][x], s8[k][x]) for x in ("exp_avg", "exp_avg_sq", "step"))
                kept += bool(s4[k]["exp_avg"].abs().sum() > 0)
        elif name.startswith("model.layers."):
            assert not torch.equal(w4[name], w8[name]), name  # norms and unfrozen matrices train
    assert kept  # some frozen matrix trained in round 1 and kept its moments through round 2
    assert frozen != {n for n, _ in hft_frozen(blocks, 0, 2)}  # a new draw each round


# ---- continual recycling -------------------------------------------------------------------------
def _step(model, seed=0):
    """One AdamW step on random gradients, so that every moment is non-zero."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    opt.step()
    return opt


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_recycling_resets_exactly_the_recycled_moments_dense(family):
    model = tiny_model(family)
    opt = _step(model)
    names = {id(p): n for n, p in model.named_parameters()}
    before = {names[id(p)]: copy.deepcopy(s) for p, s in opt.state.items()}
    cbar = torch.rand(2, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.05
    done = redo(model, cbar, 0.6)
    done.reset_moments(opt)
    spec = DENSE[family]
    expect = copy.deepcopy(before)
    for l, x in enumerate(done.layers):
        idx = x.neurons
        assert idx
        pre = spec["block"].format(l=l)
        for key in ("exp_avg", "exp_avg_sq"):
            for name in spec["ins"]:
                t = expect[pre + name][key]
                (t.t() if spec["t"] else t)[idx] = 0
            for name in spec["bias"]:
                expect[pre + name][key][idx] = 0
            out = expect[pre + spec["out"]][key]
            if spec["t"]:
                out[idx, :] = 0
            else:
                out[:, idx] = 0
    for p, s in opt.state.items():
        n = names[id(p)]
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s[key], expect[n][key]), (n, key)


def test_recycling_resets_exactly_the_recycled_moments_moe():
    model = build("olmoe")
    opt = _step(model)
    names = {id(p): n for n, p in model.named_parameters()}
    before = {names[id(p)]: copy.deepcopy(s) for p, s in opt.state.items()}
    cbar = [torch.rand(96, generator=torch.Generator().manual_seed(l), dtype=torch.float64) + 0.05 for l in range(2)]
    done = redo(model, cbar, 0.6)
    done.reset_moments(opt)
    m = 24
    for l, x in enumerate(done.layers):
        pre = f"model.layers.{l}.mlp.experts."
        for key in ("exp_avg", "exp_avg_sq"):
            gu, down = before[pre + "gate_up_proj"][key], before[pre + "down_proj"][key]  # [E, 2m, h], [E, h, m]
            for i in x.neurons:
                gu[i // m, i % m] = 0
                gu[i // m, m + i % m] = 0
                down[i // m, :, i % m] = 0
    for p, s in opt.state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(s[key], before[names[id(p)]][key]), names[id(p)]


def test_recycle_every_during_training(inputs, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, *args(inputs, run, "--recycle-every", 4, "--threshold", 0.6))
    assert code == 0, err
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    recycled = {r["step"]: r["recycled_per_layer"] for r in steps if "recycled" in r}
    assert sorted(recycled) == [3, 7]  # after steps 4 and 8; never after the final step
    assert json.loads((run / "summary.json").read_text())["plasticity"]["recycled"] == [
        {"step": s, "neurons": sum(v)} for s, v in sorted(recycled.items())]
    # the checkpoint after step 4 holds the recycle of step 3: zeroed memory vectors with zeroed moments
    ck = sorted((run / "checkpoints").iterdir())[0]
    w = load_file(str(ck / "model.safetensors"))
    state = torch.load(ck / "trainer_state.pt", weights_only=True)["optimizer"]["state"]
    order, _ = _param_order(inputs["model"])
    for l, count in enumerate(recycled[3]):
        name = f"model.layers.{l}.mlp.down_proj.weight"
        zero = (w[name] == 0).all(dim=0).nonzero().squeeze(1).tolist()
        assert len(zero) == count
        mom = state[order.index(name)]
        assert all(mom[k][:, zero].eq(0).all() for k in ("exp_avg", "exp_avg_sq"))
        assert mom["exp_avg_sq"].ne(0).any(dim=0).sum() == 24 - count  # every other column keeps its moments


# ---- resume ------------------------------------------------------------------------------------
def test_resume_mid_round_matches_uninterrupted(inputs, tmp_path, capsys):
    """Frozen sets, replay rows and recycling are functions of (seed, step): a resumed run is bit for bit the same."""
    import shutil

    extra = ["--replay", inputs["replay"], "--replay-fraction", 0.25, "--freeze-half", "--recycle-every", 3, "--threshold", 0.6,
             "--save-every", 6]
    full, cut = tmp_path / "full", tmp_path / "cut"
    code, _, err = run_cli(capsys, *args(inputs, full, *extra))
    assert code == 0, err
    shutil.copytree(full, cut)  # as if killed after the checkpoint of step 6, in the middle of round 2
    shutil.rmtree(cut / "checkpoints" / "step-000012")
    (cut / "summary.json").unlink()
    config = json.loads((cut / "config.json").read_text())
    (cut / "config.json").write_text(json.dumps(config | {"out": str(cut)}))
    code, _, err = run_cli(capsys, *args(inputs, cut, *extra, "--resume"))
    assert code == 0 and "resuming" in err, err
    wf = load_file(str(full / "checkpoints" / "step-000012" / "model.safetensors"))
    wc = load_file(str(cut / "checkpoints" / "step-000012" / "model.safetensors"))
    for k in wf:
        assert torch.equal(wf[k], wc[k]), k
    sf, sc = (json.loads((r / "summary.json").read_text())["plasticity"] for r in (full, cut))
    assert sf == sc and [x["step"] for x in sf["recycled"]] == [2, 5, 8]


# ---- bad input -----------------------------------------------------------------------------------
CASES = {
    "replay-fraction-1": (["--replay", "R", "--replay-fraction", 1], "--replay-fraction 1.0: must be in [0, 1)"),
    "replay-fraction-negative": (["--replay", "R", "--replay-fraction", -0.1], "--replay-fraction -0.1"),
    "replay-fraction-nan": (["--replay", "R", "--replay-fraction", "nan"], "--replay-fraction nan"),
    "replay-no-room": (["--replay", "R", "--replay-fraction", 0.5], "exceed --batch-size 4"),
    "replay-rounds-to-0": (["--replay", "R", "--replay-fraction", 0.1], "rounds to 0"),
    "replay-without-fraction": (["--replay", "R"], "--replay needs --replay-fraction"),
    "fraction-without-replay": (["--replay-fraction", 0.25], "--replay-fraction needs --replay"),
    "replay-missing-file": (["--replay", "MISSING", "--replay-fraction", 0.25], "missing-replay.txt"),
    "threshold-without-recycle": (["--threshold", 0.1], "--threshold needs --recycle-every"),
    "recycle-without-threshold": (["--recycle-every", 4], "--recycle-every needs --threshold"),
    "recycle-threshold-1": (["--recycle-every", 4, "--threshold", 1], "--threshold 1.0: must be in [0, 1)"),
    "recycle-negative": (["--recycle-every", -1, "--threshold", 0.1], "--recycle-every -1"),
    "recycle-fsdp": (["--recycle-every", 4, "--threshold", 0.1, "--fsdp"], "not with --fsdp"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, inputs, tmp_path, capsys):
    extra, names = CASES[case]
    extra = [str(inputs["replay"]) if x == "R" else str(tmp_path / "missing-replay.txt") if x == "MISSING" else x for x in extra]
    work = tmp_path / "work"
    work.mkdir()
    code, _, err = run_cli(capsys, *args(inputs, work / "run", *extra, batch=4))
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert names in errors[0], errors[0]
    assert list(work.iterdir()) == []  # no run directory


def test_freeze_half_needs_injection_rounds(inputs, tmp_path, capsys):
    argv = args(inputs, tmp_path / "run", "--freeze-half")
    i = argv.index("--knowledge")
    del argv[i : i + 2]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "--freeze-half needs --knowledge" in err and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_torchrun_two_processes_match_single(inputs, tmp_path):
    """Replay, HFT and recycling under DDP: the same global batches, frozen sets and recycled neurons as one process."""
    import subprocess
    import sys

    from test_train import ENV

    extra = ["--replay", inputs["replay"], "--replay-fraction", 0.25, "--freeze-half", "--recycle-every", 3, "--threshold", 0.6,
             "--rounds", 2]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "kentropy", *args(inputs, single, *extra, steps=8)], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    dist = args(inputs, ddp, *extra, steps=8)
    dist[dist.index("--micro-batch") + 1] = "1"  # 2 processes x 2 rows x micro 1: the same global batch of 4
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kentropy", *dist],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    def log(run):
        return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if json.loads(x)["step"] >= 0]

    a, b = log(single), log(ddp)
    assert [x["step"] for x in a if "recycled" in x] == [2, 5] and any(x.get("recycled") for x in a)
    assert [x.get("recycled_per_layer") for x in a] == [x.get("recycled_per_layer") for x in b]
    assert [x.get("frozen_matrices") for x in a] == [x.get("frozen_matrices") for x in b]
    assert [x["loss"] for x in b] == pytest.approx([x["loss"] for x in a], rel=1e-4)
    ws = load_file(str(sorted((single / "checkpoints").iterdir())[-1] / "model.safetensors"))
    wd = load_file(str(sorted((ddp / "checkpoints").iterdir())[-1] / "model.safetensors"))
    for k in ws:
        assert torch.allclose(ws[k], wd[k], atol=1e-5), k
