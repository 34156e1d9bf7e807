"""The lab's recipe: world -> tokenizer -> corpora -> pretraining -> entropy of every checkpoint ->
continual learning with injected knowledge -> resuscitation -> circuits -> regimes -> report.

    kentropy lab --preset quick --out lab/        # what `make demo` runs

Every stage stands on the public commands' functions (`train`, `measure`, `probe` through
`train`, `evaluate`, `resuscitate`) and is cached by the hash of its config (`Stages`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from kentropy.config import option, to_dict
from kentropy.io import write_json
from kentropy.lab.config import LabConfig, load_preset
from kentropy.lab.stages import Done, Stages
from kentropy.models import pick_device


@dataclass
class LabRunConfig:
    """Pretrain a tiny model on a generated world and run the whole knowledge-entropy study, with a report."""

    out: str = option(help="Lab directory (stages are cached here: a rerun resumes or costs nothing).")
    preset: str = option("quick", "smoke (<= 60 s, for tests), quick (<= 10 min on a 2-core CPU), paper (GPU-sized).")
    device: str = option("auto", "auto, cpu, cuda.")


# ---- world, tokenizer, corpora -----------------------------------------------------------
def world_stage(stages: Stages, cfg: LabConfig) -> Done:
    """Downstream tasks (lm-eval YAML over JSONL), fictional knowledge kept out of the world, injection plan."""
    from kentropy.evaluate import write_task
    from kentropy.knowledge import generate_knowledge, make_plan
    from kentropy.lab.tasks import METRICS, make_tasks
    from kentropy.lab.world import build_world

    conf = {k: getattr(cfg, k) for k in ("world_seed", "entities", "tasks_per_kind", "knowledge_paraphrase", "knowledge_once",
                                         "injection_rounds", "continual_steps")}

    def fn(d: Path) -> dict:
        world = build_world(cfg.entities, cfg.world_seed)
        tasks = make_tasks(world, cfg.tasks_per_kind, cfg.world_seed)
        for name, rows in tasks.items():
            write_task(str(d / "tasks"), f"lab_{name}", rows, metric=METRICS[name])
        n = cfg.knowledge_paraphrase + cfg.knowledge_once
        entries = generate_knowledge(n, n_paraphrases=cfg.injection_rounds - 1, seed=cfg.world_seed, avoid=world.vocabulary())
        write_json(d / "knowledge.json", entries)
        plan = make_plan(entries, paraphrase=cfg.knowledge_paraphrase, once=cfg.knowledge_once, rounds=cfg.injection_rounds,
                         interval=cfg.continual_steps // cfg.injection_rounds)
        write_json(d / "plan.json", plan)
        return {"tasks": [f"lab_{t}" for t in tasks], "task_dir": str(d / "tasks"), "task_metadata": tasks.metadata,
                "knowledge": str(d / "knowledge.json"), "plan": str(d / "plan.json"), "entries": n,
                "world": world.summary()}

    return stages.run("world", conf, fn)


def tokenizer_stage(stages: Stages, cfg: LabConfig) -> Done:
    """Byte-level BPE trained on world articles and new-domain text, saved as an HF tokenizer."""
    from itertools import islice

    from kentropy.lab.corpora import new_domain_documents, stream_documents
    from kentropy.lab.world import build_world
    from kentropy.tokenizer import train_bpe

    conf = {k: getattr(cfg, k) for k in ("world_seed", "entities", "tokenizer_vocab", "tokenizer_docs")}

    def fn(d: Path) -> dict:
        world = build_world(cfg.entities, cfg.world_seed)
        docs = list(islice(stream_documents(world, seed=10_000 + cfg.world_seed), cfg.tokenizer_docs))
        docs += new_domain_documents(seed=10_000 + cfg.world_seed, n_docs=max(1, cfg.tokenizer_docs // 4))
        tok = train_bpe(docs, vocab_size=cfg.tokenizer_vocab)
        tok.save_pretrained(d / "tokenizer")
        return {"path": str(d / "tokenizer"), "vocab": len(tok)}

    return stages.run("tokenizer", conf, fn)


def _write_until(path: Path, docs, tok, tokens: int) -> dict:
    """Write documents (one per line) until they hold `tokens` tokens (+ eos each); returns counts."""
    n_tok = n_docs = 0
    with path.open("w") as f:
        for doc in docs:
            f.write(doc + "\n")
            n_tok += len(tok(doc, add_special_tokens=False)["input_ids"]) + 1
            n_docs += 1
            if n_tok >= tokens:
                break
    return {"path": str(path), "docs": n_docs, "tokens": n_tok}


def corpora_stage(stages: Stages, cfg: LabConfig, tok_done: Done, name: str = "corpora") -> Done:
    """Pretraining text (fresh stream, `repeat` passes), the continual corpus, and held-out measurement text."""
    from itertools import islice

    from transformers import AutoTokenizer

    from kentropy.lab.biomed import build_new_domain
    from kentropy.lab.corpora import stream_documents
    from kentropy.lab.world import build_world

    conf = {"tokenizer": tok_done.hash, **{k: getattr(cfg, k) for k in (
        "world_seed", "entities", "pretrain_seed", "pretrain_tokens", "repeat", "seq_len", "batch_size", "measure_docs",
        "continual_domain", "continual_steps", "continual_batch", "seeds")}}

    def fn(d: Path) -> dict:
        tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
        world = build_world(cfg.entities, cfg.world_seed)
        rows = -(-cfg.pretrain_steps * cfg.batch_size // cfg.repeat)  # unique rows: one pass needs them all
        pre = _write_until(d / "pretrain.txt", stream_documents(world, seed=cfg.pretrain_seed), tok, (rows + 1) * cfg.seq_len)
        held = list(islice(stream_documents(world, seed=20_000 + cfg.pretrain_seed), cfg.measure_docs))
        with (d / "measure.jsonl").open("w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in held)
        # continual corpus: enough fresh text for one pass (+ the injected rows' share) at every seed
        need = (cfg.continual_steps * cfg.continual_batch + 1) * cfg.seq_len
        domain = build_new_domain(seed=cfg.world_seed) if cfg.continual_domain == "new" else world
        kind = "world" if cfg.continual_domain == "new" else "near"
        cont = _write_until(d / "continual.txt", stream_documents(domain, seed=30_000 + cfg.world_seed, kind=kind), tok, need)
        return {"pretrain": pre, "continual": cont, "measure": str(d / "measure.jsonl"), "measure_docs": len(held)}

    return stages.run(name, conf, fn)


# ---- pretraining and entropy -------------------------------------------------------------
def model_config(cfg: LabConfig, tok):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.ffn, num_hidden_layers=cfg.layers,
                       num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads, max_position_embeddings=max(cfg.seq_len, 512),
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       tie_word_embeddings=False)


def pretrain_stage(stages: Stages, cfg: LabConfig, tok_done: Done, corpora: Done, device: str, name: str = "pretrain") -> Done:
    """Warmup + cosine pretraining from a random init with `kentropy train`; checkpoints named by step."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from kentropy.train import TrainConfig, train

    conf = {"tokenizer": tok_done.hash, "corpora": corpora.hash, **{k: getattr(cfg, k) for k in (
        "hidden", "layers", "heads", "ffn", "pretrain_seed", "pretrain_tokens", "repeat", "seq_len", "batch_size", "lr",
        "weight_decay", "warmup", "schedule", "checkpoints")}}

    def fn(d: Path) -> dict:
        tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
        init = d / "step-000000"
        if not (init / "model.safetensors").is_file():
            torch.manual_seed(cfg.pretrain_seed)
            LlamaForCausalLM(model_config(cfg, tok)).save_pretrained(init)
            tok.save_pretrained(init)
        run = d / "run"
        steps = cfg.pretrain_steps
        train(TrainConfig(model=str(init), data=corpora.result["pretrain"]["path"], out=str(run), steps=steps,
                          batch_size=cfg.batch_size, micro_batch=cfg.batch_size, seq_len=cfg.seq_len, lr=cfg.lr,
                          weight_decay=cfg.weight_decay, warmup=cfg.warmup, schedule=cfg.schedule, eval_every=0, save_every=-(-steps // cfg.checkpoints),
                          epochs=cfg.repeat, seed=cfg.pretrain_seed, resume=run.is_dir() and any(run.iterdir()), device=device))
        ckpts = [{"step": 0, "path": str(init)}]
        ckpts += [{"step": int(p.name.split("-")[1]), "path": str(p)} for p in sorted((run / "checkpoints").glob("step-*"))]
        losses = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return {"checkpoints": ckpts, "steps": steps, "loss": [(r["step"], r["loss"]) for r in losses if "loss" in r]}

    return stages.run(name, conf, fn)


def measure_stage(stages: Stages, cfg: LabConfig, pre: Done, corpora: Done, device: str, name: str = "measure") -> Done:
    """Knowledge, attention and next-token entropy of every checkpoint on held-out world text; Cbar saved."""
    from kentropy.data import load_texts
    from kentropy.measure import measure, save_coefficients
    from kentropy.models import Checkpoint, load_model, load_tokenizer, pick_device

    conf = {"pretrain": pre.hash, "corpora": corpora.hash, "seq_len": cfg.seq_len}

    def fn(d: Path) -> dict:
        texts = load_texts(corpora.result["measure"])
        results = []
        for c in pre.result["checkpoints"]:
            ck = Checkpoint(c["path"])
            tok = load_tokenizer(ck)
            model = load_model(ck, device=pick_device(device), eager_attention=True)
            m = measure(model, tok, texts, metrics=("knowledge", "attention", "next-token"), seq_len=cfg.seq_len,
                        batch_size=16, name=c["path"], progress=False)
            results.append(m)
        files = save_coefficients(results, str(d / "coefficients"), "abs")
        return {"results": [dict(r.to_json(), step=c["step"], coefficients=f)
                            for r, c, f in zip(results, pre.result["checkpoints"], files)]}

    return stages.run(name, conf, fn)


# ---- continual learning and resuscitation ------------------------------------------------
def continual_stage(stages: Stages, cfg: LabConfig, start: str, start_hash: str, label: str, seed: int,
                    world: Done, corpora: Done, device: str) -> Done:
    """`kentropy train` from `start` on the continual corpus with injected knowledge; A and F from its summary."""
    from kentropy.train import TrainConfig, train

    conf = {"start": start_hash, "world": world.hash, "corpora": corpora.hash, "seed": seed, **{k: getattr(cfg, k) for k in (
        "continual_steps", "continual_batch", "continual_lr", "seq_len", "injection_rounds")}}

    def fn(d: Path) -> dict:
        run = d / "run"
        steps = cfg.continual_steps
        summary = train(TrainConfig(
            model=start, data=corpora.result["continual"]["path"], knowledge=world.result["knowledge"], plan=world.result["plan"],
            out=str(run), steps=steps, batch_size=cfg.continual_batch, micro_batch=cfg.continual_batch, seq_len=cfg.seq_len,
            lr=cfg.continual_lr, eval_every=max(1, steps // 5), save_every=max(1, steps // 4),
            tasks=",".join(world.result["tasks"]), task_dir=world.result["task_dir"], seed=seed,
            resume=run.is_dir() and any(run.iterdir()), device=device))
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        curve = [(r["step"], r["probes"]["overall"]) for r in metrics if r.get("probes")]
        ckpts = sorted(str(p) for p in (run / "checkpoints").glob("step-*"))
        return {"label": label, "seed": seed, "start": start, "summary": summary, "probe_curve": curve, "checkpoints": ckpts}

    return stages.run(f"continual-{label}-seed{seed}", conf, fn)


def resuscitate_stage(stages: Stages, cfg: LabConfig, final: dict, pre: Done, corpora: Done, amplify: float, device: str) -> Done:
    """Algorithm 1 on the final checkpoint (Cbar and entropy before/after on the held-out world text)."""
    from kentropy.resuscitate import ResuscitateConfig, run_resuscitate

    conf = {"pretrain": pre.hash, "corpora": corpora.hash, "ratio": cfg.resuscitate_ratio, "amplify": amplify, "seq_len": cfg.seq_len}

    def fn(d: Path) -> dict:
        report = run_resuscitate(ResuscitateConfig(model=final["path"], out=str(d / "model"), ratio=cfg.resuscitate_ratio,
                                                   amplify=amplify, data=corpora.result["measure"], seq_len=cfg.seq_len,
                                                   batch_size=16, overwrite=True, device=device))
        return {"path": str(d / "model"), "report": report}

    return stages.run(f"resuscitate-P{amplify:g}", conf, fn)


# ---- the recipe --------------------------------------------------------------------------
def nearest(checkpoints: list[dict], steps: int, fraction: float) -> dict:
    return min((c for c in checkpoints if c["step"] > 0), key=lambda c: abs(c["step"] - fraction * steps))


def run_lab(cfg: LabConfig, out: str, device: str = "auto", preset: str = "custom") -> dict:
    """Run (or resume) the whole study into `out`; returns the findings (also in out/results.json)."""
    from kentropy.lab.report import write_report

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "lab_config.json", {"preset": preset, **to_dict(cfg)})
    stages = Stages(root)
    world = world_stage(stages, cfg)
    tok = tokenizer_stage(stages, cfg)
    corpora = corpora_stage(stages, cfg, tok)
    pre = pretrain_stage(stages, cfg, tok, corpora, device)
    meas = measure_stage(stages, cfg, pre, corpora, device)

    ckpts = pre.result["checkpoints"]
    chosen = []
    for f in cfg.continual_at:
        c = nearest(ckpts, pre.result["steps"], f)
        if c not in chosen:
            chosen.append(c)
    continual = {}
    for c in chosen:
        for seed in cfg.seeds:
            done = continual_stage(stages, cfg, c["path"], f"{pre.hash}/{c['step']}", f"step{c['step']}", seed, world, corpora, device)
            continual[(c["step"], seed)] = done.result

    final = ckpts[-1]
    resus, resus_runs = {}, {}
    for p in cfg.resuscitate_amplify:
        r = resuscitate_stage(stages, cfg, final, pre, corpora, p, device)
        resus[p] = r.result["report"]
        for seed in cfg.seeds:
            done = continual_stage(stages, cfg, r.result["path"], r.hash, f"resuscitated-P{p:g}", seed, world, corpora, device)
            resus_runs[(p, seed)] = done.result

    circuits = None
    if cfg.circuits:
        from kentropy.lab.circuits_stage import circuits_stage

        base = continual[(final["step"], cfg.seeds[0])]
        circuits = circuits_stage(stages, cfg, base, world, tok, device).result

    regimes = None
    if cfg.regimes:
        from kentropy.lab.regimes import regimes_study

        regimes = regimes_study(stages, cfg, tok, device)

    results = write_report(root, cfg, preset, stages.timings, world.result, pre.result, meas.result, chosen, continual,
                           final, resus, resus_runs, circuits, regimes)
    return results


def run_lab_command(run: LabRunConfig) -> dict:
    cfg = load_preset(run.preset)
    pick_device(run.device)  # a bad --device fails before any stage runs
    print(f"[lab] preset {run.preset}: {cfg.pretrain_steps} pretraining steps, model {cfg.layers}x{cfg.hidden}, "
          f"{len(cfg.continual_at)} checkpoints x {len(cfg.seeds)} seeds of continual learning", file=sys.stderr)
    return run_lab(cfg, run.out, run.device, run.preset)

