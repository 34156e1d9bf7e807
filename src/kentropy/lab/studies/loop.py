"""Closing the loop: the paper's findings 2 and 3 from the decay study's checkpoints, preregistered.

Finding 2 (Kim et al. 2025, §4): checkpoints with lower knowledge entropy acquire less (A) and
forget more (F). Finding 3: resuscitation (Algorithm 1) raises H and with it A, lowering F.

The design is fixed before the run: the reference arm, every one of its pretraining seeds, and
the checkpoints at `loop_fractions` of training (saved exactly there, `judge.plan.fraction_step`);
plus the final checkpoints of `loop_arms` (other H at the same step: the step/H collinearity of one
arm is broken). Every continual run trains on rows no longer than the arm's pretraining rows (no
untrained positions) at the arm's pretraining peak lr unless `loop_lr` says otherwise, with the
loop's own knowledge (`loop_knowledge_facts`, checked to fit those rows) and downstream tasks
(`loop_tasks_per_kind` rows each, for F's standard error).

The gates come first (`judge/gates.py`): the knowledge gate over every seed's starting points (D before
continual learning against the prior-only floor, whole task set and head band), the power gate from the
preset's pilot (`decay.pilot`) and Algorithm 1's manipulation check per p and seed. Then the findings
(`judge/findings.py`): per pretraining seed the OLS slope of A, F and raw ΔP = P_after − P_before on H
over the starting points (2c, 2d, 2e), across seeds their mean, 95% t-interval and two-sided t-test
beside the paper-implied slope; and finding 3 over the grid of p (`loop_amplify`), paired per seed
against the un-resuscitated final checkpoint's run over the seeds where H rose (H before and after
measured on the same documents), on A and P after continual learning (3a) and on F and D after (3b).
Only the reference arm is resuscitated (the preregistered arm), and only where Algorithm 1 scales the
coefficient c exactly: a gated FFN (it scales the up rows, c = act(gate) · up) or a plain ReLU FFN
(act(s·z) = s·act(z)). In a plain GELU FFN it scales the pre-activation, which can shrink |c|
(pre-activations N(−1, 0.5²) scaled ×3: mean |c| × 0.31).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from kentropy.errors import KentropyError
from kentropy.runtime.pool import worker_pool
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import GATED, Arm, DecayConfig, LabConfig
from kentropy.lab.judge.findings import ALPHA, finding_3, findings_2, pilot_estimates, planned
from kentropy.lab.judge.gates import knowledge_gate, not_applicable
from kentropy.lab.judge.plan import fraction_step
from kentropy.lab.judge.stats import against_floor, forgetting_se, forgetting_se_method, paired_rows
from kentropy.lab.judge.verdicts import NOT_MEASURABLE
from kentropy.lab.regime import regime
from kentropy.lab.report.gates import power_plan_lines
from kentropy.lab.labdir import slug
from kentropy.lab.stages.continual import check_knowledge_fits, continual_stage
from kentropy.lab.stages.resuscitate import resuscitate_stage
from kentropy.lab.stages.world import world_stage
from kentropy.lab.text.tasks import downstream_floor
from kentropy.edits.resuscitate import EXACT_ACTIVATIONS

LOOP_FINDINGS = ("2c", "2d", "2e")  # the slopes on H (the loop's starting points are one arm's steps, plus other arms' finals)
F_SE_TARGET = 2.0  # points of F: the standard error the loop's downstream tasks are sized for


INEXACT = ("a plain FFN whose activation is not positively homogeneous: Algorithm 1 scales the pre-activation, "
           "which can shrink |c| instead of raising it")


def scales_exactly(arm: Arm) -> bool:
    """Whether Algorithm 1 scales the arm's coefficients exactly: gated FFNs (the up rows) and plain FFNs of an
    activation with act(s·z) = s·act(z) for s > 0 (ReLU)."""
    return arm.arch in GATED or arm.arch in EXACT_ACTIVATIONS


def loop_plan_text(dcfg: DecayConfig) -> str:
    """The loop's preregistered design and its power gates, printed with the study's plan before anything runs."""
    ref = dcfg.reference
    lr = f"{dcfg.loop_lr:g}" if dcfg.loop_lr else f"each arm's pretraining peak ({ref.lr:g} for the reference)"
    seeds = dcfg.seeds_of("reference")
    power, rows = planned(regime=None, pilot=dcfg.pilot_plan(), seeds=len(seeds), layers=ref.layers, steps=regime(ref)["steps"],
                          sesoi=dcfg.analysis_plan().sesoi, keys=["1", *LOOP_FINDINGS, "3a", "3b"])
    pilot = dcfg.pilot_plan()
    return "\n".join([
        f"[lab] loop: the reference arm, seeds {', '.join(map(str, seeds))}, from "
        f"{', '.join(f'{f:g}' for f in dcfg.loop_fractions)} of training"
        + (f", plus the final checkpoints of {', '.join(dcfg.loop_arms)}" if dcfg.loop_arms else ""),
        f"[lab] loop: continual rows = each arm's pretraining seq_len ({ref.seq_len} for the reference), lr {lr}, "
        f"{dcfg.loop_knowledge_facts} facts per passage, {dcfg.loop_tasks_per_kind} rows per downstream task, "
        f"resuscitation over the grid p {', '.join(f'{p:g}' for p in dcfg.loop_amplify)} (a p counts in the seeds where H rose)",
        f"[lab] loop: per seed OLS slopes of A, dP and F on H; across seeds a two-sided t-test at alpha {ALPHA}, beside the "
        "paper-implied slope; gates before any verdict: knowledge (D before continual learning above the prior-only floor), "
        "power, manipulation",
        f"[lab] power gate (pilot: {pilot.source if pilot else 'none: the power of findings 2 and 3 is unknown'}):",
        *power_plan_lines(power),
        "[lab] testable by design (the knowledge and manipulation gates follow the runs):",
        *[f"[lab]   {r['finding']:<3} {r['title'][:56]:<56} {'yes' if r['testable'] else 'no (' + r['why'] + ')'}" for r in rows]])


def continual_config(cfg: LabConfig, dcfg: DecayConfig, arm: Arm) -> LabConfig:
    """The lab config of a continual run from `arm`: rows of the arm's pretraining seq_len (the positions it was
    pretrained on), lr `loop_lr` or the arm's peak, the loop's knowledge facts and downstream rows."""
    return dataclasses.replace(cfg, seq_len=arm.seq_len, continual_seq_len=arm.seq_len, continual_lr=dcfg.loop_lr or arm.lr,
                               knowledge_facts=dcfg.loop_knowledge_facts, tasks_per_kind=dcfg.loop_tasks_per_kind)


def start_steps(fractions: Sequence[float], steps: int) -> list[int]:
    """The optimizer step of each fraction of a `steps`-step run (`fraction_step`), in order."""
    return [fraction_step(f, steps) for f in fractions]


def checkpoint_at(pre: dict, step: int, where: str) -> dict:
    """The pretraining stage's checkpoint `{"step", "path"}` saved at `step`; an error naming the fractions if none was."""
    for c in pre["checkpoints"]:
        if c["step"] == step:
            return c
    raise KentropyError(f"{where}: no checkpoint saved at step {step} (the decay study must save one at every "
                        f"fraction of decay.loop_fractions)")


def entropy_at(seed: dict, step: int, where: str) -> float:
    """H at `step` from a seed's record of `decay_study.arms[].seeds` (`steps`, `knowledge_entropy`)."""
    if step not in seed["steps"]:
        raise KentropyError(f"{where}: no knowledge entropy measured at step {step}")
    return seed["knowledge_entropy"][seed["steps"].index(step)]


def _mean(xs: Sequence[float | None]) -> float | None:
    return None if not xs or any(x is None for x in xs) else math.fsum(xs) / len(xs)


def _run_point(stages: Stages, lcfg: LabConfig, path: str, start_hash: str, label: str, world: Done, corpora: Done,
               device: str) -> dict:
    """Continual learning from one checkpoint, every continual seed: A, ΔP, F, D before, P and D after (means over
    continual seeds), F's SE; and `downstream_before` (the first continual seed's, with per-document rows: the knowledge
    gate's, the same model before any training), for the caller to take out."""
    runs = [continual_stage(stages, lcfg, path, start_hash, label, s, world, corpora, device).result["summary"] for s in lcfg.seeds]
    dP = [None if r["P_after"] is None or r["P_before"] is None else r["P_after"] - r["P_before"] for r in runs]
    se = [forgetting_se(r["downstream_before"], r["downstream_after"]) for r in runs]
    measured = bool(se) and None not in se
    return {"A": _mean([r["A"] for r in runs]), "dP": _mean(dP), "F": _mean([r["F"] for r in runs]),
            "D_before": _mean([r["D_before"] for r in runs]), "P_after": _mean([r["P_after"] for r in runs]),
            "D_after": _mean([r["D_after"] for r in runs]), "F_se": max(se) if measured else None,
            "F_se_paired": all(paired_rows(r["downstream_before"], r["downstream_after"]) for r in runs) if measured else None,
            "seq_len": lcfg.continual_seq_len, "lr": lcfg.continual_lr, "downstream_before": runs[0]["downstream_before"]}


def _continual_job(root: str, report_to: str, lcfg: LabConfig, path: str, start_hash: str, label: str, seed: int, world: Done,
                   corpora: Done, device: str) -> None:
    """One continual run in a worker process, on one thread (the loop's tiny models use one core better than two)."""
    torch.set_num_threads(1)
    continual_stage(Stages(Path(root), record_timings=False, report_to=report_to), lcfg, path, start_hash, label, seed, world,
                    corpora, device)


def side_by_side(workers: int, device: str) -> bool:
    """Whether the study's runs (the decay runs, the loop's continual runs) train in `workers` processes side by
    side: on a CPU only (on a GPU one process keeps the device)."""
    return workers > 1 and device in ("cpu", "auto") and not torch.cuda.is_available()


def run_side_by_side(stages: Stages, jobs: list[tuple], workers: int, world: Done, corpora: Done, device: str) -> None:
    """Every continual run of `jobs` ((lab config, start path, start hash, label)) for each of its continual seeds,
    `workers` at a time, so that the loop's findings then read them from the cache; one timings entry for all
    of them (they overlap)."""
    runs = [(lcfg, path, h, label, s) for lcfg, path, h, label in jobs for s in lcfg.seeds]
    t0 = time.perf_counter()
    with worker_pool(workers) as pool:  # an interrupt stops the workers at once
        for f in [pool.submit(_continual_job, str(stages.root), stages.report_to, *run, world, corpora, device) for run in runs]:
            f.result()
    wall = time.perf_counter() - t0
    if wall > 30 or "decay-loop-runs" not in stages.timings:
        stages.record("decay-loop-runs", wall, f"{len(runs)} continual runs, {workers} side by side")


def loop_world(stages: Stages, cfg: LabConfig, dcfg: DecayConfig) -> Done:
    """The world stage with the loop's knowledge (`loop_knowledge_facts`) and downstream rows (`loop_tasks_per_kind`)."""
    return world_stage(stages, continual_config(cfg, dcfg, dcfg.reference))


def loop_fits(cfg: LabConfig, dcfg: DecayConfig, world: Done, tok: Done) -> dict[str, int]:
    """Every injected passage (+ eos) fits the pretraining rows of every arm the loop starts from
    (`check_knowledge_fits`; `tok`: the study's tokenizer stage): arm -> its longest passage; else an error
    naming the decay config's fields. Callable as soon as the tokenizer exists, before any pretraining."""
    arms, out = dcfg.all_arms(), {}
    for name in ["reference", *dcfg.loop_arms]:
        try:
            out[name] = check_knowledge_fits(continual_config(cfg, dcfg, arms[name]), world, tok)["longest"]
        except KentropyError as e:
            raise KentropyError(f"decay loop: arm {name}'s injected knowledge does not fit its {arms[name].seq_len}-token pretraining "
                                f"rows ({e}); the loop's rows are the arm's seq_len: raise decay.reference.seq_len (or the arm's) "
                                f"or lower decay.loop_knowledge_facts") from None
    return out


def resuscitation_config(cfg: LabConfig, arm: Arm) -> LabConfig:
    """The config Algorithm 1 runs under from an arm's final checkpoint: H before and after measured on rows of the
    arm's positions (the core's pretraining steps kept: only the rows change)."""
    return dataclasses.replace(cfg, seq_len=arm.seq_len, continual_seq_len=arm.seq_len,
                               pretrain_tokens=cfg.pretrain_steps * cfg.batch_size * arm.seq_len)


def loop_jobs(stages: Stages, cfg: LabConfig, dcfg: DecayConfig, seeds: list[int], pretrains: dict[tuple[str, int], Done],
              corpora: Done, device: str) -> list[tuple]:
    """Every continual run the loop makes, as (lab config, start path, start hash, label): the reference at the
    fractions, the loop arms' finals, and (resuscitating them here: a few seconds each) the resuscitated finals."""
    arms = dcfg.all_arms()
    ref_arm = arms["reference"]
    lcfg = continual_config(cfg, dcfg, ref_arm)
    jobs = []
    for seed in seeds:
        pre = pretrains[("reference", seed)]
        for step in start_steps(dcfg.loop_fractions, pre.result["steps"]):
            c = checkpoint_at(pre.result, step, f"decay loop: reference seed {seed}")
            jobs.append((lcfg, c["path"], f"{pre.hash}/{step}", f"decay-reference-seed{seed}-step{step}"))
        for name in dcfg.loop_arms:
            if (name, seed) in pretrains:
                opre = pretrains[(name, seed)]
                step = opre.result["steps"]
                c = checkpoint_at(opre.result, step, f"decay loop: arm {name} seed {seed}")
                jobs.append((continual_config(cfg, dcfg, arms[name]), c["path"], f"{opre.hash}/{step}",
                             f"decay-{slug(name)}-seed{seed}-step{step}"))
    if scales_exactly(ref_arm) and 1.0 in dcfg.loop_fractions:
        for amp in dcfg.loop_amplify:
            for seed in seeds:
                pre = pretrains[("reference", seed)]
                final = checkpoint_at(pre.result, pre.result["steps"], f"decay loop: reference seed {seed}")
                r = resuscitate_stage(stages, resuscitation_config(cfg, ref_arm), final["path"], pre, corpora, amp, device)
                jobs.append((lcfg, r.result["path"], r.hash, f"decay-reference-seed{seed}-resuscitated-P{amp:g}"))
    return jobs


def not_run(why: str) -> dict:
    """The loop's findings where they could not run (`why`): their gates (`design` failed with the reason) and each
    finding `not measurable` with it."""
    failed = {"applies": True, "passed": False, "why": why}
    gates = {k: {"design": failed, "knowledge": not_applicable(why), "power": not_applicable(why), "manipulation": not_applicable(why)}
             for k in (*LOOP_FINDINGS, "3a", "3b")}
    empty = {"per_seed": None, "mean": None, "ci": None, "p": None, "verdict": NOT_MEASURABLE, "why": why}
    resuscitation = {"resuscitation": [], "by_amplify": [], "verdict_A": NOT_MEASURABLE, "why_A": why, "verdict_F": NOT_MEASURABLE,
                     "why_F": why, "verdict": NOT_MEASURABLE}
    return {"slope_A_on_H": empty, "slope_F_on_H": empty, "slope_dP_on_H": empty, "resuscitation": resuscitation, "gates": gates,
            "pilot_estimates": None}


def close_the_loop(stages: Stages, cfg: LabConfig, dcfg: DecayConfig, result: dict, pretrains: dict[tuple[str, int], Done],
                   world: Done, corpora: Done, device: str) -> dict:
    """Findings 2 and 3 from the decay study's checkpoints (the `loop` part of `decay_study`). `result`: the study's
    result (`arms[].seeds` as the contract); `pretrains`: (arm name, seed) -> its pretraining stage; `world`: the
    core's, unused (the loop makes its own knowledge and tasks, `loop_world`); `corpora`: the continual corpus and the held-out
    documents on which resuscitation measures H."""
    del world  # the loop's knowledge and tasks are its own (loop_knowledge_facts, loop_tasks_per_kind)
    arms = dcfg.all_arms()
    by_name = {a["name"]: a for a in result["arms"]}
    ref, ref_arm = by_name["reference"], arms["reference"]
    seeds = [s["seed"] for s in ref["seeds"]]
    lcfg = continual_config(cfg, dcfg, ref_arm)
    lworld = loop_world(stages, cfg, dcfg)
    out = {"arm": "reference", "seeds": seeds, "fractions": list(dcfg.loop_fractions), "loop_arms": list(dcfg.loop_arms),
           "continual": {"seq_len": lcfg.continual_seq_len, "pretrain_seq_len": ref_arm.seq_len, "lr": lcfg.continual_lr,
                         "pretrain_peak_lr": ref_arm.lr, "steps": lcfg.continual_steps, "knowledge_facts": lcfg.knowledge_facts,
                         "tasks_per_kind": lcfg.tasks_per_kind, "continual_seeds": list(lcfg.seeds),
                         **downstream_floor(lworld.result["task_metadata"])},
           "alpha": ALPHA, "points": [], "note": None}
    # every passage (+ eos) must fit the rows of every arm the loop starts from, before any continual training
    tok = Done({"path": pretrains[("reference", seeds[0])].result["checkpoints"][0]["path"]}, lworld.dir, lworld.hash)
    try:
        out["continual"]["longest_passage"] = loop_fits(cfg, dcfg, lworld, tok)
    except KentropyError as e:
        out["note"] = f"not run: {e}"
        return {**out, **not_run(out["note"]), "F_se": None, "downstream_knowledge": None, "resuscitation_skipped": []}
    if side_by_side(dcfg.workers, device):  # every continual run first (the passes below then read them from the cache)
        run_side_by_side(stages, loop_jobs(stages, cfg, dcfg, seeds, pretrains, corpora, device), dcfg.workers, lworld, corpora,
                         device)
    # finding 2: the reference arm at the fractions, plus the final checkpoints of loop_arms, per pretraining seed
    per_seed, starts = [], []
    finals = {}
    for k, seed in enumerate(seeds):
        pre = pretrains[("reference", seed)]
        rec = ref["seeds"][k]
        row = {"H": [], "A": [], "F": [], "dP": []}
        for frac, step in zip(dcfg.loop_fractions, start_steps(dcfg.loop_fractions, pre.result["steps"])):
            where = f"decay loop: reference seed {seed} at {frac:g} of training"
            c = checkpoint_at(pre.result, step, where)
            h = entropy_at(rec, step, where)
            p = _run_point(stages, lcfg, c["path"], f"{pre.hash}/{step}", f"decay-reference-seed{seed}-step{step}", lworld, corpora, device)
            starts.append({"seed": seed, "start": f"reference step {step}", "downstream": p.pop("downstream_before")})
            out["points"].append({"arm": "reference", "seed": seed, "fraction": frac, "step": step, "H": h, **p})
            for key, v in (("H", h), ("A", p["A"]), ("F", p["F"]), ("dP", p["dP"])):
                row[key].append(v)
            if step == pre.result["steps"]:
                finals[seed] = (c, p)
        for name in dcfg.loop_arms:
            other = {s["seed"]: s for s in by_name[name]["seeds"]}
            if seed not in other:
                continue
            opre = pretrains[(name, seed)]
            step = opre.result["steps"]
            where = f"decay loop: arm {name} seed {seed} at the end of training"
            c = checkpoint_at(opre.result, step, where)
            h = entropy_at(other[seed], step, where)
            ocfg = continual_config(cfg, dcfg, arms[name])
            p = _run_point(stages, ocfg, c["path"], f"{opre.hash}/{step}", f"decay-{slug(name)}-seed{seed}-step{step}", lworld, corpora,
                           device)
            starts.append({"seed": seed, "start": f"{name} step {step}", "downstream": p.pop("downstream_before")})
            out["points"].append({"arm": name, "seed": seed, "fraction": 1.0, "step": step, "H": h, **p})
            for key, v in (("H", h), ("A", p["A"]), ("F", p["F"]), ("dP", p["dP"])):
                row[key].append(v)
        per_seed.append(row)
    # the gates before any verdict: knowledge over every seed's starting points, power from the preset's pilot
    knowledge = knowledge_gate([x for x in starts if x["downstream"]], lworld.result["task_metadata"], cfg.head_band)
    pilot = dcfg.pilot_plan()
    gates, f2 = findings_2(per_seed, LOOP_FINDINGS, layers=ref_arm.layers, steps=None, pilot=pilot, knowledge=knowledge)
    out["slope_A_on_H"], out["slope_F_on_H"], out["slope_dP_on_H"] = f2["2c"], f2["2d"], f2["2e"]
    # finding 3: the reference's final checkpoint of every seed, resuscitated over the grid, then the same continual learning
    out["resuscitation_skipped"] = [{"arm": n, "reason": "only the reference arm is resuscitated"} for n in dcfg.loop_arms]
    skip = (INEXACT if not scales_exactly(ref_arm) else
            "1.0 is not among loop_fractions: no final checkpoint's run to pair the resuscitated runs with" if len(finals) < len(seeds)
            else None)
    if skip:
        out["resuscitation_skipped"].insert(0, {"arm": "reference", "reason": skip})
        skipped = not_run(f"resuscitation skipped: {skip}")
        g3, out["resuscitation"] = {k: skipped["gates"][k] for k in ("3a", "3b")}, skipped["resuscitation"]
    else:
        rcfg = resuscitation_config(cfg, ref_arm)
        records = []
        for amp in dcfg.loop_amplify:
            for seed in seeds:
                pre = pretrains[("reference", seed)]
                r = resuscitate_stage(stages, rcfg, finals[seed][0]["path"], pre, corpora, amp, device)
                p = _run_point(stages, lcfg, r.result["path"], r.hash, f"decay-reference-seed{seed}-resuscitated-P{amp:g}", lworld,
                               corpora, device)
                p.pop("downstream_before")
                out["points"].append({"arm": "reference", "seed": seed, "fraction": 1.0, "step": pre.result["steps"],
                                      "resuscitated": amp, "H": None, **p})  # H before and after: the record below (held-out documents)
                plain = finals[seed][1]
                records.append({"seed": seed, "amplify": amp, "H_before": r.result["report"]["knowledge_entropy_before"],
                                "H_after": r.result["report"]["knowledge_entropy_after"],
                                **{f"delta_{k}": None if p[k] is None or plain[k] is None else p[k] - plain[k]
                                   for k in ("A", "F", "P_after", "D_after")}})
        g3, out["resuscitation"] = finding_3(records, layers=ref_arm.layers, pilot=pilot, knowledge=knowledge)
    out["gates"] = {**gates, **g3}
    primary = dcfg.analysis_plan().primary
    first = {"1": c for c in ref.get("contrasts", []) if c["name"] == primary}  # finding 1: the reference arm's ΔKL per seed
    out["pilot_estimates"] = pilot_estimates(seeds, {**first, **f2, "3a": out["resuscitation"], "3b": out["resuscitation"]},
                                             "kentropy lab --preset decay (this run's reference seeds; fill in the run and commit)")
    d_before = [p["D_before"] for p in out["points"] if p["D_before"] is not None and p.get("resuscitated") is None]
    out["downstream_knowledge"] = against_floor(d_before, out["continual"]["prior_guess_D"]) if d_before else None
    measured = [p for p in out["points"] if p["F_se"] is not None]
    ses = [p["F_se"] for p in measured]
    out["F_se"] = {"max": max(ses) if ses else None, "median": statistics.median_high(ses) if ses else None,
                   "target": F_SE_TARGET, **forgetting_se_method([p["F_se_paired"] for p in measured])}
    return out
