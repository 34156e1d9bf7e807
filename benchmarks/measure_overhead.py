"""Cost of measuring knowledge entropy against a plain forward pass, same model and data, one run.

    python benchmarks/measure_overhead.py                  # CPU defaults: Llama-style, 4 layers, width 256
    python benchmarks/measure_overhead.py --device cuda --dtype bfloat16 --layers 12 --hidden 768
    python benchmarks/measure_overhead.py --arch olmoe --experts 16 --top-k 4     # mixture-of-experts (OLMoE layout)

    python benchmarks/measure_overhead.py --profile        # where measure's time goes (torch.profiler, one process)

Prints time ratios (target: measure / plain forward <= 1.05 for knowledge entropy alone, <= 1.15 for
mixture-of-experts models) and
peak-memory ratios (target: <= +10%). Each variant runs in its own process so that peak memory
(max RSS on CPU, max allocated on CUDA) is its own; timings alternate variants and take the
median of repeats. On CPU the clock is the process's CPU time: this machine's cores are shared, and
wall time would measure the neighbours' load as much as ours. On CUDA it is wall time after a synchronize.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

VARIANTS = ("forward", "base_forward", "measure")


def build(args):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, OlmoeConfig

    torch.manual_seed(0)
    common = dict(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=args.hidden // 64 or 1, num_key_value_heads=args.hidden // 64 or 1,
                  max_position_embeddings=args.seq_len)
    if args.arch == "olmoe":  # expert width as in OLMoE (m = h / 2), top-k of E experts
        cfg = OlmoeConfig(**common, intermediate_size=args.hidden // 2, num_experts=args.experts,
                          num_experts_per_tok=args.top_k)
        kw = {"experts_implementation": args.experts_implementation}
    else:
        cfg = LlamaConfig(**common, intermediate_size=args.hidden * 8 // 3)
        kw = {}
    device = torch.device(args.device)
    model = AutoModelForCausalLM.from_config(cfg, **kw).to(device=device, dtype=getattr(torch, args.dtype)).eval()
    g = torch.Generator().manual_seed(1)
    # documents of varied length, like a real corpus; the same for every variant
    lengths = torch.randint(args.seq_len // 4, args.seq_len + 1, (args.docs,), generator=g).tolist()
    ids = [torch.randint(3, args.vocab, (n,), generator=g).tolist() for n in lengths]
    return model, ids, device


def worker(args) -> dict:
    """One variant in this process: median seconds over repeats, and peak memory above the loaded model."""
    import resource

    import torch

    from kentropy.measurement.workflow import length_batches, measure_ids, pad

    torch.set_num_threads(args.threads)
    model, ids, device = build(args)
    batches = [[ids[i] for i in b] for b in length_batches(ids, args.batch_size)]
    cuda = device.type == "cuda"

    def plain(module):
        with torch.inference_mode():
            for b in batches:
                x, m = pad(b, 0, device)
                module(input_ids=x, attention_mask=m)

    run = {
        "forward": lambda: plain(model),
        "base_forward": lambda: plain(model.base_model),
        "measure": lambda: measure_ids(model, ids, 0, batch_size=args.batch_size, progress=False),
    }[args.worker]
    run()  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    else:
        base_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    clock = time.perf_counter if cuda else time.process_time
    times = []
    for _ in range(args.repeats):
        t = clock()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(clock() - t)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": times, "peak_bytes": peak, "base_bytes": base_mem}


def profile(args) -> None:
    """torch.profiler's top entries (self CPU time) of one measure and one base-model forward over the same batches."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from kentropy.measurement.workflow import length_batches, measure_ids, pad

    torch.set_num_threads(args.threads)
    model, ids, device = build(args)
    batches = [[ids[i] for i in b] for b in length_batches(ids, args.batch_size)]

    def base():
        with torch.inference_mode():
            for b in batches:
                x, m = pad(b, 0, device)
                model.base_model(input_ids=x, attention_mask=m)

    def measure():
        measure_ids(model, ids, 0, batch_size=args.batch_size, progress=False)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for name, run in (("measure", measure), ("base model forward", base)):
        run()  # warm-up
        with torch_profile(activities=activities) as prof:
            run()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"== {name}\n{prof.key_averages().table(sort_by=key, row_limit=15)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=("llama", "olmoe"), default="llama", help="dense Llama or mixture-of-experts OLMoE")
    p.add_argument("--experts", type=int, default=16, help="olmoe: experts per layer")
    p.add_argument("--top-k", type=int, default=4, help="olmoe: experts per token")
    p.add_argument("--experts-implementation", default="grouped_mm", help="olmoe: eager, batched_mm or grouped_mm")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--docs", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of all variants (noise control)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top entries of measure and of the base forward")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.profile:
        profile(args)
        return

    argv = [a for a in sys.argv[1:]]
    results: dict[str, list] = {v: [] for v in VARIANTS}
    peaks: dict[str, list] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for v in VARIANTS:
            out = subprocess.run([sys.executable, __file__, *argv, "--worker", v], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[v] += r["seconds"]
            peaks[v].append(r["peak_bytes"] - r["base_bytes"] if args.device.startswith("cuda") else r["peak_bytes"])
    med = {v: statistics.median(results[v]) for v in VARIANTS}
    peak = {v: statistics.median(peaks[v]) for v in VARIANTS}
    arch = f"OLMoE ({args.experts} experts, top-{args.top_k}, {args.experts_implementation})" if args.arch == "olmoe" else "Llama"
    print(f"model: {arch} {args.layers} layers, width {args.hidden}, vocab {args.vocab}; {args.docs} docs of "
          f"{args.seq_len // 4}-{args.seq_len} tokens, batch {args.batch_size}, {args.device}/{args.dtype}")
    for v in VARIANTS:
        print(f"  {v:<13} median {med[v] * 1000:8.1f} ms   peak {'mem' if args.device == 'cpu' else 'alloc'} {peak[v] / 2**20:8.1f} MiB")
    target = 1.15 if args.arch == "olmoe" else 1.05
    print(f"time  measure / plain forward (full model)      = {med['measure'] / med['forward']:.3f}   (target <= {target})")
    print(f"time  measure / plain forward (same base model) = {med['measure'] / med['base_forward']:.3f}   (hook cost alone)")
    what = "process max RSS" if args.device == "cpu" else "max allocated during the run"
    print(f"peak  measure / plain forward (full model)      = {peak['measure'] / peak['forward']:.3f}   ({what}; target <= 1.10)")
    print(f"peak  measure / plain forward (same base model) = {peak['measure'] / peak['base_forward']:.3f}")


if __name__ == "__main__":
    main()
