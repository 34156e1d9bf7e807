"""The decay study: does knowledge entropy decay once tiny models are trained into the paper's regime?

    kentropy lab --preset decay --out lab-decay/      # prints its plan, then runs (34 min measured on an idle 2-core CPU)

OLMo-1B saw ~2,600 tokens per parameter and a cumulative weight decay (sum over steps of
lr_t x wd) of ~16. This study pretrains tiny models into that regime (the reference arm
reaches >= 1,000 tokens per non-embedding parameter, every arm >= 300, every arm with weight
decay a cumulative decay >= 5) and changes one factor at a time from the reference: the FFN
activation, the initialization, the weight decay, the schedule, the width, the data
repetition. Every arm saves log-spaced checkpoints and measures knowledge, attention and
next-token entropy at each on two series: the rows of the first pretraining batches (which
every trained checkpoint has seen; the paper's measuring data) and held-out world text.

Verdicts are judged on trained checkpoints after warmup (`lab/judge/trajectory.py`): the
entropy's peak, and the change from the peak to the end with a 95% paired bootstrap interval over
measurement documents (`kentropy.bootstrap`); with several seeds, also the interval over seeds.

The study calls the lab's own stages, parameterised: the tokenizer (its own vocabulary size), the
corpora (one pretraining stream, a prefix per arm), pretraining and measuring; the arms and their
regime are in `lab/config.py` and `lab/regime.py`.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import Arm, DecayConfig, LabConfig
from kentropy.lab.labdir import slug
from kentropy.lab.judge.trajectory import combine_seeds, summarize_run, trajectory_verdict
from kentropy.lab.regime import log_spaced_steps, olmo_1b_regime, regime, train_config
from kentropy.lab.report.decay import decay_section
from kentropy.lab.report.loop import loop_section
from kentropy.lab.results import Context, Section
from kentropy.lab.stages.corpora import corpora_stage
from kentropy.lab.stages.measure import SERIES, measure_stage
from kentropy.lab.stages.pretrain import pretrain_stage
from kentropy.lab.stages.tokenizer import tokenizer_stage
from kentropy.lab.studies.loop import close_the_loop

MEASURE_BATCH = 64  # documents per measuring forward (tiny models: the larger the faster)
MEASURING_DATA = {"seen": "rows of the run's first pretraining batches (seen by every trained checkpoint; the paper's choice)",
                  "held_out": "world documents outside the pretraining text"}


def plan_text(cfg: DecayConfig) -> str:
    """The study's plan, printed before it starts: every arm's regime and work."""
    o = olmo_1b_regime()
    lines = ["[lab] decay study plan (tokens per non-embedding parameter; cumulative weight decay = sum lr_t x wd):",
             f"[lab]   {'arm':<22} {'seeds':>5} {'params':>8} {'steps':>7} {'tokens':>11} {'tok/param':>9} {'sum lr*wd':>9} {'epochs':>6}",
             f"[lab]   {'OLMo-1B (paper)':<22} {'':>5} {'1.18e9':>8} {o['steps']:>7} {'3.0e12':>11} "
             f"{o['tokens_per_parameter']:>9.0f} {o['cumulative_weight_decay']:>9.2f} {1:>6.1f}"]
    total = 0
    for name, arm in cfg.all_arms().items():
        r = regime(arm)
        seeds = cfg.seeds_of(name)
        total += r["tokens"] * len(seeds)
        lines.append(f"[lab]   {name:<22} {len(seeds):>5} {r['non_embedding_parameters']:>8} {r['steps']:>7} {r['tokens']:>11,} "
                     f"{r['tokens_per_parameter']:>9.0f} {r['cumulative_weight_decay']:>9.2f} {r['epochs']:>6.1f}")
    lines.append(f"[lab]   total: {total:,} training tokens; {cfg.checkpoints} log-spaced checkpoints + init per run, "
                 f"{cfg.measure_docs} documents per series, {cfg.bootstrap} bootstrap resamples")
    return "\n".join(lines)


def print_plan(cfg: DecayConfig) -> None:
    print(plan_text(cfg), file=sys.stderr)


def text_tokens(arm: Arm) -> int:
    """Tokens of pretraining text an arm reads: unique_fraction x its training tokens, plus two rows of slack."""
    return math.ceil(regime(arm)["tokens"] * arm.unique_fraction) + 2 * arm.seq_len


def arm_model(arm: Arm, seed: int) -> dict:
    """`build_model`'s arguments for an arm (tied embeddings, as OLMo-1B)."""
    return {"arch": arm.arch, "init": arm.init, "seed": seed, "hidden": arm.hidden, "layers": arm.layers, "heads": arm.heads,
            "gated_ffn": arm.ffn, "positions": arm.seq_len, "tie": True}


def run_arm(root: str, name: str, arm: Arm, seed: int, dcfg: DecayConfig, tok: Done, corpora: Done,
            device: str) -> tuple[Done, Done]:
    """One run, in one thread (tiny models use one core better than two), in a worker process when the
    study trains side by side; the caller's thread count comes back after, and its wall times stay here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_arm(root, name, arm, seed, dcfg, tok, corpora, device)
    finally:
        torch.set_num_threads(threads)


def _run_arm(root: str, name: str, arm: Arm, seed: int, dcfg: DecayConfig, tok: Done, corpora: Done,
             device: str) -> tuple[Done, Done]:
    """Pretrain the arm with `seed` (log-spaced saves), then measure every checkpoint on both series."""
    stages = Stages(Path(root), record_timings=False)
    r = regime(arm)
    saves = log_spaced_steps(r["steps"], r["warmup_steps"], dcfg.checkpoints)
    data = corpora.result["pretrain"][str(text_tokens(arm))]["path"]
    train = train_config(arm, data=data, eval_every=0, save_every=0, save_at=saves, epochs=math.ceil(1 / arm.unique_fraction),
                         seed=seed, compile=dcfg.compile)
    pre = pretrain_stage(stages, f"decay-{slug(name)}-seed{seed}-pretrain", arm_model(arm, seed), train, tok, corpora, device,
                         first=dcfg.measure_docs)
    meas = measure_stage(stages, f"decay-{slug(name)}-seed{seed}-measure", pre, corpora, device, seq_len=arm.seq_len,
                         batch_size=MEASURE_BATCH, series=SERIES, bootstrap=dcfg.bootstrap, seed=seed)
    return pre, meas


def run_decay_study(stages: Stages, lab: LabConfig, dcfg: DecayConfig, device: str) -> tuple[dict, dict[tuple[str, int], Done]]:
    """Every arm x seed: pretrain, measure (`workers` runs side by side); then each arm's trajectory and
    verdict (`decay_study` of results.json), and the pretraining stages by (arm, seed)."""
    print_plan(dcfg)
    tok = tokenizer_stage(stages, lab, vocab=dcfg.tokenizer_vocab, name="decay-tokenizer")
    arms = dcfg.all_arms()
    corpora = corpora_stage(stages, lab, tok, pretrain_tokens=[text_tokens(a) for a in arms.values()],
                            measure_docs=dcfg.measure_docs, continual=False, name="decay-corpora")
    jobs = [(name, arm, seed) for name, arm in arms.items() for seed in dcfg.seeds_of(name)]
    # the longest runs first, so that the last worker does not finish alone
    jobs.sort(key=lambda j: -regime(j[1])["tokens"] * regime(j[1])["non_embedding_parameters"])
    done = {}
    t0 = time.perf_counter()
    if dcfg.workers > 1 and device in ("cpu", "auto") and not torch.cuda.is_available():
        with cf.ProcessPoolExecutor(dcfg.workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_arm, str(stages.root), n, a, s, dcfg, tok, corpora, device): (n, s) for n, a, s in jobs}
            for f in cf.as_completed(futures):
                done[futures[f]] = f.result()
                n, s = futures[f]
                print(f"[lab] decay {n} seed {s}: done ({done[(n, s)][0].result['seconds']:.0f} s of training)", file=sys.stderr)
    else:
        for n, a, s in jobs:
            done[(n, s)] = run_arm(str(stages.root), n, a, s, dcfg, tok, corpora, device)
    # the runs overlap, so their stage times do not add up: the timings get the wall time of all of them
    # (each run's own time is in the study's table); a rerun that found every run cached keeps the old entry
    wall = time.perf_counter() - t0
    if wall > 30 or "decay-runs" not in stages.timings:
        stages.record("decay-runs", wall, f"{len(jobs)} runs, {dcfg.workers} side by side")
    result = {"olmo_1b": olmo_1b_regime(), "arms": [], "workers": dcfg.workers, "measuring_data": MEASURING_DATA}
    for name, arm in arms.items():
        seeds = dcfg.seeds_of(name)
        pres = [done[(name, s)][0].result for s in seeds]
        meas = [series_lists(done[(name, s)][1].result) for s in seeds]
        draws = {k: [load_draws(m[k]["draws"]) for m in meas] for k in SERIES}
        result["arms"].append(arm_result(name, arm, dcfg, pres, meas, draws))
    return result, {key: pre for key, (pre, _) in done.items()}


def load_draws(path: str) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(path)["draws"]


def series_lists(meas: dict) -> dict:
    """A measure stage's result as per-series lists over checkpoints (H, its bootstrap interval, H_l,
    attention and next-token entropy, the draws file), plus the steps."""
    out = {"steps": meas["steps"]}
    for k, s in meas["series"].items():
        res = s["results"]
        out[k] = {"attention_entropy": [r["attention_entropy"] for r in res],
                  "next_token_entropy": [r["next_token_entropy"] for r in res],
                  "knowledge_entropy_per_layer": [r["knowledge_entropy_per_layer"] for r in res],
                  "knowledge_entropy": [r["knowledge_entropy"] for r in res],
                  "knowledge_entropy_ci": s["knowledge_entropy_ci"], "draws": s["draws"]}
    return out


def arm_result(name: str, arm: Arm, dcfg: DecayConfig, pres: list[dict], meas: list[dict], draws: dict) -> dict:
    """One arm's entry of `decay_study.arms` (the contract): regime, trajectory with intervals, peak, verdict;
    the paper's measuring data ('seen') is the headline series, held-out text the second."""
    r = regime(arm)
    ref = dataclasses.asdict(dcfg.reference)
    overrides = {k: v for k, v in dataclasses.asdict(arm).items() if ref[k] != v}
    series = {}
    for k in ("seen", "held_out"):
        runs = [{**m[k], **summarize_run(m["steps"], d, m[k]["knowledge_entropy"], r["warmup_steps"])}
                for m, d in zip(meas, draws[k])]
        series[k] = {**combine_seeds(runs, draws[k]), "verdict": trajectory_verdict(runs), "peak_steps": [x["peak_step"] for x in runs],
                     "changes": [x["change"] for x in runs], "change_cis": [x["change_ci"] for x in runs],
                     "attention_entropy": [sum(x["attention_entropy"][i] for x in runs) / len(runs) for i in range(len(meas[0]["steps"]))],
                     "next_token_entropy": [sum(x["next_token_entropy"][i] for x in runs) / len(runs) for i in range(len(meas[0]["steps"]))],
                     "per_seed": runs}
    head = series["seen"]
    mean_run = summarize_run(meas[0]["steps"], torch.stack(draws["seen"]).mean(0), head["knowledge_entropy"], r["warmup_steps"])
    return {"name": name, "overrides": overrides, "seeds": dcfg.seeds_of(name),
            "tokens_per_parameter": r["tokens_per_parameter"], "cumulative_weight_decay": r["cumulative_weight_decay"],
            "regime": r, "steps": meas[0]["steps"], "knowledge_entropy": head["knowledge_entropy"],
            "knowledge_entropy_ci": head["knowledge_entropy_ci"], "peak_step": mean_run["peak_step"],
            "collapse_step": mean_run["collapse_step"], "change": mean_run["change"], "change_ci": mean_run["change_ci"],
            "verdict": head["verdict"],
            "max_entropy": arm.layers * math.log(arm.ffn_dim),
            "series": series, "wall_seconds": sum(p["seconds"] for p in pres), "tokens_per_s": [p["tokens_per_s"] for p in pres],
            "final_loss": [p["final_loss"] for p in pres], "checkpoints": [[c["path"] for c in p["checkpoints"]] for p in pres]}


def decay_study(ctx: Context) -> Section:
    """The decay study: arms pretrained into the paper's regime, their entropy trajectories and verdicts,
    then continual learning from the checkpoints of the arms that decay (`studies/loop.py`)."""
    cfg, dcfg = ctx.run.cfg, ctx.run.cfg.decay
    study, pretrains = run_decay_study(ctx.stages, cfg, dcfg, ctx.device)
    loop = close_the_loop(ctx.stages, cfg, dcfg, study, pretrains, ctx.done["world"], ctx.done["corpora"], ctx.device)
    result = {**study, "loop": loop}
    return Section("decay_study", decay_section(result, ctx.run.dir.figures) + loop_section(loop), result)
