"""`kentropy train --fsdp` under torchrun (2 CPU processes, gloo): the same losses and weights as one
process, sharded checkpoints that resume on 2 or on 1 process, and HF checkpoints that load and measure the same."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import load_file

from kentropy.knowledge import generate_knowledge

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def inputs(model_dir, tokenizer, sample_texts, tmp_path_factory):
    d = tmp_path_factory.mktemp("fsdp-inputs")
    gpt2 = tiny_model("gpt2", 11)
    gpt2.config.update({"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})  # dropout draws differ per process count
    gpt2.save_pretrained(d / "gpt2")
    tokenizer.save_pretrained(d / "gpt2")
    (d / "corpus.txt").write_text("\n".join(sample_texts) + "\n")
    entries = generate_knowledge(3, n_paraphrases=2, seed=0)
    for e in entries:  # passages that fit the 32-token rows
        e["train_context"] = " ".join(e["train_context"].split()[:6])
        e["paraphrases"] = [" ".join(p.split()[:6]) for p in e["paraphrases"]]
    (d / "fk.json").write_text(json.dumps(entries))
    return {"llama": model_dir("llama", 11), "gpt2": d / "gpt2", "corpus": d / "corpus.txt", "fk": d / "fk.json"}


def args(inputs, out, *extra, family="llama", steps=6, save_every=3, micro=2):
    return ["train", str(inputs[family]), "--data", str(inputs["corpus"]), "--knowledge", str(inputs["fk"]), "--out", str(out),
            "--steps", str(steps), "--batch-size", "4", "--micro-batch", str(micro), "--seq-len", "32", "--rounds", "2",
            "--inject-interval", str(steps // 2), "--eval-every", "3", "--save-every", str(save_every), "--grad-clip", "0.5",
            *map(str, extra)]


def launch(argv, nproc=1, **kw):
    """`kentropy ARGV` in one process, or under torchrun with `nproc` processes."""
    head = [sys.executable, "-m", "kentropy"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "kentropy"]
    return head + argv


def run(argv, nproc=1):
    r = subprocess.run(launch(argv, nproc), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(x)["step"] >= 0]


def final(run_dir):
    return sorted((run_dir / "checkpoints").glob("step-*"))[-1]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt2"])  # gpt2: tied embeddings and head in the root unit
def test_fsdp_matches_single_process(inputs, tmp_path, family, sample_texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kentropy import measure

    single, fsdp = tmp_path / "single", tmp_path / "fsdp"
    run(args(inputs, single, family=family))
    r = run(args(inputs, fsdp, "--fsdp", family=family, micro=1), nproc=2)  # 2 processes x 2 rows x micro 1: the same global 4
    assert "FSDP over 2" in r.stderr  # the memory estimate is printed before training
    a, b = metrics(single), metrics(fsdp)
    assert [m["step"] for m in b] == list(range(6))
    assert [m["loss"] for m in b] == pytest.approx([m["loss"] for m in a], rel=1e-4)
    assert [m["grad_norm"] for m in b] == pytest.approx([m["grad_norm"] for m in a], rel=1e-4)  # clipped over the shards
    assert [m["injected"] for m in b] == [m["injected"] for m in a] and sum(m["injected"] for m in b) > 0
    assert [m["probes"]["overall"] for m in b if "probes" in m] == pytest.approx([m["probes"]["overall"] for m in a if "probes" in m], rel=1e-4)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (single, fsdp))
    assert sb["P_after"] == pytest.approx(sa["P_after"], rel=1e-4) and sb["A"] == pytest.approx(sa["A"], rel=1e-3, abs=1e-6)

    # the checkpoints the rest of kentropy reads are plain HF directories; resumable state is sharded beside them
    assert sorted(p.name for p in (fsdp / "checkpoints").iterdir()) == ["step-000003", "step-000006"]
    assert (final(fsdp) / "dcp" / ".metadata").is_file() and not (final(single) / "dcp").exists()
    wa, wb = load_file(str(final(single) / "model.safetensors")), load_file(str(final(fsdp) / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        x, y = wa[k], wb[k]
        if k.endswith("attn.c_attn.bias"):
            # GPT-2's key bias has a gradient of exactly 0 (softmax ignores it): its Adam updates are
            # rounding noise amplified to +-lr, different in any two runs; compare the q and v parts
            third = x.numel() // 3
            x, y = torch.cat([x[:third], x[2 * third:]]), torch.cat([y[:third], y[2 * third:]])
        assert torch.allclose(x, y, atol=1e-4, rtol=0), k
    ma, mb = (AutoModelForCausalLM.from_pretrained(final(d)) for d in (single, fsdp))
    tok = AutoTokenizer.from_pretrained(final(fsdp))
    ea, eb = (measure(m, tok, sample_texts[:8], seq_len=32, progress=False) for m in (ma, mb))
    assert eb.knowledge_entropy == pytest.approx(ea.knowledge_entropy, rel=1e-5)
    assert eb.knowledge_entropy_per_layer == pytest.approx(ea.knowledge_entropy_per_layer, rel=1e-5)


@pytest.mark.slow
def test_fsdp_resume_after_kill_on_two_and_one_processes(inputs, tmp_path):
    steps, every = 24, 3
    full, cut = tmp_path / "full", tmp_path / "cut"
    run(args(inputs, full, "--fsdp", steps=steps, save_every=every, micro=1), nproc=2)
    proc = subprocess.Popen(launch(args(inputs, cut, "--fsdp", steps=steps, save_every=every, micro=1), nproc=2), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (cut / "checkpoints" / "step-000006").exists():
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
    proc.wait()
    assert not (cut / "summary.json").exists(), "the run finished before it could be killed"
    assert (cut / "checkpoints" / "step-000006" / "dcp" / ".metadata").is_file()
    killed = tmp_path / "killed"
    shutil.copytree(cut, killed)  # to resume a second time, from the same point

    r = run(args(inputs, cut, "--fsdp", "--resume", steps=steps, save_every=every, micro=1), nproc=2)
    assert "resuming" in r.stderr
    mf, mc = metrics(full), metrics(cut)
    assert [m["step"] for m in mc] == list(range(steps))  # no duplicated or missing steps
    assert [m["loss"] for m in mc] == [m["loss"] for m in mf]  # same processes: bit for bit
    wf, wc = load_file(str(final(full) / "model.safetensors")), load_file(str(final(cut) / "model.safetensors"))
    for k in wf:
        assert torch.equal(wf[k], wc[k]), k

    # the 2-process sharded checkpoint, resharded into one process (the run dir back as it was killed)
    shutil.rmtree(cut)
    killed.rename(cut)
    one = cut
    r = run(args(inputs, one, "--fsdp", "--resume", steps=steps, save_every=every, micro=1), nproc=1)  # 4 micro-batches of 1
    assert "resuming" in r.stderr
    m1 = metrics(one)
    assert [m["step"] for m in m1] == list(range(steps))
    assert [m["loss"] for m in m1] == pytest.approx([m["loss"] for m in mf], rel=1e-4)
    w1 = load_file(str(final(one) / "model.safetensors"))
    for k in wf:
        assert torch.allclose(wf[k], w1[k], atol=1e-4, rtol=0), k
    assert (json.loads((one / "summary.json").read_text())["P_after"]
            == pytest.approx(json.loads((full / "summary.json").read_text())["P_after"], rel=1e-4))


def test_memory_estimate_printed_and_refusal_names_the_flag(inputs, tmp_path, capsys, monkeypatch):
    from conftest import run_cli

    ok = tmp_path / "ok"
    code, _, err = run_cli(capsys, *args(inputs, ok, "--eval-every", 0, steps=2, save_every=2))
    assert code == 0, err
    assert "estimated memory per rank (one process): held now" in err and " + weights " in err and "GiB of available RAM" in err
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2**60))  # as if the host's RAM were shared by that many processes
    big = tmp_path / "big"
    code, _, err = run_cli(capsys, *args(inputs, big, steps=2, save_every=2))
    lines = [x for x in err.strip().splitlines() if x.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "--fsdp" in lines[0] and "exceeds the 0.00 GiB" in lines[0]
    assert not big.exists()  # refused before the run directory is made
