"""The pretraining stage: a model of the lab's families (`lab/architectures.py`) trained from its
initialization, saving checkpoints named by step (HF model directories).

It trains through the lean loop (`kentropy.lab.lean.pretrain.pretrain`: the same rows, order, schedule, AdamW and
clipping as `kentropy train`, per-step losses equal to 1e-5, a faster step) for every family the lean
model implements and every run it supports (pretraining only), compiled where the run's `compile` asks;
otherwise (replay, half fine-tuning, ReDo) through `kentropy train`'s setup / fit / finish.

The core study and every arm of the decay study call it, differing only in the model, the train
config and the steps saved. The initialization (step 0) is written atomically beside the run, so that
a kill mid-save leaves no half-written model. `first_rows` > 0 also keeps the rows of the first
batches in training order (the decay study's 'seen' measuring series), rebuilt from the corpus the
way the trainer orders it (`pack_rows`, `row_order`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from kentropy.runtime.console import is_verbose
from kentropy.training.corpus import epochs_needed, pack_rows, row_order
from kentropy.measurement.documents import load_texts
from kentropy.errors import KentropyError
from kentropy.io import write_atomic, write_dir_atomic
from kentropy.lab.architectures import build_model
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import family
from kentropy.lab.lean.pretrain import pretrain
from kentropy.lab.lean.model import FAMILIES as LEAN_FAMILIES
from kentropy.models.loading import ModelRef, load_tokenizer
from kentropy.training.rundir import RunDir
from kentropy.training.config import TrainConfig
from kentropy.training.loop import train as run_training  # `train` names the stage's TrainConfig here

INIT = f"step-{0:06d}"  # the initialization, named as every checkpoint is (RunDir.checkpoint)
PER_RUN = ("model", "out", "device", "resume", "overwrite", "report_to")  # TrainConfig fields set here, not part of the stage's identity


def packed_rows(init: Path, cfg: TrainConfig):
    """cfg.data packed into rows of cfg.seq_len tokens as the trainer packs it: [N, seq_len] token ids."""
    return pack_rows(load_tokenizer(ModelRef(str(init))), load_texts(cfg.data), cfg.seq_len)


def rows_stage(stages: Stages, name: str, data: str, tok_done: Done, seq_len: int) -> Done:
    """The text file `data` packed once into rows of `seq_len` tokens with the tokenizer stage's tokenizer, as
    the trainer packs it, for every run that reads it (the seeds of an arm): result {"path", "rows", "data",
    "seq_len"}, the rows [N, seq_len] in `rows.safetensors` (int32 on disk: `load_rows` gives the trainer's int64)."""
    conf = {"data": data, "tokenizer": tok_done.hash, "seq_len": seq_len}

    def fn(d: Path) -> dict:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoTokenizer

        rows = pack_rows(AutoTokenizer.from_pretrained(tok_done.result["path"]), load_texts(data), seq_len)
        path = d / "rows.safetensors"
        write_atomic(path, lambda tmp: save_file({"ids": rows.to(torch.int32)}, str(tmp)))
        return {"path": str(path), "rows": len(rows), "data": data, "seq_len": seq_len}

    return stages.run(name, conf, fn, code=("kentropy.training.corpus",))


def load_rows(rows: Done):
    """A rows stage's rows: [N, seq_len] int64 token ids."""
    import torch
    from safetensors.torch import load_file

    return load_file(rows.result["path"])["ids"].to(torch.int64)


def first_rows(init: Path, cfg: TrainConfig, n: int, rows=None):
    """The rows of the first `n` rows of training, in the trainer's order: [n, seq_len] token ids
    (rows: the corpus already packed, else packed here)."""
    rows = packed_rows(init, cfg) if rows is None else rows
    order = row_order(len(rows), epochs_needed(len(rows), cfg.steps, cfg.batch_size), cfg.seed)
    return rows[order[:n]].contiguous()


def lean_trains(model: dict, train: TrainConfig) -> bool:
    """Whether the lean loop trains this run: a family it implements and nothing beyond pretraining."""
    beyond = (train.knowledge, train.plan, train.tasks, train.fsdp, train.replay, train.freeze_half, train.recycle_every)
    return family(model["arch"], model.get("norm", "rmsnorm")) in LEAN_FAMILIES and not any(beyond)


def pretrain_stage(stages: Stages, name: str, model: dict, train: TrainConfig, tok_done: Done, corpora: Done, device: str,
                   first: int = 0, rows: Done | None = None) -> Done:
    """model: `build_model`'s arguments (arch, init, seed, hidden, layers, heads, gated_ffn, positions, tie);
    train: the run's TrainConfig (its model, out, device and resume are set here); first: rows to keep;
    rows: `rows_stage` of train.data at train.seq_len (else the run packs train.data itself)."""
    conf = {"model": model, "train": {k: v for k, v in dataclasses.asdict(train).items() if k not in PER_RUN},
            "tokenizer": tok_done.hash, "corpora": corpora.hash, "first_rows": first}
    if rows is not None:
        if (rows.result["data"], rows.result["seq_len"]) != (train.data, train.seq_len):
            raise KentropyError(f"{name}: rows packed from {rows.result['data']} at {rows.result['seq_len']} tokens, "
                                f"not the run's {train.data} at {train.seq_len}")
        conf["rows"] = rows.hash

    def fn(d: Path) -> dict:
        from safetensors.torch import save_file
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tok_done.result["path"])
        init = d / INIT
        if not (init / "model.safetensors").is_file():
            m = build_model(tok=tok, vocab=len(tok), **model)
            write_dir_atomic(init, lambda tmp: (m.save_pretrained(tmp), tok.save_pretrained(tmp)))
        run = RunDir(d / "run")
        lean = lean_trains(model, train) and stages.report_to == "none"  # the lean loop logs to no tracker
        resume = run.config.is_file() and not lean  # a lean run is short: an interrupted one is rerun
        cfg = dataclasses.replace(train, model=str(init), out=str(run.root), device=device, resume=resume, overwrite=not resume,
                                  report_to=stages.report_to)
        # packed once: the first rows and the lean loop read it
        packed = load_rows(rows) if rows is not None else packed_rows(init, cfg) if lean else None
        kept = None
        if first:
            kept = d / "first_rows.safetensors"
            if not kept.is_file():
                ids = first_rows(init, cfg, first, packed)
                write_atomic(kept, lambda tmp: save_file({"ids": ids}, str(tmp)))
        t0 = time.perf_counter()
        if lean:
            pretrain(cfg, rows=packed)
        else:
            run_training(cfg, show_memory=is_verbose())  # setup / fit / finish, with the --report-to tracker
        seconds = time.perf_counter() - t0
        log = [json.loads(x) for x in run.metrics.read_text().splitlines() if x.strip()]
        log = [x for x in log if x.get("step", -1) >= 0 and "loss" in x]
        speeds = sorted(x["tokens_per_s"] for x in log[len(log) // 10:])  # past compilation
        ckpts = [{"step": 0, "path": str(init)}] + [{"step": s, "path": str(p)} for s, p in run.saved_checkpoints()]
        return {"checkpoints": ckpts, "steps": cfg.steps, "seconds": seconds, "tokens_per_s": speeds[len(speeds) // 2],
                "final_loss": log[-1]["loss"], "loss": [(x["step"], x["loss"]) for x in log],
                "first_rows": str(kept) if kept else None}

    return stages.run(name, conf, fn, code=("kentropy.lab.architectures", "kentropy.training.loop", "kentropy.training.config", "kentropy.training.inputs", "kentropy.training.optimizer", "kentropy.training.state", "kentropy.training.scores", "kentropy.training.corpus", "kentropy.lab.lean.model",
                                             "kentropy.lab.lean.pretrain"))
