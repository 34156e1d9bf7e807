"""Pretraining speed on this CPU: today's loop (`kentropy train`) against the lean one (`kentropy.lab.lean`), alone,
as one-thread workers side by side, and stacked; on the decay study's model and on quick's continual-stage
shape; achieved FLOP/s as a share of this machine's fp32 matmul peak, measured in the same run.

    python benchmarks/pretrain_speed.py                   # table per model; last line: fastest / today (decay model)
    python benchmarks/pretrain_speed.py --steps 60        # shorter
    python benchmarks/pretrain_speed.py --trainer         # also HF's Trainer (eager and compiled)

Variants (each worker its own process; same model, data, global batch, fp32):
- today:            `kentropy train`, eager, 2 threads (the lab's pretraining before --compile)
- today 2 x 1:      two `kentropy train --compile` workers side by side, one thread each: how the decay
                    study runs its arms; "today's best", the reference of the last line
- lean eager 1 x 2: `kentropy.lab.lean.pretrain.pretrain`, not compiled, 2 threads (how the lab's core study pretrains)
- lean 1 x 2:       `kentropy.lab.lean.pretrain.pretrain`, compiled, 2 threads
- lean 2 x 1:       two compiled lean workers side by side, one thread each
- stacked K x 2:    K members stacked (`kentropy.lab.lean.stacked`), compiled, 2 threads (K runs at once)
- stacked 2 x (K x 1): two one-thread workers of K stacked members each
Tokens/s are summed over workers and members, so their ratio is the ratio of runs per hour.
Timings are the median per-step time after the first third of the steps (compilation and warm-up excluded).
On the decay model it also times today's and the lean step in turns in one process, in CPU time (one thread):
the comparison a shared machine does not distort; and profiles the lean compiled step kernel by kernel (where
the time goes).
Model FLOPs per token: 6 x (non-embedding matrices + LM head) + 6 x layers x seq_len x width (attention).
The machine may be shared: figures are as measured in one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def lab_models() -> dict:
    """The shapes timed: quick's model at its continual stage's rows (Llama block, HF init) and the decay
    study's reference arm as its preset sets it (OLMo's block, mitchell init, tied embeddings)."""
    from kentropy.lab.config import LabConfig, load_preset

    q, d = LabConfig(), load_preset("decay").decay
    r = d.reference
    return {"quick": dict(arch="swiglu", norm="rmsnorm", init="hf", tie=False, hidden=q.hidden, layers=q.layers, heads=q.heads,
                          ffn=q.ffn, vocab=q.tokenizer_vocab, seq_len=q.continual_seq_len, batch=q.continual_batch),
            "decay": dict(arch=r.arch, norm=r.norm, init=r.init, tie=True, hidden=r.hidden, layers=r.layers, heads=r.heads,
                          ffn=r.ffn, vocab=d.tokenizer_vocab, seq_len=r.seq_len, batch=r.batch_size)}


MODELS = lab_models()


def make_inputs(root: Path, m: dict) -> tuple[Path, Path]:
    import random

    from kentropy.lab.architectures import build_model
    from kentropy.lab.text.bpe import train_bpe

    rng = random.Random(0)
    words = ["".join(rng.choice("aeioubdfgklmnprst") for _ in range(rng.randint(2, 8))) for _ in range(3000)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 300))) for _ in range(3000)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(docs) + "\n")
    tok = train_bpe(docs[:300], vocab_size=m["vocab"])
    model = build_model(m["arch"], m["init"], 0, norm=m["norm"], tok=tok, vocab=len(tok), hidden=m["hidden"],
                        layers=m["layers"], heads=m["heads"], gated_ffn=m["ffn"], positions=m["seq_len"], tie=m["tie"])
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir, corpus


def flops_per_token(model_dir: Path, seq_len: int) -> float:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    d, L, m, V = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size
    matmul = L * (4 * d * d + 3 * d * m) + V * d  # non-embedding matrices + the LM head
    return 6 * matmul + 6 * L * seq_len * d


def matmul_peak(threads: int = 2, n: int = 1024, reps: int = 20) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best


def train_config(m: dict, model_dir: str, corpus: str, steps: int, compile_: bool, out: Path, seed: int = 0):
    from kentropy.training.config import TrainConfig

    return TrainConfig(model=model_dir, data=corpus, out=str(out), steps=steps, batch_size=m["batch"], micro_batch=m["batch"],
                       seq_len=m["seq_len"], eval_every=0, save_every=0, epochs=100, lr=1e-3, compile=compile_, device="cpu",
                       seed=seed)


def worker(which: str, threads: int, steps: int, model_dir: str, corpus: str, m: dict) -> list[float]:
    """Per-step seconds (past the first third) of one worker."""
    import torch

    torch.set_num_threads(threads)
    if which.startswith("trainer"):
        return run_trainer(which == "trainer-compile", steps, Path(model_dir), Path(corpus), m)
    tmp = Path(tempfile.mkdtemp())
    if which.startswith("stacked-"):
        from kentropy.lab.lean.stacked import pretrain_stacked

        k = int(which.split("-")[1])
        logs = pretrain_stacked([train_config(m, model_dir, corpus, steps, True, tmp / f"run{i}", seed=i) for i in range(k)])
        rows = logs[0]
    elif which in ("lean", "lean-eager"):
        from kentropy.lab.lean.pretrain import pretrain

        rows = pretrain(train_config(m, model_dir, corpus, steps, which == "lean", tmp / "run"))
    else:
        from kentropy.training.loop import train

        train(train_config(m, model_dir, corpus, steps, which == "compiled", tmp / "run"))
        rows = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [m["batch"] * m["seq_len"] / r["tokens_per_s"] for r in rows if r.get("step", -1) >= steps // 3]


def run_trainer(compile_: bool, steps: int, model_dir: Path, corpus: Path, m: dict) -> list[float]:
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).parent))
    from train_throughput import run_trainer as trainer  # one Trainer set-up for both benchmarks

    args = SimpleNamespace(steps=steps, batch=m["batch"], seq_len=m["seq_len"])
    return trainer(args, model_dir, corpus, m["batch"], compile_=compile_, skip=steps // 3)["step_seconds"]


def launch(which: str, threads: int, steps: int, model_dir: Path, corpus: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", which, str(threads), str(steps), str(model_dir), str(corpus), name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(p: subprocess.Popen, what: str) -> list[float]:
    out, err = p.communicate()
    if p.returncode:
        sys.exit(f"{what} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def interleaved_steps(model_dir: Path, m: dict, rounds: int = 7, steps: int = 10) -> dict[str, float]:
    """Tokens per CPU-second of one thread, today's step (the HF model, compiled, as `train --compile`) and the
    lean one (compiled as `lean.fit` compiles it), timed in turns in one process: on a shared machine the
    two see the same load, and CPU time leaves out the time the process waits for a core."""
    import torch

    from kentropy.lab.lean.pretrain import compiled
    from kentropy.lab.lean.model import LeanLM
    from kentropy.models.loading import ModelRef, load_model
    from kentropy.training.sharding import clip_grad_norm
    from kentropy.training.config import TrainConfig
    from kentropy.training.optimizer import make_optimizer

    torch.set_num_threads(1)
    cfg = TrainConfig(model="-", data="-", out="-", lr=1e-3)
    x = torch.randint(0, m["vocab"], (m["batch"], m["seq_len"]), generator=torch.Generator().manual_seed(0))
    hf = load_model(ModelRef(str(model_dir)))
    hf.train()
    lean = LeanLM.from_hf([hf], stacked=False)
    hf_fwd, lean_loss = torch.compile(hf), compiled(lean.loss, torch.device("cpu"))
    hf_opt, lean_opt = make_optimizer(hf, cfg), make_optimizer(lean, cfg)

    def today() -> None:
        hf_fwd(input_ids=x, labels=x).loss.backward()
        clip_grad_norm(hf, 1.0)
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    def lean_step() -> None:
        lean_loss(x[None])[0].backward()
        torch.nn.utils.clip_grad_norm_(list(lean.parameters()), 1.0)
        lean_opt.step()
        lean_opt.zero_grad(set_to_none=True)

    variants = {"today, 1 thread": today, "lean, 1 thread": lean_step}
    for step in variants.values():
        for _ in range(5):  # compile and warm up
            step()
    cpu = {k: [] for k in variants}
    for _ in range(rounds):
        for k, step in variants.items():
            t = time.process_time()
            for _ in range(steps):
                step()
            cpu[k].append((time.process_time() - t) / steps)
    return {k: m["batch"] * m["seq_len"] / statistics.median(v) for k, v in cpu.items()}


def kernel_profile(model_dir: Path, m: dict, steps: int = 20, top: int = 12) -> list[tuple[str, float]]:
    """Where the lean compiled step's time goes, one thread: inductor's kernels (and the extern calls it makes:
    matmuls, attention) by their share of the profiled CPU time, largest first."""
    import torch
    import torch._inductor.config as inductor
    from torch.profiler import profile

    from kentropy.lab.lean.pretrain import compiled
    from kentropy.lab.lean.model import LeanLM
    from kentropy.models.loading import ModelRef, load_model
    from kentropy.training.config import TrainConfig
    from kentropy.training.optimizer import make_optimizer

    torch.set_num_threads(1)
    torch._dynamo.reset()
    x = torch.randint(0, m["vocab"], (1, m["batch"], m["seq_len"]), generator=torch.Generator().manual_seed(0))
    lean = LeanLM.from_hf([load_model(ModelRef(str(model_dir)))], stacked=False)
    loss, opt = compiled(lean.loss, torch.device("cpu")), make_optimizer(lean, TrainConfig(model="-", data="-", out="-", lr=1e-3))

    def step() -> None:
        loss(x)[0].backward()
        torch.nn.utils.clip_grad_norm_(list(lean.parameters()), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    # each generated kernel as its own profiler event: compiled afresh, not taken from a cache of the same graph
    # compiled without kernel profiling
    with inductor.patch({"cpp.enable_kernel_profile": True, "force_disable_caches": True}):
        for _ in range(5):
            step()
        with profile() as prof:
            for _ in range(steps):
                step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(((e.key, e.self_cpu_time_total / total) for e in events), key=lambda r: -r[1])
    return rows[:top]


def side_by_side(which: str, workers: int, steps: int, model_dir: Path, corpus: Path, name: str, tokens: int) -> float:
    """Tokens/s summed over `workers` one-thread workers of `which` running at once."""
    procs = [launch(which, 1, steps, model_dir, corpus, name) for _ in range(workers)]
    return sum(tokens / statistics.median(collect(q, which)) for q in procs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="quick,decay")
    p.add_argument("--steps", type=int, default=0, help="steps per variant (default: 60 quick, 240 decay)")
    p.add_argument("--stack", type=int, default=4, help="members stacked in the stacked variants")
    p.add_argument("--trainer", action="store_true", help="also HF's Trainer, eager and compiled (2 threads)")
    p.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        which, threads, steps, model_dir, corpus, name = args.worker
        print(json.dumps(worker(which, int(threads), int(steps), model_dir, corpus, MODELS[name])))
        return

    peak = matmul_peak()
    print(f"fp32 matmul peak (2 threads, 1024^3): {peak / 1e9:.0f} GFLOP/s")
    ratio = None
    for name in args.models.split(","):
        m = MODELS[name]
        steps = args.steps or (60 if name == "quick" else 240)
        root = Path(tempfile.mkdtemp(prefix=f"kentropy-speed-{name}-"))
        model_dir, corpus = make_inputs(root, m)
        tokens = m["batch"] * m["seq_len"]
        K = args.stack
        tps = {}

        def alone(which: str, threads: int = 2, members: int = 1) -> float:
            return members * tokens / statistics.median(collect(launch(which, threads, steps, model_dir, corpus, name), which))

        tps["today"] = alone("today")
        tps["today 2 x 1"] = side_by_side("compiled", 2, steps, model_dir, corpus, name, tokens)
        tps["lean eager 1 x 2"] = alone("lean-eager")
        tps["lean 1 x 2"] = alone("lean")
        tps["lean 2 x 1"] = side_by_side("lean", 2, steps, model_dir, corpus, name, tokens)
        tps[f"stacked {K} x 2"] = alone(f"stacked-{K}", members=K)
        tps[f"stacked 2 x ({K} x 1)"] = side_by_side(f"stacked-{K}", 2, steps, model_dir, corpus, name, K * tokens)
        if args.trainer:
            tps["Trainer"] = alone("trainer")
            tps["Trainer compiled"] = alone("trainer-compile")
        f = flops_per_token(model_dir, m["seq_len"])
        print(f"\n{name} model: {m['arch']} {m['norm']} {m['layers']} x {m['hidden']}, ffn {m['ffn']}, vocab {m['vocab']}; batch {m['batch']} x "
              f"{m['seq_len']}; {f / 1e6:.2f} MFLOP per token; {steps} steps per variant")
        for which, v in tps.items():
            print(f"  {which:<22} {v:10,.0f} tokens/s   {v * f / 1e9:6.1f} GFLOP/s = {v * f / peak:6.1%} of the matmul peak   "
                  f"{v / tps['today 2 x 1']:5.2f}x today's best")
        if name == "decay":
            per_cpu = interleaved_steps(model_dir, m)
            print("  in turns in one process, per CPU-second (the load of a shared machine left out):")
            for which, v in per_cpu.items():
                print(f"  {which:<22} {v:10,.0f} tokens/CPU-s")
            print(f"  lean / today per thread: {per_cpu['lean, 1 thread'] / per_cpu['today, 1 thread']:.2f}x")
            print("  where the lean compiled step's time goes (one thread, share of profiled CPU time):")
            for key, share in kernel_profile(model_dir, m):
                print(f"  {share:6.1%}  {key[:90]}")
        new = {k: v for k, v in tps.items() if k.startswith(("lean", "stacked"))}
        best = max(new, key=new.get)
        print(f"  fastest: {best}, {new[best] / tps['today 2 x 1']:.2f}x today's best (2 x 1 kentropy train --compile)")
        if name == "decay":
            ratio = new[best] / tps["today 2 x 1"]
    if ratio is not None:
        print(f"fastest / today: {ratio:.2f}x (decay model)")


if __name__ == "__main__":
    main()
