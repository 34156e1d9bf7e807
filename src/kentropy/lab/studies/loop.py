"""Closing the loop: continual learning from checkpoints whose knowledge entropy really decayed.

For each arm of the decay study that decays (verdict `held` or `direction only`; at most
`loop_arms`, the largest falls first), the lab's continual-learning stage (the official
protocol: injected fictional knowledge, probes, downstream tasks) runs from checkpoints spread
from the entropy's peak to the end of pretraining; then from the final checkpoint resuscitated
(Algorithm 1). That gives the paper's findings 2 and 3 from checkpoints with lower entropy,
judged by the same statistics as the rest of the lab (`lab/judge/stats.py`).
"""

from __future__ import annotations

from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import DecayConfig, LabConfig
from kentropy.lab.judge import stats as analysis
from kentropy.lab.judge.verdicts import DECAYS
from kentropy.lab.labdir import slug
from kentropy.lab.stages.continual import continual_stage
from kentropy.lab.stages.resuscitate import resuscitate_stage


def loop_starts(arm: dict, n: int) -> list[int]:
    """Indices into the arm's checkpoints: n of them, evenly spaced from the peak to the last one."""
    steps = arm["steps"]
    i0, last = steps.index(arm["peak_step"]), len(steps) - 1
    if n <= 1 or i0 == last:
        return [last]
    return sorted({round(i0 + k * (last - i0) / (n - 1)) for k in range(n)})


def close_the_loop(stages: Stages, cfg: LabConfig, dcfg: DecayConfig, result: dict, pretrains: dict[tuple[str, int], Done],
                   world: Done, corpora: Done, device: str) -> dict:
    """Continual learning (and resuscitation) from the decaying arms' checkpoints. `pretrains`:
    (arm name, seed) -> the arm's pretraining stage (`Done`). Returns the `loop` part of `decay_study`."""
    decaying = [a for a in result["arms"] if a["verdict"] in DECAYS]
    decaying.sort(key=lambda a: a["change"])  # the largest fall first
    out = {"arms": [], "note": None}
    if not decaying:
        out["note"] = "no arm decays: continual learning from decayed checkpoints was not run"
        return out
    for arm in decaying[: dcfg.loop_arms]:
        seed0 = arm["seeds"][0]
        pre = pretrains[(arm["name"], seed0)]
        ckpts = pre.result["checkpoints"]
        h_seen = arm["series"]["seen"]["per_seed"][0]["knowledge_entropy"]
        rows = []
        for i in loop_starts(arm, dcfg.loop_checkpoints):
            c = ckpts[i]
            runs = [continual_stage(stages, cfg, c["path"], f"{pre.hash}/{c['step']}", f"decay-{slug(arm['name'])}-step{c['step']}",
                                    s, world, corpora, device).result for s in cfg.seeds]
            rows.append({"step": c["step"], "knowledge_entropy": h_seen[i], "A": [r["summary"]["A"] for r in runs],
                         "F": [r["summary"]["F"] for r in runs], "P_before": [r["summary"]["P_before"] for r in runs],
                         "D_before": [r["summary"]["D_before"] for r in runs]})
        mean = lambda xs: None if any(x is None for x in xs) else sum(xs) / len(xs)  # noqa: E731
        corr = analysis.acquisition_forgetting([r["step"] for r in rows], [r["knowledge_entropy"] for r in rows],
                                               [mean(r["A"]) for r in rows], [mean(r["F"]) for r in rows])
        final = ckpts[-1]
        resus_A, resus_F, reports = {}, {}, {}
        for p in cfg.resuscitate_amplify:
            r = resuscitate_stage(stages, cfg, final["path"], pre, corpora, p, device)
            reports[p] = r.result["report"]
            runs = [continual_stage(stages, cfg, r.result["path"], r.hash, f"decay-{slug(arm['name'])}-resuscitated-P{p:g}", s,
                                    world, corpora, device).result for s in cfg.seeds]
            resus_A[p] = [x["summary"]["A"] for x in runs]
            resus_F[p] = [x["summary"]["F"] for x in runs]
        helps = analysis.resuscitation_helps(rows[-1]["A"], resus_A, rows[-1]["F"], resus_F)
        out["arms"].append({"name": arm["name"], "seed": seed0, "rows": rows, "acquisition_forgetting": corr,
                            "resuscitation": helps, "resuscitation_reports": {str(p): rep for p, rep in reports.items()}})
    return out
