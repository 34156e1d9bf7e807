"""`kentropy train`: injection, run directory, A and F, resume after a kill, DDP, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli
import torch
from safetensors.torch import load_file

from kentropy.knowledge import generate_knowledge

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def short_passages(entries, words=6):
    """Passages cut to their first words, so that they fit the tests' 32-token rows."""
    for e in entries:
        e["train_context"] = " ".join(e["train_context"].split()[:words])
        e["paraphrases"] = [" ".join(p.split()[:words]) for p in e["paraphrases"]]
    return entries


@pytest.fixture(scope="module")
def inputs(model_dir, sample_texts, tmp_path_factory):
    d = tmp_path_factory.mktemp("train-inputs")
    (d / "corpus.txt").write_text("\n".join(sample_texts) + "\n")
    (d / "fk.json").write_text(json.dumps(short_passages(generate_knowledge(3, n_paraphrases=2, seed=0))))
    return {"model": model_dir("llama", 11), "corpus": d / "corpus.txt", "fk": d / "fk.json"}


def args(inputs, out, *extra, steps=12):
    return ["train", str(inputs["model"]), "--data", str(inputs["corpus"]), "--knowledge", str(inputs["fk"]),
            "--out", str(out), "--steps", str(steps), "--batch-size", "4", "--micro-batch", "2", "--seq-len", "32",
            "--inject-interval", "4", "--rounds", "3", "--eval-every", "4", "--save-every", "4", *map(str, extra)]


def final_weights(run):
    return load_file(str(sorted((run / "checkpoints").glob("step-*"))[-1] / "model.safetensors"))


def test_run_directory_explains_itself(inputs, tmp_path, capsys):
    from kentropy.evaluation.downstream import write_task

    tasks = tmp_path / "tasks"
    write_task(str(tasks), "toy_recall", [{"query": "Alda Voss was born in", "choices": ["Lowmere", "Port Sable"], "gold": i % 2}
                                          for i in range(6)])
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, *args(inputs, run, "--tasks", "toy_recall", "--task-dir", tasks))
    assert code == 0, err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["steps"] == 12 and cfg["lr"] == 4e-4 and cfg["batch_size"] == 4
    plan = json.loads((run / "plan.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m["step"] >= 0]
    assert [m["step"] for m in steps] == list(range(12))
    expect = {r["step"]: len(r["items"]) for r in plan["schedule"]}
    assert expect == {3: 3, 7: 2, 11: 2}  # the official timing: round r in step 4r - 1, the last on the final step
    assert {m["step"]: m["injected"] for m in steps if m["injected"]} == expect
    assert all({"loss", "lr", "tokens_per_s"} <= set(m) for m in steps)
    assert [m["step"] for m in steps if "probes" in m] == [3, 7, 11]
    assert {"mem", "gen", "hard_gen", "overall", "groups"} <= set(steps[3]["probes"])
    # OLMo's cosine_with_warmup: round(0.6) = 1 warmup step, then cosine down to 0.1 x lr at the final step
    assert steps[0]["lr"] == pytest.approx(4e-4) and steps[-1]["lr"] == pytest.approx(4e-5)
    assert steps[-1]["lr"] < steps[6]["lr"] < steps[1]["lr"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000004", "step-000008", "step-000012"]
    s = json.loads((run / "summary.json").read_text())
    assert s["A"] == pytest.approx((s["P_after"] - s["P_before"]) / abs(s["P_before"]) * 100)
    assert s["F"] == pytest.approx((s["D_before"] - s["D_after"]) / s["D_before"] * 100)
    assert 0 <= s["D_before"] <= 1 and s["downstream_before"]["tasks"]["toy_recall"]["acc"] == s["D_before"]
    # each task's per-document rows before and after (F's paired standard error); not in metrics.jsonl
    for d in (s["downstream_before"], s["downstream_after"], json.loads((run / "before.json").read_text())["downstream"]):
        t = d["tasks"]["toy_recall"]
        assert len(t["rows"]) == 6 and sum(t["rows"]) / 6 == pytest.approx(t["score"])
    assert metrics[0]["event"] == "before" and "rows" not in metrics[0]["downstream"]["tasks"]["toy_recall"]
    assert metrics[0]["downstream"]["tasks"]["toy_recall"]["score"] == s["D_before"]
    assert s["P_after"] > s["P_before"]  # 12 steps with the knowledge injected three times: it is learned a little
    assert "A =" in out and "F =" in out


def test_micro_batch_does_not_change_the_update(inputs, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli(capsys, *args(inputs, a, "--rounds", 1, steps=4))[0] == 0
    argv = args(inputs, b, "--rounds", 1, steps=4)
    argv[argv.index("--micro-batch") + 1] = "1"
    assert run_cli(capsys, *argv)[0] == 0
    wa, wb = final_weights(a), final_weights(b)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(inputs, tmp_path, capsys):
    full = tmp_path / "full"
    steps = 40
    assert run_cli(capsys, *args(inputs, full, "--save-every", 5, "--rounds", 2, steps=steps))[0] == 0  # rounds at 19, 39
    cut = tmp_path / "cut"
    argv = [sys.executable, "-m", "kentropy", *args(inputs, cut, "--save-every", 5, "--rounds", 2, steps=steps)]
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (cut / "checkpoints" / "step-000010").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "summary.json").exists(), "the run finished before it could be killed"
    code, out, err = run_cli(capsys, *args(inputs, cut, "--save-every", 5, "--rounds", 2, "--resume", steps=steps))
    assert code == 0, err
    assert "resuming" in err
    wf, wc = final_weights(full), final_weights(cut)
    assert wf.keys() == wc.keys()
    for k in wf:
        assert torch.equal(wf[k], wc[k]), k  # bit for bit
    lf = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    lc = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lc] == [x["step"] for x in lf]  # no duplicated or missing steps
    assert [x.get("loss") for x in lc] == [x.get("loss") for x in lf]
    assert json.loads((cut / "summary.json").read_text())["P_after"] == json.loads((full / "summary.json").read_text())["P_after"]


@pytest.mark.slow
def test_torchrun_two_processes_match_single(inputs, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    base = args(inputs, single, "--eval-every", 0, "--rounds", 2, steps=6)
    r = subprocess.run([sys.executable, "-m", "kentropy", *base], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    dist = args(inputs, ddp, "--eval-every", 0, "--rounds", 2, steps=6)
    dist[dist.index("--micro-batch") + 1] = "1"  # 2 processes x 2 rows x micro 1: same global batch of 4
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kentropy", *dist],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    loss = lambda run: [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if json.loads(x)["step"] >= 0]  # noqa: E731
    assert loss(ddp) == pytest.approx(loss(single), rel=1e-4)
    ws, wd = final_weights(single), final_weights(ddp)
    for k in ws:
        assert torch.allclose(ws[k], wd[k], atol=1e-5), k


def test_bad_input(inputs, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, *args(inputs, run, "--rounds", 2, steps=500))  # 212 rows of 32 tokens: 53 steps of 4 per epoch
    assert code == 2 and "need 10 epochs (pass --epochs 10" in err
    assert not (run / "summary.json").exists()
    code, out, err = run_cli(capsys, *args(inputs, tmp_path / "epochs", "--epochs", 1, "--rounds", 1, steps=60))
    assert code == 2 and "need 2 epochs" in err
    code, out, err = run_cli(capsys, *args(inputs, tmp_path / "epochs2", "--epochs", 2, "--rounds", 1, "--eval-every", 0, steps=60))
    assert code == 0, err
    code, out, err = run_cli(capsys, *args(inputs, tmp_path / "ok", "--rounds", 1, steps=2))
    assert code == 0, err
    code, out, err = run_cli(capsys, *args(inputs, tmp_path / "ok", "--rounds", 1, steps=2))
    assert code == 2 and "--resume or --overwrite" in err
    assert run_cli(capsys, *args(inputs, tmp_path / "ok", "--rounds", 1, "--overwrite", steps=2))[0] == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"train_context": "x"}]))
    argv = args(inputs, tmp_path / "b", "--rounds", 1, steps=2)
    argv[argv.index("--knowledge") + 1] = str(bad)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and "bad.json" in err and "entry 0" in err


def test_nan_loss_stops_and_names_the_step(inputs, tmp_path, capsys):
    run = tmp_path / "nan"
    code, out, err = run_cli(capsys, *args(inputs, run, "--lr", "1e30", "--grad-clip", "0", "--save-every", "1", "--eval-every", "0", steps=12))
    assert code == 2
    err = err.strip().splitlines()[-1]
    assert err.startswith("error: loss became") and "at step" in err and "last good checkpoint" in err
    step = int(err.split("at step ")[1].split(";")[0])
    assert step >= 1 and (run / "checkpoints" / f"step-{step:06d}").exists()  # the last good one is kept
    assert not (run / "summary.json").exists()


def olmo_cos_with_warmup(lr, t, t_max, warmup, alpha_f=0.1):
    """OLMo's `CosWithWarmup.get_lr` with `_linear_warmup` from 0.1 x lr, written out (olmo/optim.py)."""
    import math

    eta_min = lr * alpha_f
    if t < warmup:
        return lr * (0.1 + 0.9 * min(t, warmup) / warmup)
    if t >= t_max:
        return eta_min
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * (t - warmup) / (t_max - warmup))) / 2


def test_lr_is_olmos_schedule_at_the_official_steps():
    from kentropy.training.config import TrainConfig
    from kentropy.training.optimizer import lr_at

    cfg = TrainConfig(model="m", data="d", out="o")  # the paper's: 1600 steps, lr 4e-4, 5% warmup = 80 steps
    # OLMo increments its global step before the update: 0-indexed step s runs at t = s + 1
    for s in (0, 1, 78, 79, 80, 800, 1598, 1599):
        assert lr_at(s, cfg) == pytest.approx(olmo_cos_with_warmup(4e-4, s + 1, 1600, 80), rel=1e-12), s
    assert lr_at(0, cfg) == pytest.approx(4e-4 * (0.1 + 0.9 / 80))  # warmup starts near 0.1 x lr, not near 0
    assert lr_at(79, cfg) == pytest.approx(4e-4) and lr_at(1599, cfg) == pytest.approx(4e-5)
    half = TrainConfig(model="m", data="d", out="o", min_lr_ratio=0.5)
    assert lr_at(1599, half) == pytest.approx(2e-4)


def test_constant_and_wsd_schedules_by_hand():
    from kentropy.training.config import TrainConfig
    from kentropy.training.optimizer import lr_at

    const = TrainConfig(model="m", data="d", out="o", steps=100, lr=1.0, warmup=0.05, schedule="constant")
    assert lr_at(0, const) == pytest.approx(0.1 + 0.9 / 5) and lr_at(4, const) == 1.0 and lr_at(99, const) == 1.0
    wsd = TrainConfig(model="m", data="d", out="o", steps=100, lr=1.0, warmup=0.05, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.1)
    assert lr_at(50, wsd) == 1.0 and lr_at(79, wsd) == 1.0  # t = 80: the stable phase ends
    assert lr_at(89, wsd) == pytest.approx(1.0 - 0.9 * 10 / 20)  # t = 90: half way down the linear decay
    assert lr_at(99, wsd) == pytest.approx(0.1)


def test_weight_decay_groups_follow_olmo(model_dir):
    from transformers import AutoModelForCausalLM

    from kentropy.training.config import TrainConfig
    from kentropy.training.optimizer import make_optimizer

    model = AutoModelForCausalLM.from_pretrained(model_dir("llama", 3))
    cfg = TrainConfig(model="m", data="d", out="o", weight_decay=0.1)
    opt = make_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    plain = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert "model.embed_tokens.weight" in plain  # embeddings never decay
    assert all(n.endswith("norm.weight") or n == "model.embed_tokens.weight" for n in plain), plain
    assert all(n.endswith("proj.weight") or n == "lm_head.weight" for n in decayed), decayed
    assert "model.layers.0.mlp.up_proj.weight" in decayed and "model.norm.weight" in plain
    assert len(decayed) + len(plain) == len(list(model.parameters()))
    assert all(g["betas"] == (0.9, 0.95) for g in opt.param_groups)


def test_plan_and_steps_must_agree(inputs, tmp_path, capsys):
    # 12 steps, 3 rounds: interval 4 whatever --inject-interval says (with a note); 10 steps, 3 rounds: refused
    code, out, err = run_cli(capsys, *args(inputs, tmp_path / "a", "--inject-interval", 160, "--eval-every", 0))
    assert code == 0 and "injecting every 4 steps" in err
    assert [r["step"] for r in json.loads((tmp_path / "a" / "plan.json").read_text())["schedule"]] == [3, 7, 11]
    code, out, err = run_cli(capsys, *args(inputs, tmp_path / "b", steps=10))
    assert code == 2 and "--steps 10" in err and not (tmp_path / "b").exists()


def test_passages_longer_than_a_row_are_refused(inputs, tmp_path, capsys):
    long = tmp_path / "long.json"
    long.write_text(json.dumps(generate_knowledge(3, n_paraphrases=2, seed=0)))  # full paragraphs: hundreds of tokens
    argv = args(inputs, tmp_path / "run")
    argv[argv.index("--knowledge") + 1] = str(long)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and "--seq-len 32" in err and "entry 0 variant 0" in err
    assert not (tmp_path / "run").exists()  # refused before the run directory was made
