"""The corpora stage: pretraining text, held-out measuring documents and (for the core study) the
continual-learning corpus, all rendered from the world (`lab/text/`).

Pretraining text is one fresh stream (seed `world_seed`; every pretraining seed reads it in its own
order), written once; each requested size is a prefix of it holding at least that many tokens (+ eos per document), `pretrain-SIZE.txt`. Held-out
documents come from another seed (SeedOffset.HELD_OUT + world_seed) and are written as JSONL (`measure.jsonl`,
field `text`), the format `kentropy measure` reads.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from transformers import AutoTokenizer

from kentropy.io import write_atomic
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import LabConfig, SeedOffset
from kentropy.lab.text.new_domain import build_new_domain
from kentropy.lab.text.render import stream_documents
from kentropy.lab.text.world import build_world


def write_prefixes(d: Path, stem: str, docs, tok, sizes: list[int]) -> dict[str, dict]:
    """Documents of one stream (one per line) until they hold max(sizes) tokens (+ eos each); for every size,
    the shortest prefix holding at least that many as `d/STEM-SIZE.txt`. Returns size -> {path, docs, tokens}."""
    sizes = sorted(set(sizes))
    lines: list[str] = []
    cum: list[int] = []  # tokens (+ eos) up to and including each document
    total = 0
    for doc in docs:
        lines.append(doc)
        total += len(tok(doc, add_special_tokens=False)["input_ids"]) + 1
        cum.append(total)
        if total >= sizes[-1]:
            break
    files = {}
    for size in sizes:
        n = next((i for i, c in enumerate(cum) if c >= size), len(cum) - 1) + 1
        path = d / f"{stem}-{size}.txt"
        write_atomic(path, lambda tmp, n=n: tmp.write_text("".join(x + "\n" for x in lines[:n]), encoding="utf-8"))
        files[str(size)] = {"path": str(path), "docs": n, "tokens": cum[n - 1]}
    return files


def corpora_stage(stages: Stages, cfg: LabConfig, tok_done: Done, *, pretrain_tokens: list[int], measure_docs: int,
                  continual: bool, name: str = "corpora") -> Done:
    """pretrain_tokens: the sizes of pretraining text wanted (one file each, prefixes of one stream);
    measure_docs: held-out documents; continual: also the continual corpus (one pass at every seed);
    name: the stage's (a study's own)."""
    conf = {"tokenizer": tok_done.hash, "world_seed": cfg.world_seed, "entities": cfg.entities,
            "pretrain_tokens": sorted(set(pretrain_tokens)), "measure_docs": measure_docs}
    if continual:
        conf |= {k: getattr(cfg, k) for k in ("continual_domain", "continual_steps", "continual_batch", "continual_seq_len")}

    def fn(d: Path) -> dict:
        tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
        world = build_world(cfg.entities, cfg.world_seed)
        pre = write_prefixes(d, "pretrain", stream_documents(world, seed=cfg.world_seed), tok, pretrain_tokens)
        held = list(islice(stream_documents(world, seed=SeedOffset.HELD_OUT + cfg.world_seed), measure_docs))
        write_atomic(d / "measure.jsonl", lambda tmp: tmp.write_text("".join(json.dumps({"text": t}) + "\n" for t in held)))
        out = {"pretrain": pre, "measure": str(d / "measure.jsonl"), "measure_docs": len(held), "continual": None}
        if continual:  # injected passages are prepended to its rows
            need = (cfg.continual_steps * cfg.continual_batch + 1) * cfg.continual_seq_len
            domain = build_new_domain(seed=cfg.world_seed) if cfg.continual_domain == "new" else world
            kind = "world" if cfg.continual_domain == "new" else "near"
            docs = stream_documents(domain, seed=SeedOffset.CONTINUAL + cfg.world_seed, kind=kind)
            out["continual"] = write_prefixes(d, "continual", docs, tok, [need])[str(need)]
        return out

    return stages.run(name, conf, fn, code=("kentropy.lab.text.render", "kentropy.lab.text.world", "kentropy.lab.text.new_domain"))
