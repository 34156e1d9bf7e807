"""The scale ladder on one GPU, as one prepared script (about 8 minutes on an H200): `kentropy lab --preset
ladder` with `datasets` and `lm-eval` refused at import (the GPU machine has neither), then its results.json,
report.md and every checkpoint's Cbar copied under the output folder, so that the analysis can be redone on a CPU.

    python benchmarks/ladder_gpu.py --out "$OUT"              # on the GPU machine (bf16 autocast, compiled)
    python benchmarks/ladder_gpu.py --smoke --out /tmp/ladder  # CPU smoke size: tiny widths, a few hundred steps

Prints the ladder's table (report.md) and the wall time at the end. The lab directory itself (models) stays
in --work (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import importlib.abc
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="where results.json, report.md and coefficients/ are written")
    ap.add_argument("--work", default=None, help="lab directory (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="CPU smoke size (tiny widths, few steps) instead of the ladder preset")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    sys.meta_path.insert(0, Refuse())
    for name in REFUSED:
        sys.modules.pop(name, None)

    from kentropy.lab.config import config_from_yaml, load_preset
    from kentropy.lab.pipeline import run_lab

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
    print(f"ladder: {wall:.0f} s wall; imported: {', '.join(n for n in REFUSED if n in sys.modules) or 'neither datasets nor lm-eval'}")


if __name__ == "__main__":
    main()
