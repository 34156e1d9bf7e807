"""The scale ladder on one GPU, as one prepared script (about 8 minutes on an H200): `kentropy lab --preset
ladder` with `datasets` and `lm-eval` refused at import (the GPU machine has neither), then its results.json,
report.md and every checkpoint's Cbar copied under the output folder, so that the analysis can be redone on a CPU.

    python benchmarks/ladder_gpu.py --out "$OUT"              # on the GPU machine (bf16 autocast, compiled)
    python benchmarks/ladder_gpu.py --smoke --out /tmp/ladder  # CPU smoke size: tiny widths, a few hundred steps

Then the precision check: the narrowest width's seed 0 trained `--check-steps` steps from its initialization on the
ladder's rows, in fp32 eager and in bf16 autocast compiled (what the ladder used), per-step losses compared
(precision.json). Prints the ladder's table (report.md), the check and the wall time at the end. The lab
directory itself (models) stays in --work (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

SMOKE = """version: 1
lab: {entities: 300, tokenizer_docs: 300}
ladder:
  widths: [16, 32]
  seeds: [2, 1]
  layers: 2
  head_dim: 8
  tokens_per_parameter: 1.5
  batch_size: 4
  seq_len: 32
  unique_fraction: 0.5
  tokenizer_vocab: 512
  measure_docs: 8
  early_checkpoints: 2
  late_checkpoints: 3
"""
REFUSED = ("datasets", "lm_eval")


class Refuse(importlib.abc.MetaPathFinder):
    """Refuse to import the packages the GPU machine lacks, so that a CPU run proves the path free of them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            raise ImportError(f"{name}: refused (the ladder's path must not import it)")
        return None


def precision_check(lab: Path, cfg, steps: int, device: str) -> dict:
    """fp32 eager against bf16 autocast compiled on the narrowest width's seed 0, same rows and order: per-step losses."""
    import dataclasses

    from safetensors.torch import load_file

    from kentropy.lab.regime import train_config
    from kentropy.lab.lean.pretrain import pretrain
    from kentropy.models.loading import pick_device

    lad = cfg.ladder
    arm = lad.arm(lad.widths[0])
    init = next(lab.glob(f"stages/ladder-d{arm.hidden}-pretrain-*/seed0/step-000000"))
    rows = load_file(str(next(lab.glob("stages/ladder-rows-*/rows.safetensors"))))["ids"]
    steps = min(steps, arm.steps())
    dev = pick_device(device)
    base = dataclasses.replace(train_config(arm, model=str(init), data="-", eval_every=0, save_every=0, epochs=10**6),
                               steps=steps, device=str(dev), overwrite=True)
    fp32 = pretrain(dataclasses.replace(base, out=str(lab / "precision" / "fp32"), dtype="float32"), compile=False, rows=rows)
    fast = pretrain(dataclasses.replace(base, out=str(lab / "precision" / "bf16"), dtype="bfloat16"), compile=dev.type == "cuda",
                    rows=rows)
    rel = [abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(fast, fp32)]
    tail = max(1, steps // 10)
    return {"width": arm.hidden, "steps": steps, "device": str(dev), "max_relative_difference": max(rel),
            "final_fp32": sum(r["loss"] for r in fp32[-tail:]) / tail, "final_bf16_compiled": sum(r["loss"] for r in fast[-tail:]) / tail,
            "fast": "bf16 autocast, compiled" if dev.type == "cuda" else "float32 (CPU: no autocast), eager"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="where results.json, report.md and coefficients/ are written")
    ap.add_argument("--work", default=None, help="lab directory (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="CPU smoke size (tiny widths, few steps) instead of the ladder preset")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--check-steps", type=int, default=300, help="steps of the precision check (0: skip it)")
    args = ap.parse_args()
    sys.meta_path.insert(0, Refuse())
    for name in REFUSED:
        sys.modules.pop(name, None)

    import torch

    from kentropy.lab.config import config_from_yaml, load_preset
    from kentropy.lab.pipeline import run_lab

    if args.smoke:
        torch.set_num_threads(1)  # tiny models: one thread, unhurt by a busy machine's other processes

    cfg = config_from_yaml(SMOKE, "ladder-smoke") if args.smoke else load_preset("ladder")
    work = Path(args.work or tempfile.mkdtemp(prefix="ladder-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run_lab(cfg, str(work / "lab"), args.device, "ladder-smoke" if args.smoke else "ladder")
    wall = time.perf_counter() - t0
    for name in ("results.json", "report.md"):
        shutil.copy(work / "lab" / name, out / name)
    for w in results["ladder"]["widths"]:
        for s in w["seeds"]:
            for step, f in zip(s["steps"], s["coefficients"]):
                dest = out / "coefficients" / f"d{w['width']}" / f"seed{s['seed']}" / f"step-{step:06d}.safetensors"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dest)
    print((out / "report.md").read_text())
    if args.check_steps:
        check = precision_check(work / "lab", cfg, args.check_steps, args.device)
        (out / "precision.json").write_text(json.dumps(check, indent=1))
        print(f"precision check (d={check['width']}, {check['steps']} steps, {check['fast']} vs fp32 eager): max relative loss "
              f"difference {check['max_relative_difference']:.2e}; mean loss of the last 10%: {check['final_bf16_compiled']:.4f} "
              f"vs {check['final_fp32']:.4f}")
    print(f"ladder: {wall:.0f} s wall; imported: {', '.join(n for n in REFUSED if n in sys.modules) or 'neither datasets nor lm-eval'}")


if __name__ == "__main__":
    main()
