"""Memory per rank and tokens/s of DDP vs FSDP (kentropy.training.sharding) at 2 processes, one run;
and `--estimate`: `kentropy train`'s memory estimate against the peak RSS it then reaches, on CPU.

    python benchmarks/train_memory.py                 # CPU, gloo; prints the ratio (target FSDP/DDP <= 0.6)
    python benchmarks/train_memory.py --hidden 2048 --layers 16 --vocab 50304   # on GPUs: a 1B-class model
    python benchmarks/train_memory.py --estimate      # CPU: estimate vs measured peak RSS, 4 configs (target within 15%)
    python benchmarks/train_memory.py --estimate --large   # and a 304M-parameter one (minutes per step)

`--estimate` runs `python -m kentropy train` as a user would (2 optimizer steps, no environment
tweaks) in one subprocess per config, on Llama-style models saved from configs (7M to 58M
parameters, vocabularies of 8k and 32k, 128 to 8192 tokens per micro-batch), and reads the peak
RSS of exactly that process from the kernel (`os.wait4`). It prints the estimate the run printed,
its parts that only a CPU run has (what the process held when it estimated, and the allocator's
heap), the measured peak, and their ratio.

Each mode runs under its own `torchrun --nproc_per_node=2` (this file is the worker) on a
Llama-style model built from a config (>= 50M parameters by default) and random tokens, with
the training step of `kentropy train`: AdamW (fused), gradient accumulation over micro-batches
(DDP: `no_sync` until the last; FSDP: a reduce-scatter per micro-batch), global-norm clipping.
Weights + gradients + optimizer bytes per rank are summed from the tensors' local shards after
the last backward; peak memory is the process's max RSS on CPU (max allocated on CUDA), also
shown above the RSS after imports. On CPU the workers run with MALLOC_MMAP_THRESHOLD_=65536:
glibc otherwise raises its mmap threshold as large buffers are freed and keeps them in the
heap, so that RSS shows the allocator's high-water mark rather than the tensors alive.
tokens/s is the global batch over the median step time after a warm-up step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args) -> None:
    import resource

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kentropy.runtime import distributed

    from kentropy.training import sharding
    from kentropy.training.config import TrainConfig
    from kentropy.training.optimizer import make_optimizer

    distributed.init()
    rank, world = distributed.rank_world()
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu")
    # what the process holds before the model: torch + transformers imported (nothing on a GPU yet)
    start = 0 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                      num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                      num_key_value_heads=max(1, args.hidden // 64), max_position_embeddings=args.seq_len)
    model = LlamaForCausalLM(cfg)
    params = sum(p.numel() for p in model.parameters())
    fsdp = args.worker == "fsdp"
    if fsdp:
        sharding.shard(model, device)
        wrapped = model
    else:
        model.to(device)
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    model.train()
    opt = make_optimizer(model, TrainConfig(model="-", data="-", out="-"))
    bf16 = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and not fsdp else None
    per_rank = args.micro_batch * args.accum
    g = torch.Generator().manual_seed(1)
    times, state = [], None
    for step in range(args.steps):
        batch = torch.randint(0, args.vocab, (per_rank * world, args.seq_len), generator=g)[rank * per_rank : (rank + 1) * per_rank]
        t0 = time.perf_counter()
        for k in range(args.accum):
            x = batch[k * args.micro_batch : (k + 1) * args.micro_batch].to(device)
            sync = fsdp or k == args.accum - 1
            with (contextlib.nullcontext() if sync else wrapped.no_sync()), (autocast or contextlib.nullcontext()):
                loss = wrapped(input_ids=x, labels=x).loss / args.accum
            loss.backward()
        sharding.clip_grad_norm(model, 1.0)
        if step == args.steps - 1:
            state = sharding.state_bytes(model, opt)  # optimizer state exists from step 0 on; gradients are here now
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step_s = statistics.median(times[1:])
    result = {"mode": args.worker, "rank": rank, "params": params, **state, "peak_bytes": peak, "start_rss": start,
              "peak_kind": "max allocated (CUDA)" if device.type == "cuda" else "max RSS",
              "step_s": step_s, "tokens_per_s": per_rank * world * args.seq_len / step_s}
    Path(args.result_dir, f"{args.worker}-{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


# (hidden, layers, vocab, seq_len, micro_batch, micro-batches per step): tiny to small; weight-heavy,
# activation-heavy and logit-heavy; one micro-batch per step and gradient accumulation
ESTIMATE_CONFIGS = [(256, 4, 8192, 256, 8, 1), (256, 4, 8192, 256, 8, 4), (256, 4, 8192, 1024, 8, 2), (384, 6, 16000, 256, 4, 2),
                    (512, 8, 32000, 512, 4, 1), (512, 8, 32000, 512, 4, 2), (512, 8, 32000, 128, 1, 4), (768, 4, 50304, 256, 2, 4)]
LARGE_CONFIGS = [(1024, 16, 50304, 512, 4, 1), (1024, 16, 50304, 256, 4, 2)]  # 304M parameters: minutes per step


def save_llama(d: Path, hidden: int, layers: int, vocab: int, tok) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 8 // 3, num_hidden_layers=layers,
                      num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64),
                      max_position_embeddings=2048, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(d)
    tok.save_pretrained(d)  # a small tokenizer: a larger vocabulary than it uses is allowed, the logits are full size
    return sum(p.numel() for p in model.parameters())


def parse_estimate(stderr: str) -> dict:
    """The GiB figures of the `estimated memory per rank` line `kentropy train` printed."""
    line = next(x for x in stderr.splitlines() if x.startswith("estimated memory per rank"))
    held = re.search(r"held now ([0-9.]+)", line)
    heap = re.search(r"allocator ([0-9.]+)", line)
    total = re.search(r"= ([0-9.]+) GiB", line)
    return {"held": float(held.group(1)) if held else 0.0, "heap": float(heap.group(1)) if heap else 0.0,
            "total": float(total.group(1))}


def estimate_vs_peak(args) -> None:
    from kentropy.lab.text.bpe import train_bpe
    from kentropy.measurement.documents import sample_text_path

    configs = ESTIMATE_CONFIGS + (LARGE_CONFIGS if args.large else [])
    texts = sample_text_path().read_text().splitlines()
    tok = train_bpe(texts, vocab_size=320, min_frequency=1)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        corpus = Path(d) / "corpus.txt"
        corpus.write_text("\n".join(texts) + "\n")
        saved = {}
        for hidden, layers, vocab, seq, micro, accum in configs:
            model = Path(d) / f"llama-{hidden}-{layers}-{vocab}"
            if model not in saved:
                saved[model] = save_llama(model, hidden, layers, vocab, tok)
            cmd = [sys.executable, "-m", "kentropy", "train", str(model), "--data", str(corpus), "--out", str(Path(d) / "run"),
                   "--overwrite", "--steps", "2", "--batch-size", str(micro * accum), "--micro-batch", str(micro), "--seq-len", str(seq),
                   "--epochs", "100000", "--eval-every", "0", "--save-every", "0", "--device", "cpu"]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            err = proc.stderr.read()
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"train failed on {model.name}:\n{err[-3000:]}")
            est = parse_estimate(err)
            peak = usage.ru_maxrss * 1024 / 2**30  # KiB on Linux
            rows.append({"params": saved[model], "config": (hidden, layers, vocab, seq, micro, accum), **est, "peak": peak})
    print(f"{'model':<22} {'params':>7} {'tokens':>6} {'accum':>5} {'held':>6} {'heap':>6} {'estimate':>8} {'peak RSS':>8} "
          f"{'peak/est':>8} {'without held+heap':>17}")
    worst = 0.0
    for r in rows:
        hidden, layers, vocab, seq, micro, accum = r["config"]
        ratio = r["peak"] / r["total"]
        old = r["peak"] / (r["total"] - r["held"] - r["heap"])
        worst = max(worst, abs(ratio - 1))
        print(f"{f'llama {layers}x{hidden} V{vocab}':<22} {r['params'] / 1e6:6.1f}M {micro * seq:6d} {accum:5d} {r['held']:6.2f} "
              f"{r['heap']:6.2f} {r['total']:8.2f} {r['peak']:8.2f} {ratio:8.3f} {old:17.3f}")
    print(f"GiB; OMP_NUM_THREADS={env['OMP_NUM_THREADS']}; largest deviation of the peak from the estimate: {worst:.1%} (target <= 15%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 60M parameters, 82% of them in the blocks (OLMo-7B: 94%); a large vocabulary would put most
    # of a small model in the root unit, which FSDP keeps gathered from forward to backward
    p.add_argument("--hidden", type=int, default=640)
    p.add_argument("--layers", type=int, default=10)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--accum", type=int, default=2, help="micro-batches per step on each rank")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--estimate", action="store_true", help="the memory estimate against the measured peak RSS (CPU, one process)")
    p.add_argument("--large", action="store_true", help="--estimate: also a 304M-parameter model (minutes per step on CPU)")
    p.add_argument("--worker", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    p.add_argument("--result-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.estimate:
        return estimate_vs_peak(args)

    results = {}
    with tempfile.TemporaryDirectory() as d:
        for mode in ("ddp", "fsdp"):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}", __file__,
                   "--worker", mode, "--result-dir", d] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                                                           if k not in ("worker", "result_dir", "nproc", "estimate", "large")]
            env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                       MALLOC_MMAP_THRESHOLD_=os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536"))
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{mode} failed:\n{r.stderr[-3000:]}")
            results[mode] = [json.loads((Path(d) / f"{mode}-{k}.json").read_text()) for k in range(args.nproc)]

    MiB = 2**20
    print(f"model: Llama {args.layers} layers x {args.hidden}, vocab {args.vocab}: {results['ddp'][0]['params'] / 1e6:.1f}M parameters; "
          f"{args.nproc} processes, micro-batch {args.micro_batch} x {args.accum} per rank, seq {args.seq_len}")
    print(f"{'mode':<5} {'rank':>4} {'weights':>9} {'grads':>9} {'optim':>9} {'w+g+o MiB':>10} {'peak MiB':>9} {'above start':>11} {'tokens/s':>9}")
    for mode, rows in results.items():
        for x in rows:
            wgo = x["weights"] + x["gradients"] + x["optimizer"]
            print(f"{mode:<5} {x['rank']:>4} {x['weights'] / MiB:9.1f} {x['gradients'] / MiB:9.1f} {x['optimizer'] / MiB:9.1f} "
                  f"{wgo / MiB:10.1f} {x['peak_bytes'] / MiB:9.1f} {(x['peak_bytes'] - x['start_rss']) / MiB:11.1f} {x['tokens_per_s']:9.0f}")
    wgo = {m: max(x["weights"] + x["gradients"] + x["optimizer"] for x in rows) for m, rows in results.items()}
    peak = {m: max(x["peak_bytes"] for x in rows) for m, rows in results.items()}
    tps = {m: rows[0]["tokens_per_s"] for m, rows in results.items()}
    print(f"FSDP / DDP weights+grads+optimizer per rank: {wgo['fsdp'] / wgo['ddp']:.3f} (target <= 0.6)")
    above = {m: max(x["peak_bytes"] - x["start_rss"] for x in rows) for m, rows in results.items()}
    print(f"FSDP / DDP peak memory per rank ({results['ddp'][0]['peak_kind']}): {peak['fsdp'] / peak['ddp']:.3f}; "
          f"above the RSS after imports: {above['fsdp'] / above['ddp']:.3f}")
    print(f"tokens/s: DDP {tps['ddp']:.0f}, FSDP {tps['fsdp']:.0f} (FSDP / DDP {tps['fsdp'] / tps['ddp']:.2f})")


if __name__ == "__main__":
    main()
