"""Under torchrun with 2 CPU processes (gloo), measure equals the single-process result."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_torchrun_two_processes_equal_single(model_dir, sample_texts, tmp_path):
    m = model_dir("llama", 7)
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(sample_texts[:11]) + "\n")  # odd count: ranks get unequal shards
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    common = ["measure", str(m), "--data", str(data), "--seq-len", "40", "--batch-size", "3",
              "--metrics", "knowledge,attention,next-token"]
    single = tmp_path / "single.json"
    r = subprocess.run([sys.executable, "-m", "kentropy", *common, "--out", str(single)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    ddp = tmp_path / "ddp.json"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "kentropy", *common, "--out", str(ddp)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = json.loads(single.read_text())["results"][0], json.loads(ddp.read_text())["results"][0]
    assert b["instances"] == a["instances"] == 11 and b["tokens"] == a["tokens"]
    for key in ("knowledge_entropy", "attention_entropy", "next_token_entropy"):
        assert b[key] == pytest.approx(a[key], rel=1e-12), key
    assert b["knowledge_entropy_per_layer"] == pytest.approx(a["knowledge_entropy_per_layer"], rel=1e-12)
