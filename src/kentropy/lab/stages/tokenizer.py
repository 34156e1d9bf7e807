"""The tokenizer stage: a byte-level BPE trained on world articles and new-domain text, saved as an HF
tokenizer. Its vocabulary size is a parameter: the core study's (`tokenizer_vocab`) or a study's own."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from kentropy.io import write_dir_atomic
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import LabConfig, SeedOffset
from kentropy.lab.text.render import new_domain_documents, stream_documents
from kentropy.lab.text.world import build_world
from kentropy.lab.text.bpe import train_bpe


def tokenizer_stage(stages: Stages, cfg: LabConfig, vocab: int | None = None, name: str = "tokenizer") -> Done:
    """vocab: the BPE's size (default: cfg.tokenizer_vocab); name: the stage's (a study's own). Trained on `tokenizer_docs` world articles and a
    quarter as many articles of the new domain that continual learning reads (built from the same world_seed)."""
    vocab = cfg.tokenizer_vocab if vocab is None else vocab
    conf = {"world_seed": cfg.world_seed, "entities": cfg.entities, "vocab": vocab, "docs": cfg.tokenizer_docs}

    def fn(d: Path) -> dict:
        world = build_world(cfg.entities, cfg.world_seed)
        seed = SeedOffset.TOKENIZER + cfg.world_seed
        docs = list(islice(stream_documents(world, seed=seed), cfg.tokenizer_docs))
        docs += new_domain_documents(seed=seed, n_docs=max(1, cfg.tokenizer_docs // 4), domain_seed=cfg.world_seed)
        tok = train_bpe(docs, vocab_size=vocab)
        write_dir_atomic(d / "tokenizer", tok.save_pretrained)
        return {"path": str(d / "tokenizer"), "vocab": len(tok)}

    return stages.run(name, conf, fn, code=("kentropy.lab.text.render", "kentropy.lab.text.bpe"))
