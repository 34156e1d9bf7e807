"""The scale ladder: its preset's regime (equal tokens per parameter and Σ lr·wd at every width), FLOPs per
token and the peak table by hand, bad configs, and a smoke-size ladder on CPU with `datasets` and `lm-eval`
refused at import (benchmarks/ladder_gpu.py --smoke, the GPU script's own CPU mode, one thread: ~13 s)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kentropy.errors import KentropyError
from kentropy.lab.config import ladder_config, load_preset
from kentropy.lab.regime import regime
from kentropy.lab.studies.ladder import PEAK_BF16, flops_per_token, plan_text

ROOT = Path(__file__).resolve().parents[1]


def test_ladder_preset_regime():
    cfg = load_preset("ladder")
    lad = cfg.ladder
    assert cfg.decay is None and lad.widths == [64, 128, 256] and lad.seeds == [3, 2, 1] and lad.layers == 4
    for w in lad.widths:
        arm = lad.arm(w)
        r = regime(arm)
        assert arm.family == "olmo" and arm.init == "mitchell" and arm.heads == w // 32 and arm.ffn == round(8 * w / 3)
        assert r["non_embedding_parameters"] == 4 * (4 * w * w + 3 * w * arm.ffn)  # OLMo's LayerNorm has no parameters
        assert 150 <= r["tokens_per_parameter"] < 150 + 64 * 256 / r["non_embedding_parameters"]  # rounded up to whole steps
        assert r["cumulative_weight_decay"] == pytest.approx(4.0, rel=1e-9)
    assert lad.arm(64).weight_decay > lad.arm(256).weight_decay  # more steps, less decay per step
    assert "end vs half" in plan_text(lad) and lad.analysis_plan().primary == "end vs half"


def test_flops_per_token_and_peak_by_hand():
    arm = load_preset("ladder").ladder.arm(64)
    d, m, L, V, T = 64, 171, 4, 1024, 256
    assert flops_per_token(arm, V) == 6 * (L * (4 * d * d + 3 * d * m) + V * d) + 6 * L * T * d
    assert PEAK_BF16["H200"] == 989e12


@pytest.mark.parametrize("data,message", [({"widths": [64, 100], "seeds": [1, 1]}, "width 100 must be a positive multiple"),
                                          ({"widths": [64], "seeds": [1, 1]}, "equally long"),
                                          ({"depth": 3}, "unknown key"),
                                          ({"cumulative_weight_decay": 0}, "cumulative_weight_decay")])
def test_bad_ladder_config_names_the_field(data, message):
    with pytest.raises(KentropyError, match=message):
        ladder_config(data, "x.yaml: ladder")


def test_ladder_smoke_on_cpu_without_datasets_or_lm_eval(tmp_path):
    from safetensors.torch import load_file

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ladder_gpu.py"), "--smoke", "--device", "cpu",
                          "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "imported: neither datasets nor lm-eval" in run.stdout
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    lad = res["ladder"]
    assert "CPU: fp32 matmul peak measured" in lad["peak_source"] and lad["peak_flops"] > 1e9
    assert [w["width"] for w in lad["widths"]] == [16, 32] and [len(w["seeds"]) for w in lad["widths"]] == [2, 1]
    for w in lad["widths"]:
        assert w["tokens_per_s"] > 0 and 0 < w["mfu"] < 1 and w["dtype"] == "float32" and not w["compiled"]
        assert w["cumulative_weight_decay"] == pytest.approx(4.0, rel=1e-9)
        primary = w["contrasts"][0]
        assert primary["name"] == "end vs half" and w["delta_kl_per_layer"]["mean"] == primary["mean"]
        a, b = primary["from_step"], primary["to_step"]
        by_hand = [(s["knowledge_entropy"][s["steps"].index(a)] - s["knowledge_entropy"][s["steps"].index(b)]) / w["layers"]
                   for s in w["seeds"]]
        assert primary["per_seed"] == pytest.approx(by_hand, rel=1e-12)
        for s in w["seeds"]:
            assert s["steps"][0] == 0 and s["steps"][-1] == w["steps"] and len(s["coefficients"]) == len(s["steps"])
            final = tmp_path / "out" / "coefficients" / f"d{w['width']}" / f"seed{s['seed']}" / f"step-{w['steps']:06d}.safetensors"
            cbar = load_file(str(final))
            assert sorted(cbar) == [f"layers.{i}" for i in range(w["layers"])]  # Cbar per layer, [m] each
            assert all(t.shape == (w["ffn_dim"],) for t in cbar.values())
    two, one = lad["widths"]
    assert two["delta_kl_per_layer"]["ci"] is not None and len(two["delta_kl_per_layer"]["ci"]) == 2
    assert one["delta_kl_per_layer"]["ci"] is None and one["verdict"] == "inconclusive"  # one seed
    assert math.isfinite(one["delta_kl_per_layer"]["mean"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "# Scale ladder" in report and "one seed: inconclusive" in report
    check = json.loads((tmp_path / "out" / "precision.json").read_text())  # on a CPU both runs are fp32 eager
    assert check["width"] == 16 and check["steps"] == lad["widths"][0]["steps"] and check["max_relative_difference"] == 0
