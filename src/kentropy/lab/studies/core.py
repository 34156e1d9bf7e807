"""The core study: world -> tokenizer -> corpora -> per pretraining seed (the study's unit): pretraining ->
entropy of every checkpoint -> continual learning with injected knowledge from checkpoints along
pretraining -> resuscitation of the final checkpoint and the same continual learning from it.

    kentropy lab --preset quick --out lab/        # `make demo`

Every seed reads the same pretraining text in its own order from its own initialization; the findings
are judged across seeds (`lab/judge/stats.py`)."""

from __future__ import annotations

from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import Arm, LabConfig
from kentropy.lab.regime import cumulative_weight_decay, nearest_step, save_every
from kentropy.lab.judge.deviations import RULES
from kentropy.lab.judge.findings import core_plan, planned
from kentropy.lab.judge.gates import regime_gate
from kentropy.lab.judge.plan import FINDINGS, contrast_steps
from kentropy.lab.report.gates import DECAY_STUDY, DEMO, power_plan_lines, testable_lines
from kentropy.lab.results import ContinualRun, LabRun, Pretraining, Resuscitated, SeedRun
from kentropy.lab.stages.continual import check_knowledge_fits, continual_stage
from kentropy.lab.stages.corpora import corpora_stage
from kentropy.lab.stages.measure import measure_stage
from kentropy.lab.stages.pretrain import pretrain_stage
from kentropy.lab.stages.resuscitate import resuscitate_stage
from kentropy.lab.stages.tokenizer import tokenizer_stage
from kentropy.lab.stages.world import world_stage
from kentropy.training.config import TrainConfig
from kentropy.training.optimizer import lr_at

MEASURE_BATCH = 16  # documents per measuring forward


def pretrain_text_tokens(cfg: LabConfig) -> int:
    """Tokens of pretraining text: every unique row of a run (`repeat` passes share them), plus one row."""
    rows = -(-cfg.pretrain_steps * cfg.batch_size // cfg.repeat)
    return (rows + 1) * cfg.seq_len


def core_model(cfg: LabConfig, seed: int) -> dict:
    """`build_model`'s arguments for the core model of pretraining seed `seed`: Llama-style SwiGLU, HF init,
    untied embeddings, positions up to seq_len (continual rows are never longer)."""
    return {"arch": "swiglu", "init": "hf", "seed": seed, "hidden": cfg.hidden, "layers": cfg.layers,
            "heads": cfg.heads, "gated_ffn": cfg.ffn, "positions": cfg.seq_len, "tie": False}


def core_saves(cfg: LabConfig) -> list[int]:
    """The saved steps: `checkpoints` spread evenly over the run, plus finding 1's contrast steps exactly."""
    steps = cfg.pretrain_steps
    every = save_every(steps, cfg.checkpoints)
    even = set(range(every, steps + 1, every)) | {steps}
    return sorted(even | {s for pair in contrast_steps(core_plan(cfg.decay_sesoi), steps).values() for s in pair})


def core_training(cfg: LabConfig, data: str, seed: int) -> TrainConfig:
    """The core model's pretraining with seed `seed` (init and data order): OLMo's schedule, saves at `core_saves`."""
    return TrainConfig(model="-", data=data, out="-", steps=cfg.pretrain_steps, batch_size=cfg.batch_size,
                       micro_batch=cfg.batch_size, seq_len=cfg.seq_len, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       warmup=cfg.warmup, schedule=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio, eval_every=0, save_every=0,
                       save_at=core_saves(cfg), epochs=cfg.repeat, seed=seed, compile=cfg.compile)


def core_regime(cfg: LabConfig) -> dict:
    """Where the core's pretraining sits beside the paper's regime: tokens per non-embedding parameter (the core's
    block as an `Arm`: SwiGLU, RMSNorm) and Σ_t lr_t·wd over its schedule (`core_training`)."""
    arm = Arm(arch="swiglu", norm="rmsnorm", hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, ffn=cfg.ffn)
    train = core_training(cfg, "-", 0)
    tokens = cfg.pretrain_steps * cfg.batch_size * cfg.seq_len
    return {"tokens_per_parameter": tokens / arm.non_embedding_parameters(),
            "cumulative_weight_decay": cumulative_weight_decay((lr_at(s, train) for s in range(cfg.pretrain_steps)), cfg.weight_decay)}


def core_plan_text(cfg: LabConfig, preset: str) -> str:
    """What the core study can test, decided by its design before anything runs (the regime of finding 1, the power
    gates from the preset's pilot), and the rules added after a run was seen (where no decay study prints them)."""
    pilot = cfg.pilot_plan()
    power, rows = planned(regime=regime_gate(**core_regime(cfg)), pilot=pilot, seeds=len(cfg.pretrain_seeds), layers=cfg.layers,
                          steps=cfg.pretrain_steps, sesoi=cfg.decay_sesoi, keys=list(FINDINGS))
    demo = preset == DEMO
    lines = ["[lab] what the core study can test (fixed by its design before any run; the knowledge and manipulation gates "
             "follow the runs, before any verdict):" + (f" in the demo, a finding it cannot test reads `not measurable in the "
                                                       f"demo`: {DECAY_STUDY}" if demo else ""),
             *testable_lines(rows, demo, prefix="[lab]   "),
             f"[lab] power gate (pilot: {pilot.source if pilot else 'none: the power of findings 2 and 3 is unknown'}):",
             *power_plan_lines(power)]
    if cfg.decay is None:
        lines += [f"[lab] changed after a run was seen: {d}" for d in RULES]
    return "\n".join(lines)


def run_seed(stages: Stages, cfg: LabConfig, seed: int, tok: Done, world: Done, corpora: Done, device: str) -> tuple[SeedRun, Done, Done]:
    """One pretraining seed: pretrain, measure every checkpoint, continue from the starting checkpoints and
    from the resuscitated final checkpoint; its typed results and its pretrain and measure stages."""
    data = corpora.result["pretrain"][str(pretrain_text_tokens(cfg))]["path"]
    pre = pretrain_stage(stages, f"pretrain-seed{seed}", core_model(cfg, seed), core_training(cfg, data, seed), tok, corpora, device)
    meas = measure_stage(stages, f"measure-seed{seed}", pre, corpora, device, seq_len=cfg.seq_len, batch_size=MEASURE_BATCH)
    pretraining = Pretraining.from_json(pre.result)

    steps = [c.step for c in pretraining.checkpoints]
    starts = []
    for f in cfg.continual_at:
        c = pretraining.checkpoints[steps.index(nearest_step(steps, pretraining.steps, f))]
        if c not in starts:
            starts.append(c)
    continual = {}
    for c in starts:
        for s in cfg.seeds:
            done = continual_stage(stages, cfg, c.path, f"{pre.hash}/{c.step}", f"pre{seed}-step{c.step}", s, world, corpora, device)
            continual[(c.step, s)] = ContinualRun(**done.result)

    resuscitated = {}
    for p in cfg.resuscitate_amplify:
        r = resuscitate_stage(stages, cfg, pretraining.final.path, pre, corpora, p, device, name=f"resuscitate-pre{seed}-P{p:g}")
        resuscitated[p] = Resuscitated(p, r.result["path"], r.result["report"])
        for s in cfg.seeds:
            done = continual_stage(stages, cfg, r.result["path"], r.hash, f"pre{seed}-resuscitated-P{p:g}", s, world, corpora, device)
            resuscitated[p].runs[s] = ContinualRun(**done.result)
    entropy = meas.result["series"]["held_out"]["results"]
    return SeedRun(seed, pretraining, entropy, starts, continual, resuscitated, pre), pre, meas


def run_core(stages: Stages, cfg: LabConfig, preset: str, device: str) -> tuple[LabRun, dict[str, Done]]:
    """Every stage of the core study, for every pretraining seed; its typed results and its finished stages
    by name (pretrain and measure: the first pretraining seed's)."""
    world = world_stage(stages, cfg)
    tok = tokenizer_stage(stages, cfg)
    check_knowledge_fits(cfg, world, tok)  # before any training: every passage fits its row
    corpora = corpora_stage(stages, cfg, tok, pretrain_tokens=[pretrain_text_tokens(cfg)], measure_docs=cfg.measure_docs,
                            continual=True)
    seeds, done = {}, {}
    for seed in cfg.pretrain_seeds:
        seeds[seed], pre, meas = run_seed(stages, cfg, seed, tok, world, corpora, device)
        done.setdefault("pretrain", pre)
        done.setdefault("measure", meas)
    any_run = next(iter(seeds[cfg.pretrain_seeds[0]].continual.values()))
    run = LabRun(cfg=cfg, preset=preset, dir=stages.dir, world=world.result, seeds=seeds,
                 continual_config=any_run.summary["config"], regime=core_regime(cfg))
    return run, {"world": world, "tokenizer": tok, "corpora": corpora, **done}
