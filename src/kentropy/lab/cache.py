"""The lab's stages, cached by config hash: an interrupted lab resumes where it stopped, a rerun costs nothing.

A stage is a name, the JSON-able config it depends on (including the hashes of the stages
it reads from) and a function `fn(workdir) -> result`. Its result is kept in
`DIR/stages/NAME-HASH/result.json`; the result file is written last (atomically), so a
stage without one is unfinished and runs again (a long stage may resume its own partial
work from `workdir`; temp files and directories of atomic writes that a kill interrupted
are removed first). Wall times go to `DIR/timings.json`.

The stages of the text and the pretrained model live here (world, tokenizer, corpora,
pretraining, entropy); continual learning and resuscitation in `lab/continual.py`; the
recipe that calls them in `lab/pipeline.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from kentropy.io import write_dir_atomic, write_json
from kentropy.lab.config import LabConfig
from kentropy.rundir import RunDir


@dataclass
class Done:
    """A finished stage: its result, directory and hash (for the stages that depend on it)."""

    result: Any
    dir: Path
    hash: str


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


# `kentropy.io`'s temp names: write_atomic's ".NAME.XXXXXXXX.tmp" files, write_dir_atomic's ".NAME.XXXXXXXX" dirs
_PARTIAL_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_PARTIAL_DIR = re.compile(r"^\..+\.[a-z0-9_]{8}$")


def clean_partial_writes(root: Path) -> list[Path]:
    """Remove what interrupted atomic writes left under `root` (their temp files and directories)."""
    gone = []
    for p in sorted(root.rglob(".*"), key=lambda p: len(p.parts)):
        if not p.exists():  # inside a temp dir removed just before
            continue
        if p.is_dir() and _PARTIAL_DIR.match(p.name):
            shutil.rmtree(p)
            gone.append(p)
        elif p.is_file() and _PARTIAL_FILE.match(p.name):
            p.unlink()
            gone.append(p)
    return gone


class Stages:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.timings_path = self.root / "timings.json"
        self.timings: dict[str, dict] = json.loads(self.timings_path.read_text()) if self.timings_path.is_file() else {}

    def run(self, name: str, config: Any, fn: Callable[[Path], Any]) -> Done:
        h = config_hash(config)
        d = self.root / "stages" / f"{name}-{h}"
        result_file = d / "result.json"
        if result_file.is_file():
            print(f"[lab] {name}: cached ({d.name})", file=sys.stderr)
            return Done(json.loads(result_file.read_text()), d, h)
        if d.is_dir():
            for p in clean_partial_writes(d):
                print(f"[lab] {name}: removed {p.relative_to(d)} (an interrupted write)", file=sys.stderr)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "config.json", config)
        print(f"[lab] {name}: running", file=sys.stderr)
        t = time.perf_counter()
        result = fn(d)
        seconds = time.perf_counter() - t
        write_json(result_file, result)
        self.timings[name] = {"seconds": round(seconds, 2), "stage": d.name}
        write_json(self.timings_path, self.timings)
        print(f"[lab] {name}: done in {seconds:.1f} s", file=sys.stderr)
        return Done(result, d, h)


# ---- world, tokenizer, corpora -----------------------------------------------------------
def world_stage(stages: Stages, cfg: LabConfig) -> Done:
    """Downstream tasks (lm-eval YAML over JSONL), fictional knowledge kept out of the world, injection plan."""
    from kentropy.evaluate import write_task
    from kentropy.knowledge import generate_knowledge, make_plan
    from kentropy.lab.tasks import METRICS, make_tasks
    from kentropy.lab.world import build_world

    conf = {k: getattr(cfg, k) for k in ("world_seed", "entities", "tasks_per_kind", "knowledge_paraphrase", "knowledge_once",
                                         "knowledge_facts", "injection_rounds", "continual_steps")}

    def fn(d: Path) -> dict:
        world = build_world(cfg.entities, cfg.world_seed)
        tasks = make_tasks(world, cfg.tasks_per_kind, cfg.world_seed)
        for name, rows in tasks.items():
            write_task(str(d / "tasks"), f"lab_{name}", rows, metric=METRICS[name])
        n = cfg.knowledge_paraphrase + cfg.knowledge_once
        entries = generate_knowledge(n, n_paraphrases=cfg.injection_rounds - 1, seed=cfg.world_seed, avoid=world.vocabulary(),
                                     facts=cfg.knowledge_facts)
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


def corpora_stage(stages: Stages, cfg: LabConfig, tok_done: Done) -> Done:
    """Pretraining text (fresh stream, `repeat` passes), the continual corpus, and held-out measurement text."""
    from itertools import islice

    from transformers import AutoTokenizer

    from kentropy.lab.biomed import build_new_domain
    from kentropy.lab.corpora import stream_documents
    from kentropy.lab.world import build_world

    conf = {"tokenizer": tok_done.hash, **{k: getattr(cfg, k) for k in (
        "world_seed", "entities", "pretrain_seed", "pretrain_tokens", "repeat", "seq_len", "batch_size", "measure_docs",
        "continual_domain", "continual_steps", "continual_batch", "continual_seq_len", "seeds")}}

    def fn(d: Path) -> dict:
        tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
        world = build_world(cfg.entities, cfg.world_seed)
        rows = -(-cfg.pretrain_steps * cfg.batch_size // cfg.repeat)  # unique rows: one pass needs them all
        pre = _write_until(d / "pretrain.txt", stream_documents(world, seed=cfg.pretrain_seed), tok, (rows + 1) * cfg.seq_len)
        held = list(islice(stream_documents(world, seed=20_000 + cfg.pretrain_seed), cfg.measure_docs))
        with (d / "measure.jsonl").open("w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in held)
        # continual corpus: enough fresh text for one pass at every seed (injected passages are prepended to its rows)
        need = (cfg.continual_steps * cfg.continual_batch + 1) * cfg.continual_seq_len
        domain = build_new_domain(seed=cfg.world_seed) if cfg.continual_domain == "new" else world
        kind = "world" if cfg.continual_domain == "new" else "near"
        cont = _write_until(d / "continual.txt", stream_documents(domain, seed=30_000 + cfg.world_seed, kind=kind), tok, need)
        return {"pretrain": pre, "continual": cont, "measure": str(d / "measure.jsonl"), "measure_docs": len(held)}

    return stages.run("corpora", conf, fn)


# ---- pretraining and entropy -------------------------------------------------------------
def model_config(cfg: LabConfig, tok):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.ffn, num_hidden_layers=cfg.layers,
                       num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                       max_position_embeddings=max(cfg.seq_len, cfg.continual_seq_len, 512),
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       tie_word_embeddings=False)


def pretrain_stage(stages: Stages, cfg: LabConfig, tok_done: Done, corpora: Done, device: str) -> Done:
    """OLMo-scheduled pretraining from a random init with `kentropy train`; checkpoints named by step.

    The initialization (step 0) is written atomically beside the run, so that a kill mid-save
    leaves no half-written model for a rerun to trip on.
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    from kentropy.train import TrainConfig, train

    conf = {"tokenizer": tok_done.hash, "corpora": corpora.hash, **{k: getattr(cfg, k) for k in (
        "hidden", "layers", "heads", "ffn", "pretrain_seed", "pretrain_tokens", "repeat", "seq_len", "continual_seq_len",
        "batch_size", "lr", "weight_decay", "warmup", "schedule", "min_lr_ratio", "checkpoints")}}

    def fn(d: Path) -> dict:
        tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
        init = d / "step-000000"
        if not (init / "model.safetensors").is_file():
            torch.manual_seed(cfg.pretrain_seed)
            model = LlamaForCausalLM(model_config(cfg, tok))
            write_dir_atomic(init, lambda tmp: (model.save_pretrained(tmp), tok.save_pretrained(tmp)))
        run = RunDir(d / "run")
        steps = cfg.pretrain_steps
        train(TrainConfig(model=str(init), data=corpora.result["pretrain"]["path"], out=str(run.root), steps=steps,
                          batch_size=cfg.batch_size, micro_batch=cfg.batch_size, seq_len=cfg.seq_len, lr=cfg.lr,
                          weight_decay=cfg.weight_decay, warmup=cfg.warmup, schedule=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio,
                          eval_every=0, save_every=-(-steps // cfg.checkpoints), epochs=cfg.repeat, seed=cfg.pretrain_seed,
                          resume=run.last_checkpoint() is not None, overwrite=run.last_checkpoint() is None, device=device))
        ckpts = [{"step": 0, "path": str(init)}] + [{"step": s, "path": str(p)} for s, p in run.saved_checkpoints()]
        losses = [json.loads(x) for x in run.metrics.read_text().splitlines()]
        return {"checkpoints": ckpts, "steps": steps, "loss": [(r["step"], r["loss"]) for r in losses if "loss" in r]}

    return stages.run("pretrain", conf, fn)


def measure_stage(stages: Stages, cfg: LabConfig, pre: Done, corpora: Done, device: str) -> Done:
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

    return stages.run("measure", conf, fn)
