"""The core study: world -> tokenizer -> corpora -> pretraining -> entropy of every checkpoint ->
continual learning with injected knowledge from checkpoints along pretraining -> resuscitation of
the final checkpoint and the same continual learning from it."""

from __future__ import annotations

from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import LabConfig
from kentropy.lab.regime import nearest_step, save_every
from kentropy.lab.results import ContinualRun, LabRun, Pretraining, Resuscitated
from kentropy.lab.stages.continual import check_knowledge_fits, continual_stage
from kentropy.lab.stages.corpora import corpora_stage
from kentropy.lab.stages.measure import measure_stage
from kentropy.lab.stages.pretrain import pretrain_stage
from kentropy.lab.stages.resuscitate import resuscitate_stage
from kentropy.lab.stages.tokenizer import tokenizer_stage
from kentropy.lab.stages.world import world_stage
from kentropy.train import TrainConfig

MEASURE_BATCH = 16  # documents per measuring forward


def pretrain_text_tokens(cfg: LabConfig) -> int:
    """Tokens of pretraining text: every unique row of the run (`repeat` passes share them), plus one row."""
    rows = -(-cfg.pretrain_steps * cfg.batch_size // cfg.repeat)
    return (rows + 1) * cfg.seq_len


def core_model(cfg: LabConfig) -> dict:
    """`build_model`'s arguments for the core model: Llama-style SwiGLU, HF init, untied embeddings."""
    return {"arch": "swiglu", "init": "hf", "seed": cfg.pretrain_seed, "hidden": cfg.hidden, "layers": cfg.layers,
            "heads": cfg.heads, "gated_ffn": cfg.ffn, "positions": max(cfg.seq_len, cfg.continual_seq_len), "tie": False}


def core_training(cfg: LabConfig, data: str) -> TrainConfig:
    """The core model's pretraining: OLMo's schedule, `checkpoints` saves spread over the run."""
    steps = cfg.pretrain_steps
    return TrainConfig(model="-", data=data, out="-", steps=steps, batch_size=cfg.batch_size, micro_batch=cfg.batch_size,
                       seq_len=cfg.seq_len, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup=cfg.warmup, schedule=cfg.schedule,
                       min_lr_ratio=cfg.min_lr_ratio, eval_every=0, save_every=save_every(steps, cfg.checkpoints),
                       epochs=cfg.repeat, seed=cfg.pretrain_seed)


def run_core(stages: Stages, cfg: LabConfig, preset: str, device: str) -> tuple[LabRun, dict[str, Done]]:
    """Every stage of the core study; its typed results and its finished stages by name."""
    world = world_stage(stages, cfg)
    tok = tokenizer_stage(stages, cfg)
    check_knowledge_fits(cfg, world, tok)  # before any training: every passage fits its row
    size = pretrain_text_tokens(cfg)
    corpora = corpora_stage(stages, cfg, tok, pretrain_tokens=[size], measure_docs=cfg.measure_docs, continual=True)
    pre = pretrain_stage(stages, "pretrain", core_model(cfg), core_training(cfg, corpora.result["pretrain"][str(size)]["path"]),
                         tok, corpora, device)
    meas = measure_stage(stages, "measure", pre, corpora, device, seq_len=cfg.seq_len, batch_size=MEASURE_BATCH)
    pretraining = Pretraining.from_json(pre.result)

    steps = [c.step for c in pretraining.checkpoints]
    starts = []
    for f in cfg.continual_at:
        c = pretraining.checkpoints[steps.index(nearest_step(steps, pretraining.steps, f))]
        if c not in starts:
            starts.append(c)
    continual = {}
    for c in starts:
        for seed in cfg.seeds:
            done = continual_stage(stages, cfg, c.path, f"{pre.hash}/{c.step}", f"step{c.step}", seed, world, corpora, device)
            continual[(c.step, seed)] = ContinualRun(**done.result)

    resuscitated = {}
    for p in cfg.resuscitate_amplify:
        r = resuscitate_stage(stages, cfg, pretraining.final.path, pre, corpora, p, device)
        resuscitated[p] = Resuscitated(p, r.result["path"], r.result["report"])
        for seed in cfg.seeds:
            done = continual_stage(stages, cfg, r.result["path"], r.hash, f"resuscitated-P{p:g}", seed, world, corpora, device)
            resuscitated[p].runs[seed] = ContinualRun(**done.result)

    any_run = next(iter(continual.values()))
    run = LabRun(cfg=cfg, preset=preset, dir=stages.dir, world=world.result, pretraining=pretraining,
                 entropy=meas.result["series"]["held_out"]["results"], starts=starts, continual=continual,
                 resuscitated=resuscitated, continual_config=any_run.summary["config"])
    return run, {"world": world, "tokenizer": tok, "corpora": corpora, "pretrain": pre, "measure": meas}
