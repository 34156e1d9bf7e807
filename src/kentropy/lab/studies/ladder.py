"""The scale ladder: is the decay study's null result a matter of scale? OLMo's block at `layers` layers and
growing widths, sized for one GPU (bf16 autocast and torch.compile on CUDA; fp32, eager on CPU).

    kentropy lab --preset ladder --out lab-ladder/      # `make ladder`; prints its plan first, then runs

Every width trains 150 tokens per non-embedding parameter with the same cumulative weight decay
(sum over steps of lr_t x wd: wd is set per width from the schedule), its seeds stacked into one
model (`kentropy.lab.lean.stacked`: each member its own init, row order and AdamW state). Each member's
checkpoints (at the preregistered plan's fractions, plus log-spaced early and linear late ones) are
measured on the rows of its first batches, and every checkpoint's Cbar is saved (the measure stage's
coefficient files), so that the analysis can be redone on a CPU. The plan's contrasts are judged
over seeds per width (`judge/seeds.contrast_records`: ΔKL = (H[from] − H[to]) / L per seed,
t-interval, Holm across widths); a width with one seed is inconclusive by construction.

The ladder stands alone (no core study), and nothing on its path imports `datasets` or `lm-eval`.
Throughput is reported as tokens/s and MFU per width: model FLOPs per token
6 x (non-embedding matrices + LM head) + 6 x layers x seq_len x d, against the device's bf16 dense
peak (`PEAK_BF16`, by device name) on CUDA, or an fp32 matmul peak measured in the run on a CPU.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import torch

from kentropy.training.corpus import epochs_needed
from kentropy.io import write_atomic, write_dir_atomic, write_json
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import Arm, LabConfig, LadderConfig, config_json
from kentropy.lab.judge.deviations import RULES
from kentropy.lab.judge.findings import finding_1_power
from kentropy.lab.judge.gates import not_applicable
from kentropy.lab.judge.plan import checkpoint_steps
from kentropy.lab.judge.plan import plan_text as analysis_plan_text
from kentropy.lab.judge.seeds import ArmSeeds, contrast_records
from kentropy.lab.regime import regime, train_config
from kentropy.lab.report.ladder import ladder_section
from kentropy.lab.stages.corpora import corpora_stage
from kentropy.lab.stages.measure import KNOWLEDGE_ONLY, measure_stage
from kentropy.lab.stages.pretrain import INIT, PER_RUN, load_rows, rows_stage
from kentropy.lab.stages.tokenizer import tokenizer_stage

# bf16 dense tensor-core peak by device name (vendor data sheets; SXM parts), FLOP/s
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12, "RTX 4090": 165e12}
MEASURE_BATCH = 64
END_WINDOW = 0.1  # "still learning": the mean loss of the last 10% of steps below that of the 10% before


def width_name(width: int) -> str:
    return f"d={width}"


def flops_per_token(arm: Arm, vocab: int) -> float:
    """6 x (non-embedding matrices + LM head) + 6 x layers x seq_len x d (attention scores and values)."""
    d, m, L = arm.hidden, arm.ffn, arm.layers
    return 6 * (L * (4 * d * d + 3 * d * m) + vocab * d) + 6 * L * arm.seq_len * d


def peak_flops(device: torch.device) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from): on CUDA the device's bf16 dense peak from `PEAK_BF16`; on a CPU an fp32
    matmul peak measured here (1024^3 products, the best of 10, at the run's thread count)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in PEAK_BF16.items():
            if key in name:
                return peak, f"{name}: bf16 dense peak {peak / 1e12:.0f} TFLOP/s (data sheet)"
        return math.nan, f"{name}: not in the table of bf16 peaks (MFU not given)"
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = math.inf
    for _ in range(10):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    peak = 2 * 1024**3 / best
    return peak, f"CPU: fp32 matmul peak measured in this run ({torch.get_num_threads()} threads): {peak / 1e9:.0f} GFLOP/s"


def saves(arm: Arm, lcfg: LadderConfig) -> list[int]:
    r = regime(arm)
    return checkpoint_steps(lcfg.analysis_plan(), r["steps"], r["warmup_steps"], lcfg.early_checkpoints, lcfg.late_checkpoints)


def text_tokens(lcfg: LadderConfig) -> int:
    """Unique pretraining text: unique_fraction of the widest width's tokens (every width reads a prefix)."""
    widest = max(regime(lcfg.arm(w))["tokens"] for w in lcfg.widths)
    return math.ceil(widest * lcfg.unique_fraction) + 2 * lcfg.seq_len


def model_args(arm: Arm, seed: int) -> dict:
    return {"arch": arm.arch, "norm": arm.norm, "init": arm.init, "seed": seed, "hidden": arm.hidden, "layers": arm.layers,
            "heads": arm.heads, "gated_ffn": arm.ffn, "positions": arm.seq_len, "tie": True}


def plan_text(lcfg: LadderConfig) -> str:
    lines = [analysis_plan_text(lcfg.analysis_plan()), "[lab] scale ladder (OLMo's block, seeds stacked per width):",
             f"[lab]   {'width':>6} {'seeds':>5} {'params':>9} {'steps':>7} {'tokens':>12} {'wd':>7} {'sum lr*wd':>9}"]
    for w, n in zip(lcfg.widths, lcfg.seeds):
        arm = lcfg.arm(w)
        r = regime(arm)
        lines.append(f"[lab]   {w:>6} {n:>5} {r['non_embedding_parameters']:>9,} {r['steps']:>7} {r['tokens']:>12,} "
                     f"{arm.weight_decay:>7.4f} {r['cumulative_weight_decay']:>9.2f}")
    lines.append(f"[lab]   unique text: {text_tokens(lcfg):,} tokens (the widest width repeats it "
                 f"{1 / lcfg.unique_fraction:.0f} times)")
    return "\n".join(lines)


def ladder_pretrain_stage(stages: Stages, arm: Arm, seeds: list[int], lcfg: LadderConfig, tok: Done, corpora: Done,
                          rows: Done, device: str) -> Done:
    """One width: its seeds' inits, trained stacked (compiled on CUDA); each member's checkpoints, loss log and
    first rows (the measuring series)."""
    size = text_tokens(lcfg)
    train = train_config(arm, data=corpora.result["pretrain"][str(size)]["path"], eval_every=0, save_every=0,
                         save_at=saves(arm, lcfg), epochs=epochs_needed(rows.result["rows"], regime(arm)["steps"], arm.batch_size))
    conf = {"arm": dataclasses.asdict(arm), "seeds": seeds, "tokenizer": tok.hash, "corpora": corpora.hash, "rows": rows.hash,
            "first_rows": lcfg.measure_docs, "train": {k: v for k, v in dataclasses.asdict(train).items() if k not in PER_RUN}}
    return stages.run(f"ladder-d{arm.hidden}-pretrain", conf,
                      lambda d: _train_width(d, arm, seeds, train, tok, rows, device, lcfg.measure_docs),
                      code=("kentropy.lab.architectures", "kentropy.lab.lean.model", "kentropy.lab.lean.pretrain", "kentropy.lab.lean.stacked",
                            "kentropy.training.corpus"))


def _train_width(d: Path, arm: Arm, seeds: list[int], train, tok_done: Done, rows_done: Done, device: str, first: int) -> dict:
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from kentropy.training.corpus import row_order
    from kentropy.lab.architectures import build_model
    from kentropy.lab.lean.stacked import pretrain_stacked
    from kentropy.models.loading import pick_device
    from kentropy.training.rundir import RunDir

    dev = pick_device(device)
    tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
    packed = load_rows(rows_done)
    cfgs, inits, rows = [], [], []
    for s in seeds:
        init = d / f"seed{s}" / INIT
        if not (init / "model.safetensors").is_file():
            m = build_model(tok=tok, vocab=len(tok), **model_args(arm, s))
            write_dir_atomic(init, lambda tmp, m=m: (m.save_pretrained(tmp), tok.save_pretrained(tmp)))
        cfg = dataclasses.replace(train, model=str(init), out=str(d / f"seed{s}" / "run"), device=str(dev), seed=s,
                                  overwrite=True, compile=dev.type == "cuda")
        path = d / f"seed{s}" / "first_rows.safetensors"
        ids = packed[row_order(len(packed), epochs_needed(len(packed), cfg.steps, cfg.batch_size), s)[:first]].contiguous()
        write_atomic(path, lambda tmp, ids=ids: save_file({"ids": ids}, str(tmp)))
        cfgs.append(cfg)
        inits.append(init)
        rows.append(path)
    t0 = time.perf_counter()
    logs = pretrain_stacked(cfgs, rows=packed)
    seconds = time.perf_counter() - t0
    speeds = sorted(r["tokens_per_s"] for r in logs[0][len(logs[0]) // 3:])  # per member, past compilation and warm-up
    members = []
    for s, cfg, init, path, log in zip(seeds, cfgs, inits, rows, logs):
        ck = [{"step": 0, "path": str(init)}] + [{"step": n, "path": str(p)} for n, p in RunDir(cfg.out).saved_checkpoints()]
        members.append({"seed": s, "checkpoints": ck, "steps": cfg.steps, "loss": [(r["step"], r["loss"]) for r in log],
                        "final_loss": log[-1]["loss"], "first_rows": str(path)})
    return {"members": members, "seconds": seconds, "tokens_per_s": speeds[len(speeds) // 2] * len(seeds),
            "device": str(dev), "compiled": dev.type == "cuda",
            "dtype": "bfloat16 autocast" if dev.type == "cuda" and train.dtype == "bfloat16" else "float32"}


def still_learning(loss: list) -> bool:
    """The mean training loss of the last END_WINDOW of steps is below that of the END_WINDOW before."""
    n = max(1, int(len(loss) * END_WINDOW))
    last, before = [v for _, v in loss[-n:]], [v for _, v in loss[-2 * n : -n]]
    return bool(before) and sum(last) / len(last) < sum(before) / len(before)


def run_ladder(stages: Stages, lab: LabConfig, lcfg: LadderConfig, device: str) -> dict:
    """Every width: pretrain its seeds stacked, measure each member's checkpoints; the plan's contrasts over seeds."""
    from kentropy.models.loading import pick_device

    plan = lcfg.analysis_plan()
    tok = tokenizer_stage(stages, lab, vocab=lcfg.tokenizer_vocab, name="ladder-tokenizer")
    size = text_tokens(lcfg)
    corpora = corpora_stage(stages, lab, tok, pretrain_tokens=[size], measure_docs=lcfg.measure_docs, continual=False,
                            name="ladder-corpora")
    rows = rows_stage(stages, "ladder-rows", corpora.result["pretrain"][str(text_tokens(lcfg))]["path"], tok, lcfg.seq_len)
    peak, peak_source = peak_flops(pick_device(device))
    widths, arms = [], {}
    for w, n in zip(lcfg.widths, lcfg.seeds):
        arm = lcfg.arm(w)
        seeds = list(range(n))
        pre = ladder_pretrain_stage(stages, arm, seeds, lcfg, tok, corpora, rows, device)
        records = []
        for k, member in enumerate(pre.result["members"]):
            one = Done(member, pre.dir, f"{pre.hash}-{k}")
            meas = measure_stage(stages, f"ladder-d{w}-seed{member['seed']}-measure", one, corpora, device, seq_len=arm.seq_len,
                                 batch_size=MEASURE_BATCH, series=("seen",), metrics=KNOWLEDGE_ONLY)
            res = meas.result["series"]["seen"]["results"]
            records.append({"seed": member["seed"], "steps": list(meas.result["steps"]),
                            "knowledge_entropy": [r["knowledge_entropy"] for r in res],
                            "knowledge_entropy_per_layer": [r["knowledge_entropy_per_layer"] for r in res],
                            "coefficients": [r["coefficients"] for r in res], "final_loss": member["final_loss"],
                            "still_learning": still_learning(member["loss"])})
        r = regime(arm)
        f = flops_per_token(arm, len_vocab(tok))
        tps = pre.result["tokens_per_s"]
        widths.append({"width": w, "name": width_name(w), "layers": arm.layers, "heads": arm.heads, "ffn_dim": arm.ffn,
                       "seeds": records, "non_embedding_parameters": r["non_embedding_parameters"], "steps": r["steps"],
                       "tokens": r["tokens"], "tokens_per_parameter": r["tokens_per_parameter"], "weight_decay": arm.weight_decay,
                       "cumulative_weight_decay": r["cumulative_weight_decay"], "train_seconds": pre.result["seconds"],
                       "tokens_per_s": tps, "flops_per_token": f, "mfu": tps * f / peak if peak == peak else None,
                       "device": pre.result["device"], "compiled": pre.result["compiled"], "dtype": pre.result["dtype"]})
        arms[width_name(w)] = ArmSeeds(arm.layers, r["steps"], records)
        print(f"[lab] ladder d={w}: {n} seed(s) stacked, {r['steps']} steps, {tps:,.0f} tokens/s", file=sys.stderr)
    contrasts = contrast_records(arms, plan)
    for e in widths:
        e["contrasts"] = contrasts[e["name"]]
        primary = next(c for c in e["contrasts"] if c["name"] == plan.primary)
        e["verdict"] = primary["verdict"]
        e["delta_kl_per_layer"] = {"mean": primary["mean"], "ci": primary["ci"], "seeds": len(e["seeds"])}
    return {"plan": plan.to_json(), "peak_flops": peak, "peak_source": peak_source, "widths": widths,
            "unique_text_tokens": text_tokens(lcfg), "widest_still_learning": all(s["still_learning"] for s in widths[-1]["seeds"])}


def len_vocab(tok: Done) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(tok.result["path"]))


def ladder_lab(stages: Stages, cfg: LabConfig, preset: str, device: str) -> dict:
    """The ladder alone (no core study): results.json {"preset", "config", "timings", "ladder"} and report.md."""
    print(plan_text(cfg.ladder) + "".join(f"\n[lab] changed after a run was seen: {d}" for d in RULES), file=sys.stderr)
    result = run_ladder(stages, cfg, cfg.ladder, device)
    plan = cfg.ladder.analysis_plan()
    gates = {"1": {"knowledge": not_applicable("finding 1 is about pretraining alone"),
                   "power": finding_1_power(None, max(cfg.ladder.seeds), plan.sesoi, plan.alpha),
                   "manipulation": not_applicable("no manipulation: nothing is edited before this finding's outcome")}}
    results = {"preset": preset, "config": config_json(cfg), "timings": stages.timings, "gates": gates,
               "deviations": list(RULES), "ladder": result}
    write_json(stages.dir.results, stages.dir.stored(results))  # paths in the lab relative to it
    md = ladder_section(result)
    write_atomic(stages.dir.report, lambda tmp: tmp.write_text(md))
    return results
