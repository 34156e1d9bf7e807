"""Peak memory and time of measuring all three metrics against knowledge entropy alone, on a wide vocabulary.

    python benchmarks/measure_memory.py                         # CPU: Llama-style, vocab 262,144 (Gemma 3's), 4 layers
    python benchmarks/measure_memory.py --vocab 128256 --seq-len 512
    python benchmarks/measure_memory.py --device cuda --layers 8 --hidden 1024 --seq-len 2048

Prints, as ratios measured in this one run, `all three / knowledge alone` of
- peak memory: on CPU the process's peak resident set (Linux's VmHWM), each variant in a fresh process,
  its high-water mark reset (/proc/self/clear_refs) once the model is built, so that building the model
  does not count. RSS counts every allocation (torch's allocator, BLAS workspaces, Python), which
  tracemalloc (Python's heap only, not tensor storage) would miss. Given in total and above the loaded
  model (RSS at the reset), the latter being what measuring itself costs. On CUDA: max allocated, in
  total and above the loaded model.
- time: process CPU time on CPU (this machine's cores are shared: wall time would measure the neighbours),
  wall time after a synchronize on CUDA; the median of --repeats runs after a warm-up.
Target: peak memory with all three <= 1.5x knowledge alone (totals). Next-token entropy is reduced a chunk
of positions at a time inside the LM head, attention entropy inside each layer's hook, so neither grows
with tokens x vocabulary; what remains is eager attention's own [B, H, T, T] maps (attention entropy
needs them) and one chunk of logits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

VARIANTS = {"knowledge": ("knowledge",), "all": ("knowledge", "attention", "next-token")}


def status_bytes(key: str) -> int:
    """A size from /proc/self/status (VmRSS: resident now, VmHWM: its high-water mark)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(key + ":"))
    return int(line.split()[1]) * 1024  # kB


def reset_peak_rss() -> int:
    """Reset this process's VmHWM to its current RSS (Linux: write 5 to clear_refs); return that RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_bytes("VmRSS")


def worker(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from kentropy.measurement.workflow import measure_ids

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    metrics = VARIANTS[args.worker]
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 4,
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64 or 1,
                      num_key_value_heads=args.hidden // 64 or 1, max_position_embeddings=args.seq_len,
                      tie_word_embeddings=True)  # tied, as Gemma's and Llama-3.2's small models
    kw = {"attn_implementation": "eager"} if "attention" in metrics else {}  # as `kentropy measure` loads it
    device = torch.device(args.device)
    model = AutoModelForCausalLM.from_config(cfg, **kw).to(device=device, dtype=getattr(torch, args.dtype)).eval()
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(args.seq_len // 4, args.seq_len + 1, (args.docs,), generator=g).tolist()
    ids = [torch.randint(3, args.vocab, (n,), generator=g).tolist() for n in lengths]
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = reset_peak_rss()
    times = []
    for _ in range(args.repeats + 1):  # the first is the warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        measure_ids(model, ids, 0, metrics=metrics, batch_size=args.batch_size, progress=False)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0 if cuda else time.process_time() - c0)
    peak = torch.cuda.max_memory_allocated() if cuda else status_bytes("VmHWM")
    return {"seconds": times[1:], "peak": peak, "base": base}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=262144)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--docs", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--worker", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    r = {}
    for v in VARIANTS:
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--worker", v], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{v}: {out.stderr.strip().splitlines()[-1]}")
        r[v] = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 2**20
    what = "max allocated" if args.device.startswith("cuda") else "peak RSS"
    clock = "wall" if args.device.startswith("cuda") else "CPU"
    print(f"model: Llama-style, {args.layers} layers, width {args.hidden}, vocab {args.vocab} (tied); {args.docs} docs of "
          f"{args.seq_len // 4}-{args.seq_len} tokens, batch {args.batch_size}, {args.device}/{args.dtype}")
    for v, metrics in VARIANTS.items():
        x = r[v]
        print(f"  {','.join(metrics):<32} {what} {x['peak'] / mib:8.1f} MiB (above the loaded model "
              f"{(x['peak'] - x['base']) / mib:7.1f} MiB)   {clock} time {statistics.median(x['seconds']):7.2f} s")
    k, a = r["knowledge"], r["all"]
    print(f"peak  all three / knowledge alone = {a['peak'] / k['peak']:.3f}   ({what}; target <= 1.5)")
    print(f"peak  above the loaded model      = {(a['peak'] - a['base']) / max(k['peak'] - k['base'], 1):.3f}")
    print(f"time  all three / knowledge alone = {statistics.median(a['seconds']) / statistics.median(k['seconds']):.3f}   ({clock} time)")


if __name__ == "__main__":
    main()
