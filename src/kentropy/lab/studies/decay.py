"""The decay study: does knowledge entropy decay once tiny models are trained into the paper's regime?

    kentropy lab --preset decay --out lab-decay/      # prints its plan first, then runs

OLMo-1B saw ~2,600 tokens per parameter and a cumulative weight decay (sum over steps of
lr_t x wd) of ~16. This study pretrains tiny models into that regime and changes one thing per arm
from the reference, OLMo-1B's block (`lab/architectures.py`): the norm and the FFN (a 2 x 2
factorial), the width, the world's size (spare capacity), the weight decay. Every arm runs several
pretraining seeds.

The analysis is preregistered (`lab/judge/plan.py`; the preset's `decay.plan`): printed before
anything runs, stored in results.json, and fixed by the config, never by the data. Checkpoints are
saved exactly at the plan's fractions of training (plus log-spaced early ones and linear late ones
for the figure). Per seed a contrast's change is ΔKL = (H[from] − H[to]) / L; per arm the seeds give
a t-interval, a one-sided t-test for decay and TOST against ±SESOI, with Holm across arms
(`lab/judge/seeds.py`); the primary contrast's verdict is the arm's. The bootstrap over measuring
documents gives each checkpoint's measurement-noise interval and is no part of a verdict.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch

from kentropy.measurement.bootstrap import percentile_interval
from kentropy.runtime.pool import worker_pool
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import Arm, DecayConfig, LabConfig, arm_changes, changes_text
from kentropy.lab.judge.deviations import RULES
from kentropy.lab.judge.findings import finding_1_power, can_test
from kentropy.lab.judge.gates import not_applicable
from kentropy.lab.judge.paper import PAPER_REFERENCE, compare_to_paper
from kentropy.lab.judge.plan import checkpoint_steps, fraction_step
from kentropy.lab.judge.plan import plan_text as analysis_plan_text
from kentropy.lab.judge.seeds import ArmSeeds, contrast_records
from kentropy.lab.labdir import slug
from kentropy.lab.regime import olmo_1b_regime, regime, train_config
from kentropy.lab.report.decay import decay_section
from kentropy.lab.report.loop import loop_section
from kentropy.lab.results import Context, Section
from kentropy.lab.stages.corpora import corpora_stage
from kentropy.lab.stages.measure import KNOWLEDGE_ONLY, SERIES, measure_stage
from kentropy.lab.stages.pretrain import pretrain_stage, rows_stage
from kentropy.lab.stages.tokenizer import tokenizer_stage
from kentropy.lab.studies.loop import close_the_loop, loop_plan_text, loop_world, side_by_side

MEASURE_BATCH = 64  # documents per measuring forward (tiny models: the larger the faster)
MEASURING_DATA = {"seen": "rows of the run's first pretraining batches (seen by every trained checkpoint; the paper's choice)",
                  "held_out": "world documents outside the pretraining text (from the arm's own world)"}
HEADLINE = "seen"  # the series the plan's contrasts are judged on (the paper's measuring data)
LOSS_WINDOW = 10  # the training loss beside H at step s: the mean over the optimizer steps s − 10 … s − 1


def estimate_seconds(cfg: DecayConfig) -> float:
    """Training time of the whole study: every run's tokens at `tokens_per_second`, `workers` runs side by side."""
    tokens = sum(regime(a)["tokens"] * len(cfg.seeds_of(n)) for n, a in cfg.all_arms().items())
    return tokens / (cfg.tokens_per_second * max(1, cfg.workers))


def plan_text(cfg: DecayConfig) -> str:
    """The study's plan, printed before it starts: the preregistered analysis, every arm's regime and
    what it changes, the checkpoints and the time estimate."""
    plan = cfg.analysis_plan()
    o = olmo_1b_regime()
    lines = [analysis_plan_text(plan),
             "[lab] decay study arms (tokens per non-embedding parameter; cumulative weight decay = sum lr_t x wd):",
             f"[lab]   {'arm':<26} {'seeds':>5} {'params':>8} {'steps':>7} {'tokens':>11} {'tok/param':>9} {'sum lr*wd':>9} "
             f"{'epochs':>6}  changes",
             f"[lab]   {'OLMo-1B (paper)':<26} {'':>5} {'1.18e9':>8} {o['steps']:>7} {'3.0e12':>11} "
             f"{o['tokens_per_parameter']:>9.0f} {o['cumulative_weight_decay']:>9.2f} {1:>6.1f}"]
    total = 0
    for name, arm in cfg.all_arms().items():
        r = regime(arm)
        seeds = cfg.seeds_of(name)
        total += r["tokens"] * len(seeds)
        lines.append(f"[lab]   {name:<26} {len(seeds):>5} {r['non_embedding_parameters']:>8} {r['steps']:>7} {r['tokens']:>11,} "
                     f"{r['tokens_per_parameter']:>9.0f} {r['cumulative_weight_decay']:>9.2f} {r['epochs']:>6.1f}  "
                     f"{changes_text(arm_changes(cfg.reference, arm))}")
    saves = arm_saves(cfg.reference, cfg)
    lines.append(f"[lab]   total: {total:,} training tokens; reference checkpoints at steps {saves} (+ init); "
                 f"{cfg.measure_docs} documents per series, {cfg.bootstrap} bootstrap resamples (measurement noise only)")
    lines.append(f"[lab]   estimate: training ~{estimate_seconds(cfg) / 60:.0f} min at {cfg.tokens_per_second:,.0f} tokens/s per "
                 f"run, {cfg.workers} side by side (measuring and the loop come on top)")
    lines += [f"[lab] changed after a run was seen: {d}" for d in (*RULES, *cfg.deviations)]
    return "\n".join(lines)


def print_plan(cfg: DecayConfig) -> None:
    print(plan_text(cfg) + "\n" + loop_plan_text(cfg), file=sys.stderr)


def text_tokens(arm: Arm) -> int:
    """Tokens of pretraining text an arm reads: unique_fraction x its training tokens, plus two rows of slack."""
    return math.ceil(regime(arm)["tokens"] * arm.unique_fraction) + 2 * arm.seq_len


def arm_model(arm: Arm, seed: int) -> dict:
    """`build_model`'s arguments for an arm (tied embeddings, as OLMo-1B)."""
    return {"arch": arm.arch, "norm": arm.norm, "init": arm.init, "seed": seed, "hidden": arm.hidden, "layers": arm.layers,
            "heads": arm.heads, "gated_ffn": arm.ffn, "positions": arm.seq_len, "tie": True}


def arm_saves(arm: Arm, dcfg: DecayConfig) -> list[int]:
    """The steps an arm saves: every contrast's from/to step and every loop starting point exactly,
    log-spaced early, linear late."""
    r = regime(arm)
    saves = checkpoint_steps(dcfg.analysis_plan(), r["steps"], r["warmup_steps"], dcfg.early_checkpoints, dcfg.late_checkpoints)
    return sorted(set(saves) | {fraction_step(f, r["steps"]) for f in dcfg.loop_fractions})


def arm_text(arm: Arm, corpora: Done) -> str:
    """The pretraining text file an arm reads (its size: `text_tokens`)."""
    return corpora.result["pretrain"][str(text_tokens(arm))]["path"]


def pack_text(root: str, name: str, data: str, tok: Done, seq_len: int) -> Done:
    """`rows_stage` in a worker process (the seeds of an arm read its text packed once)."""
    return rows_stage(Stages(Path(root), record_timings=False), name, data, tok, seq_len)


def run_arm(root: str, name: str, arm: Arm, seed: int, dcfg: DecayConfig, tok: Done, corpora: Done, rows: Done,
            device: str) -> tuple[Done, Done]:
    """One run, in one thread (tiny models use one core better than two), in a worker process when the
    study trains side by side; the caller's thread count comes back after, and its wall times stay here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_arm(root, name, arm, seed, dcfg, tok, corpora, rows, device)
    finally:
        torch.set_num_threads(threads)


def _run_arm(root: str, name: str, arm: Arm, seed: int, dcfg: DecayConfig, tok: Done, corpora: Done, rows: Done,
             device: str) -> tuple[Done, Done]:
    """Pretrain the arm with `seed` (saves at the plan's steps) on its packed rows, then measure every checkpoint
    on both series."""
    stages = Stages(Path(root), record_timings=False)
    train = train_config(arm, data=arm_text(arm, corpora), eval_every=0, save_every=0, save_at=arm_saves(arm, dcfg),
                         epochs=math.ceil(1 / arm.unique_fraction), seed=seed, compile=dcfg.compile)
    pre = pretrain_stage(stages, f"decay-{slug(name)}-seed{seed}-pretrain", arm_model(arm, seed), train, tok, corpora, device,
                         first=dcfg.measure_docs, rows=rows)
    meas = measure_stage(stages, f"decay-{slug(name)}-seed{seed}-measure", pre, corpora, device, seq_len=arm.seq_len,
                         batch_size=MEASURE_BATCH, series=SERIES, bootstrap=dcfg.bootstrap, seed=seed, diagnostics=True,
                         metrics=KNOWLEDGE_ONLY)
    return pre, meas


def world_corpora(stages: Stages, lab: LabConfig, dcfg: DecayConfig, tok: Done) -> dict[float, Done]:
    """One corpora stage per world size the arms ask for (`world_fraction` of the lab's entities; fresh text each)."""
    out = {}
    arms = dcfg.all_arms()
    for frac in sorted({a.world_fraction for a in arms.values()}, reverse=True):
        mine = [a for a in arms.values() if a.world_fraction == frac]
        world = dataclasses.replace(lab, entities=max(1, round(lab.entities * frac)))
        out[frac] = corpora_stage(stages, world, tok, pretrain_tokens=[text_tokens(a) for a in mine],
                                  measure_docs=dcfg.measure_docs, continual=False,
                                  name="decay-corpora" if frac == 1 else f"decay-corpora-world{frac:g}")
    return out


def run_decay_study(stages: Stages, lab: LabConfig, dcfg: DecayConfig, device: str) -> tuple[dict, dict[tuple[str, int], Done]]:
    """Every arm x seed: pretrain, measure (`workers` runs side by side); then the plan's contrasts over seeds
    (`decay_study` of results.json), and the pretraining stages by (arm, seed). The plan was printed
    before the lab's first stage (`pipeline.run_lab`)."""
    plan = dcfg.analysis_plan()
    tok = tokenizer_stage(stages, lab, vocab=dcfg.tokenizer_vocab, name="decay-tokenizer")
    arms = dcfg.all_arms()
    corpora = world_corpora(stages, lab, dcfg, tok)
    loop_world(stages, lab, dcfg)  # the loop's knowledge and tasks generated (or refused) before any pretraining
    jobs = [(name, arm, seed) for name, arm in arms.items() for seed in dcfg.seeds_of(name)]
    # the longest runs first, so that the last worker does not finish alone
    jobs.sort(key=lambda j: -regime(j[1])["tokens"] * regime(j[1])["non_embedding_parameters"])
    # each distinct (text, row length) packed once, named after the first arm that reads it
    key = {n: (arm_text(a, corpora[a.world_fraction]), a.seq_len) for n, a in arms.items()}
    texts = {}
    for n in arms:
        texts.setdefault(key[n], f"decay-{slug(n)}-rows")
    done = {}
    t0 = time.perf_counter()
    if side_by_side(dcfg.workers, device):
        with worker_pool(dcfg.workers) as pool:  # an interrupt stops the workers at once
            futures = {pool.submit(pack_text, str(stages.root), label, data, tok, seq_len): (data, seq_len)
                       for (data, seq_len), label in texts.items()}
            packed = {futures[f]: f.result() for f in cf.as_completed(futures)}
            rows = {n: packed[key[n]] for n in arms}
            futures = {pool.submit(run_arm, str(stages.root), n, a, s, dcfg, tok, corpora[a.world_fraction], rows[n], device): (n, s)
                       for n, a, s in jobs}
            for f in cf.as_completed(futures):
                done[futures[f]] = f.result()
                n, s = futures[f]
                print(f"[lab] decay {n} seed {s}: done ({done[(n, s)][0].result['seconds']:.0f} s of training)", file=sys.stderr)
    else:
        packed = {(data, seq_len): pack_text(str(stages.root), label, data, tok, seq_len) for (data, seq_len), label in texts.items()}
        rows = {n: packed[key[n]] for n in arms}
        for n, a, s in jobs:
            done[(n, s)] = run_arm(str(stages.root), n, a, s, dcfg, tok, corpora[a.world_fraction], rows[n], device)
    # the runs overlap, so their stage times do not add up: the timings get the wall time of all of them
    # (each run's own time is in the study's table); a rerun that found every run cached keeps the old entry
    wall = time.perf_counter() - t0
    if wall > 30 or "decay-runs" not in stages.timings:
        stages.record("decay-runs", wall, f"{len(jobs)} runs, {dcfg.workers} side by side")
    pilot = dcfg.pilot_plan()
    gate_1 = {"knowledge": not_applicable("finding 1 is about pretraining alone"),
              "power": finding_1_power(pilot, len(dcfg.seeds_of("reference")), plan.sesoi, plan.alpha),
              "manipulation": not_applicable("no manipulation: nothing is edited before this finding's outcome")}
    result = {"plan": plan.to_json(), "gates": {"1": gate_1}, "pilot": dcfg.pilot, "deviations": list(dcfg.deviations),
              "paper_reference": dict(PAPER_REFERENCE),
              "olmo_1b": olmo_1b_regime(), "arms": [], "workers": dcfg.workers, "measuring_data": MEASURING_DATA, "headline_series": HEADLINE,
              "estimate_seconds": estimate_seconds(dcfg)}
    entries = {}
    for name, arm in arms.items():
        seeds = dcfg.seeds_of(name)
        pres = [done[(name, s)][0].result for s in seeds]
        meas = [done[(name, s)][1].result for s in seeds]
        entries[name] = arm_result(name, arm, dcfg, seeds, pres, meas)
    contrasts = contrast_records({n: ArmSeeds(arms[n].layers, regime(arms[n])["steps"], e["seeds"]) for n, e in entries.items()},
                                 plan)
    for name, e in entries.items():
        e["contrasts"] = contrasts[name]
        primary = next(c for c in e["contrasts"] if c["name"] == plan.primary)
        e["verdict"] = primary["verdict"]
        e["effect"] = compare_to_paper(primary["mean"], e["layers"], e["ffn_dim"])
        result["arms"].append(e)
    return result, {key: pre for key, (pre, _) in done.items()}


def load_draws(path: str) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(path)["draws"]


def checkpoint_loss(loss: list, step: int) -> float | None:
    """The mean training loss over the optimizer steps max(0, step − LOSS_WINDOW) … step − 1 (logged 0-based:
    the checkpoint at `step` comes after step − 1); None at the initialization."""
    xs = [v for s, v in loss if step - LOSS_WINDOW <= s < step]
    return sum(xs) / len(xs) if xs else None


def seed_record(seed: int, pre: dict, meas: dict) -> dict:
    """One seed's record of the contract, from its measure stage (headline series) and its training log."""
    res = meas["series"][HEADLINE]["results"]
    return {"seed": seed, "steps": list(meas["steps"]), "knowledge_entropy": [r["knowledge_entropy"] for r in res],
            "knowledge_entropy_per_layer": [r["knowledge_entropy_per_layer"] for r in res],
            "loss": [checkpoint_loss(pre["loss"], s) for s in meas["steps"]]}


def _mean(rows: list) -> list:
    """Elementwise mean over seeds of equally shaped nested lists (None stays None)."""
    first = rows[0]
    if isinstance(first, list):
        return [_mean([r[i] for r in rows]) for i in range(len(first))]
    return None if any(r is None for r in rows) else sum(rows) / len(rows)


def arm_result(name: str, arm: Arm, dcfg: DecayConfig, seeds: list[int], pres: list[dict], meas: list[dict]) -> dict:
    """One arm's entry of `decay_study.arms` (the contract) before the contrasts: its seeds' records, what it
    changes, its regime, the measurement-noise intervals and the diagnostics."""
    r = regime(arm)
    steps = list(meas[0]["steps"])
    records = [seed_record(s, p, m) for s, p, m in zip(seeds, pres, meas)]
    series = {}
    for k in SERIES:
        draws = [load_draws(m["series"][k]["draws"]) for m in meas]
        res = [m["series"][k]["results"] for m in meas]
        series[k] = {"knowledge_entropy": _mean([[x["knowledge_entropy"] for x in rr] for rr in res]),
                     # measurement noise of the mean over seeds: the seeds' bootstrap draws averaged, percentile interval
                     "knowledge_entropy_ci": [list(percentile_interval(x)) for x in torch.stack(draws).mean(0)],
                     "attention_entropy": _mean([[x["attention_entropy"] for x in rr] for rr in res]),
                     "next_token_entropy": _mean([[x["next_token_entropy"] for x in rr] for rr in res]),
                     "per_seed": [{"seed": s, "knowledge_entropy": [x["knowledge_entropy"] for x in rr],
                                   "knowledge_entropy_ci": m["series"][k]["knowledge_entropy_ci"]}
                                  for s, rr, m in zip(seeds, res, meas)]}
    diag = [m["diagnostics"] for m in meas]
    keys = list(diag[0][0]) if diag[0] else []
    diagnostics = {"steps": steps, "series": HEADLINE,
                   "mean": {k: _mean([[d[k] for d in seed] for seed in diag]) for k in keys} | {
                       "loss": _mean([x["loss"] for x in records])},
                   "per_seed": [{"seed": s, **{k: [d[k] for d in seed] for k in keys}} for s, seed in zip(seeds, diag)]}
    head = series[HEADLINE]
    return {"name": name, "changes": arm_changes(dcfg.reference, arm), "family": arm.family,
            "overrides": {k: v["arm"] for k, v in arm_changes(dcfg.reference, arm)["fields"].items()},
            "layers": arm.layers, "ffn_dim": arm.ffn_dim, "max_entropy": arm.layers * math.log(arm.ffn_dim),
            "seeds": records, "tokens_per_parameter": r["tokens_per_parameter"],
            "cumulative_weight_decay": r["cumulative_weight_decay"], "regime": r, "steps": steps,
            "knowledge_entropy": head["knowledge_entropy"], "knowledge_entropy_ci": head["knowledge_entropy_ci"],
            "series": series, "diagnostics": diagnostics, "wall_seconds": sum(p["seconds"] for p in pres),
            "tokens_per_s": [p["tokens_per_s"] for p in pres], "final_loss": [p["final_loss"] for p in pres],
            "checkpoints": [[c["path"] for c in p["checkpoints"]] for p in pres]}


def decay_study(ctx: Context) -> Section:
    """The decay study: arms pretrained into the paper's regime, their entropy trajectories and verdicts,
    then continual learning from the checkpoints of the arms that decay (`studies/loop.py`)."""
    cfg, dcfg = ctx.run.cfg, ctx.run.cfg.decay
    study, pretrains = run_decay_study(ctx.stages, cfg, dcfg, ctx.device)
    loop = close_the_loop(ctx.stages, cfg, dcfg, study, pretrains, ctx.done["world"], ctx.done["corpora"], ctx.device)
    gates = {**study["gates"], **loop.pop("gates")}
    ref = next(a for a in study["arms"] if a["name"] == "reference")
    res = loop["resuscitation"]
    verdicts = {"1": (ref["verdict"], None), "2c": (loop["slope_A_on_H"]["verdict"], loop["slope_A_on_H"]["why"]),
                "2d": (loop["slope_F_on_H"]["verdict"], loop["slope_F_on_H"]["why"]),
                "2e": (loop["slope_dP_on_H"]["verdict"], loop["slope_dP_on_H"]["why"]),
                "3a": (res["verdict_A"], res["why_A"]), "3b": (res["verdict_F"], res["why_F"])}
    result = {**study, "gates": gates, "testable": can_test(gates, verdicts), "loop": loop}
    return Section("decay_study", decay_section(result, ctx.run.dir.figures) + loop_section(loop), result)
