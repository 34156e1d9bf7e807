"""`kentropy train` under faults and the parts of a step no other test pins: resume from every
half-made state, interrupts, kill -9 at random points, the optimizer's groups, betas and clip,
gradient-accumulation scaling, and --plan / --schedule through the CLI."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file

from kentropy.knowledge import generate_knowledge, make_plan

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))


@pytest.fixture(scope="module")
def inputs(model_dir, sample_texts, tmp_path_factory):
    d = tmp_path_factory.mktemp("train-rel")
    (d / "corpus.txt").write_text("\n".join(sample_texts) + "\n")
    entries = generate_knowledge(3, n_paraphrases=2, seed=0)
    for e in entries:  # a few words each: they fit the 32-token rows
        e["train_context"] = " ".join(e["train_context"].split()[:6])
        e["paraphrases"] = [" ".join(p.split()[:6]) for p in e["paraphrases"]]
    (d / "fk.json").write_text(json.dumps(entries))
    return {"model": model_dir("gpt2", 4), "corpus": d / "corpus.txt", "fk": d / "fk.json", "entries": entries}


def args(inputs, out, *extra, steps=8):
    return ["train", inputs["model"], "--data", inputs["corpus"], "--knowledge", inputs["fk"], "--out", out, "--steps", steps,
            "--batch-size", 4, "--micro-batch", 2, "--seq-len", 32, "--rounds", 2, "--inject-interval", steps // 2,
            "--eval-every", 0, "--save-every", 4, "--epochs", 20, *extra]


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run directory that resumes at its new place (the saved config names --out)."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, "out": str(dst)}))
    return dst


def weights(run: Path, step: int) -> dict:
    return load_file(str(run / "checkpoints" / f"step-{step:06d}" / "model.safetensors"))


def log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full(inputs, tmp_path_factory):
    """An uninterrupted 8-step run: the reference every resumed run must equal."""
    from kentropy.cli.app import main

    run = tmp_path_factory.mktemp("full") / "run"
    main([str(a) for a in args(inputs, run)])  # returns on success (exits only on failure)
    return run


def test_reference_run_logs_each_step_once(full):
    assert [r["step"] for r in log(full)] == list(range(-1, 8))


# ---- resume from half-made states -----------------------------------------------------------
def killed_before_first_checkpoint(run: Path) -> None:
    shutil.rmtree(run / "checkpoints" / "step-000004")
    shutil.rmtree(run / "checkpoints" / "step-000008")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:4]) + lines[4][:25])  # steps -1..2, step 3 torn mid-write


def killed_after_a_checkpoint(run: Path) -> None:
    shutil.rmtree(run / "checkpoints" / "step-000008")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:8]) + lines[8][:10])  # steps -1..6, step 7 torn


def killed_mid_checkpoint_save(run: Path) -> None:
    ckpts = run / "checkpoints"
    shutil.move(ckpts / "step-000008", ckpts / ".step-000008.tmp-99999999-abc123")  # a save a kill interrupted
    shutil.copytree(ckpts / "step-000004", ckpts / ".step-000004.k2j3h4g5")  # an older version's temp name
    (ckpts / ".step-000008.tmp-99999999-abc123" / "trainer_state.pt").unlink()


def killed_between_before_and_its_log_line(run: Path) -> None:
    shutil.rmtree(run / "checkpoints" / "step-000004")
    shutil.rmtree(run / "checkpoints" / "step-000008")
    (run / "metrics.jsonl").unlink()


@pytest.mark.parametrize("kill", [killed_before_first_checkpoint, killed_after_a_checkpoint, killed_mid_checkpoint_save,
                                  killed_between_before_and_its_log_line], ids=lambda f: f.__name__)
def test_resume_from_a_half_made_run_equals_the_uninterrupted_one(kill, full, inputs, tmp_path, capsys):
    run = copy_run(full, tmp_path / "run")
    (run / "summary.json").unlink()
    kill(run)
    code, _, err = run_cli(capsys, *args(inputs, run, "--resume"))
    assert code == 0, err
    got, want = log(run), log(full)
    assert [r["step"] for r in got] == list(range(-1, 8))  # each step once, none missing
    assert [r.get("loss") for r in got] == [r.get("loss") for r in want]
    for k, v in weights(full, 8).items():
        assert torch.equal(weights(run, 8)[k], v), k
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000004", "step-000008"]  # temps cleaned
    mode = (run / "checkpoints" / "step-000008").stat().st_mode & 0o777
    assert mode == 0o777 & ~current_umask()  # not mkdtemp's 0700
    if kill in (killed_before_first_checkpoint, killed_after_a_checkpoint):
        assert "dropped a torn last line" in err


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_start_leaves_nothing_and_the_corrected_command_runs(inputs, tmp_path, capsys):
    run = tmp_path / "run"
    bad = args(inputs, run, steps=4)
    bad[bad.index("--data") + 1] = tmp_path / "missing.txt"
    code, _, err = run_cli(capsys, *bad)
    assert code == 2 and "missing.txt" in err and not run.exists()
    code, _, err = run_cli(capsys, *args(inputs, run, steps=4))
    assert code == 0, err


def test_resume_with_an_unreadable_trainer_state_names_it(full, inputs, tmp_path, capsys):
    run = copy_run(full, tmp_path / "run")
    state = run / "checkpoints" / "step-000008" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    code, _, err = run_cli(capsys, *args(inputs, run, "--resume"))
    assert code == 2 and err.count("error:") == 1 and "step-000008/trainer_state.pt: unreadable" in err


# ---- interrupts and kill -9 -------------------------------------------------------------------
def start(argv: list, ready: bytes) -> tuple[subprocess.Popen, bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "kentropy", *map(str, argv)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    os.set_blocking(proc.stderr.fileno(), False)
    err, deadline = b"", time.time() + 120
    while ready not in err and time.time() < deadline and proc.poll() is None:
        err += proc.stderr.read() or b""
        time.sleep(0.02)
    return proc, err


def test_sigint_mid_train_says_how_to_resume(inputs, tmp_path):
    run = tmp_path / "run"
    proc, err = start(args(inputs, run, "--save-every", 1000, steps=400), ready=b"train run")
    assert proc.poll() is None, err.decode()[-1000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    os.set_blocking(proc.stderr.fileno(), True)
    err = (err + proc.stderr.read()).decode()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted; resume with --resume" and "Traceback" not in err
    assert not [p for p in run.rglob(".*")]  # no temp left


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_equals_uninterrupted(full, inputs, tmp_path):
    """Kill -9 a run several times at random moments, resume each time: the result is the uninterrupted run's."""
    run = tmp_path / "run"
    argv = args(inputs, run, "--save-every", 1)  # a checkpoint every step: kills land in saves too
    ref = tmp_path / "ref"
    r = subprocess.run([sys.executable, "-m", "kentropy", *map(str, args(inputs, ref, "--save-every", 1))], env=ENV,
                       capture_output=True)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    rng = random.Random(14)
    kills = 0
    for attempt in range(12):
        resume = ["--resume"] if (run / "config.json").is_file() else []
        proc, _ = start(argv + resume, ready=b"train run")
        time.sleep(rng.uniform(0, 0.4))  # a run of 8 steps takes about a second here once training starts
        if proc.poll() is not None:
            break  # finished before the kill
        proc.kill()
        proc.wait()
        kills += 1
        if kills == 4:
            break
    final = subprocess.run([sys.executable, "-m", "kentropy", *map(str, argv + (["--resume"] if (run / "config.json").is_file() else []))],
                           env=ENV, capture_output=True)
    assert final.returncode == 0 or (run / "summary.json").is_file(), final.stderr.decode()[-2000:]
    assert kills >= 2
    assert [r["step"] for r in log(run)] == list(range(-1, 8))
    assert [r.get("loss") for r in log(run)] == [r.get("loss") for r in log(ref)]
    for k, v in weights(ref, 8).items():
        assert torch.equal(weights(run, 8)[k], v), k
    assert json.loads((run / "summary.json").read_text())["P_after"] == json.loads((ref / "summary.json").read_text())["P_after"]
    assert not [p for p in run.rglob(".*")]


# ---- the optimizer ----------------------------------------------------------------------------
def test_optimizer_groups_betas_and_decay_on_a_model_with_biases(model_dir):
    """GPT-2 has biases, LayerNorms (weight and bias) and tied embeddings: only the block matrices decay."""
    from transformers import AutoModelForCausalLM

    from kentropy.training.config import TrainConfig
    from kentropy.training.optimizer import make_optimizer

    model = AutoModelForCausalLM.from_pretrained(model_dir("gpt2", 4))
    cfg = TrainConfig(model="m", data="d", out="o", lr=3e-4, beta1=0.8, beta2=0.99, weight_decay=0.05)
    opt = make_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: sorted(names[id(p)] for p in g["params"]) for g in opt.param_groups}
    assert sorted(groups) == [0.0, 0.05]
    matrices = [f"transformer.h.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    assert groups[0.05] == sorted(matrices)
    plain = set(groups[0.0])
    assert "transformer.wte.weight" in plain  # token embeddings (tied to the head) never decay
    assert "transformer.wpe.weight" in plain  # nor learned position embeddings (OLMo: no decay on embeddings)
    biases = [f"transformer.h.{i}.{m}.bias" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    norms = [f"transformer.h.{i}.ln_{j}.{w}" for i in range(2) for j in (1, 2) for w in ("weight", "bias")]
    assert set(biases) <= plain and set(norms) <= plain and {"transformer.ln_f.weight", "transformer.ln_f.bias"} <= plain
    assert all(g["betas"] == (0.8, 0.99) and g["lr"] == 3e-4 for g in opt.param_groups)


def small_run(inputs, tmp_path, **over):
    from kentropy.training.config import TrainConfig
    from kentropy.training.loop import setup

    cfg = TrainConfig(model=str(inputs["model"]), data=str(inputs["corpus"]), out=str(tmp_path / "run"), steps=2,
                      batch_size=4, micro_batch=over.pop("micro_batch", 2), seq_len=32, epochs=20, eval_every=0, **over)
    return cfg, setup(cfg)


def test_clip_value_reaches_the_gradients(inputs, tmp_path, monkeypatch):
    from kentropy.training.loop import step_batch, train_step

    cfg, r = small_run(inputs, tmp_path, grad_clip=0.01)
    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **kw):
        params = list(params)
        norm = real(params, max_norm, *a, **kw)
        seen.append((max_norm, float(norm), math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None))))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    mine, _ = step_batch(r, cfg, 0)
    _, norm = train_step(r, cfg, mine)
    (max_norm, before, after), = seen
    assert max_norm == 0.01 and before > 0.01 and after == pytest.approx(0.01, rel=1e-4)
    assert norm == pytest.approx(before)  # the log holds the norm before clipping


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_gradient_accumulation_gives_the_mean_over_the_batch(micro, inputs, tmp_path):
    """Loss and gradient of one step equal one forward over the whole batch (mean over its tokens), whatever
    the micro-batch: the `/ accum` scaling. The reference is the model's own loss on all rows at once."""
    from kentropy.training.loop import step_batch, train_step

    cfg, r = small_run(inputs, tmp_path, micro_batch=micro, grad_clip=0.0)
    mine, _ = step_batch(r, cfg, 0)  # [4, 32]
    r.model.eval()  # dropout off (GPT-2 has it): the same function in both computations
    ref = copy.deepcopy(r.model)
    ref_loss = ref(input_ids=mine, labels=mine).loss
    ref_loss.backward()
    ref_norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in ref.parameters() if p.grad is not None))
    grads = {}
    r.opt.step = lambda: grads.update({n: p.grad.clone() for n, p in r.model.named_parameters() if p.grad is not None})
    loss, _ = train_step(r, cfg, mine)
    assert loss == pytest.approx(ref_loss.item(), rel=1e-5)
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
    assert norm == pytest.approx(ref_norm, rel=1e-4)


# ---- --plan and --schedule through the CLI ------------------------------------------------------
def test_train_with_plan_and_wsd_schedule_via_cli(inputs, tmp_path, capsys):
    plan = make_plan(inputs["entries"], paraphrase=1, once=2, rounds=2, interval=4)  # not the default split (2 + 1)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, *args(inputs, run, "--plan", tmp_path / "plan.json", "--schedule", "wsd", "--lr", "1e-3",
                                         "--warmup", "0.25", "--decay-fraction", "0.5", "--min-lr-ratio", "0.2"))
    assert code == 0, err
    saved = json.loads((run / "plan.json").read_text())
    assert saved == plan  # the given plan, exactly
    steps = [r for r in log(run) if r["step"] >= 0]
    # round r in step interval * r - 1: steps 3 and 7; the paraphrase entry in each, one once entry in each
    assert {r["step"]: r["injected"] for r in steps if r["injected"]} == {3: 2, 7: 2}
    # wsd, 8 steps, warmup 2 (t = step + 1 < 2: 0.1 + 0.9 t / 2), stable to t = 4, then linear to 0.2 x lr over 4 steps
    want = [1e-3 * x for x in (0.55, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2)]
    assert [r["lr"] for r in steps] == pytest.approx(want, rel=1e-12)


def test_train_constant_schedule_via_cli(inputs, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, *args(inputs, run, "--schedule", "constant", "--lr", "2e-3", "--warmup", "0.5", steps=4))
    assert code == 0, err
    assert [r["lr"] for r in log(run) if r["step"] >= 0] == pytest.approx([2e-3 * 0.55, 2e-3, 2e-3, 2e-3], rel=1e-12)


# ---- non-finite starting checkpoints --------------------------------------------------------------
def poisoned_checkpoint(inputs, tmp_path, where: str, value: float) -> Path:
    """A copy of the run's starting model with `value` written into the parameter `where`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(inputs["model"])
    with torch.no_grad():
        dict(model.named_parameters())[where].fill_(value)
    d = tmp_path / "start"
    model.save_pretrained(d)
    AutoTokenizer.from_pretrained(inputs["model"]).save_pretrained(d)
    return d


def test_nan_weights_are_named_before_the_run_directory_exists(inputs, tmp_path, capsys):
    start = poisoned_checkpoint(inputs, tmp_path, "transformer.h.1.attn.c_proj.weight", float("nan"))
    argv = args(inputs, tmp_path / "run")
    argv[1] = start
    code, _, err = run_cli(capsys, *argv)
    last = err.strip().splitlines()[-1]
    assert code == 2 and err.count("error:") == 1, err
    assert last.startswith(f"error: {start}: the loss of a forward pass on a training row came out NaN or infinite; "
                           "its weights hold non-finite values (in 1 tensor: transformer.h.1.attn.c_proj.weight)"), last
    assert "--lr" not in err and "refusing to write" not in err
    assert not (tmp_path / "run").exists()  # refused before anything was scored or written


def test_an_overflowing_forward_with_finite_weights_says_so(inputs, tmp_path, capsys):
    start = poisoned_checkpoint(inputs, tmp_path, "transformer.h.0.mlp.c_proj.weight", 3e38)
    argv = args(inputs, tmp_path / "run")
    argv[1] = start
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "its weights are all finite (the forward overflows in torch.float32)" in err and str(start) in err, err
    assert not (tmp_path / "run").exists()


def test_a_nonfinite_loss_before_any_update_blames_the_checkpoint_not_the_lr(inputs, tmp_path):
    """The first step a process runs has updated nothing: its NaN comes from the weights it started from. After
    updates, the run diverged: the last good checkpoint and a lower --lr are the way on."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from kentropy.training.loop import nonfinite_loss
    from kentropy.training.rundir import RunDir

    model = AutoModelForCausalLM.from_pretrained(inputs["model"])
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")  # tied: the token embedding
    r = SimpleNamespace(model=model, source="runs/x/checkpoints/step-000004", start=4, run=RunDir(tmp_path / "run"))
    first = str(nonfinite_loss(r, 4, float("nan")))
    assert first == ("runs/x/checkpoints/step-000004: the loss of step 4, before any update, came out NaN or infinite; "
                     "its weights hold non-finite values (in 1 tensor: transformer.wte.weight)")
    later = str(nonfinite_loss(r, 6, float("nan")))
    assert later == "loss became nan at step 6; stopped; last good checkpoint: none (rerun with a lower --lr)"
