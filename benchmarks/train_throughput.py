"""Tokens/s of `kentropy train` against the HF `Trainer`, same tiny model, data and global batch, one run;
and peak memory of `kentropy train` with micro-batch 1 vs 8 (bounded by the micro-batch, not the global batch).

    python benchmarks/train_throughput.py            # prints ratios; target kentropy / Trainer >= 1.0

Each variant runs in its own process (peak memory is max RSS on CPU, max allocated on CUDA);
timings are the median per-step time after 2 warm-up steps, alternating variants over rounds.
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


def make_inputs(root: Path, args) -> tuple[Path, Path]:
    """A Llama-style model dir and a corpus of random-word documents (no knowledge injection)."""
    import random

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kentropy.lab.text.bpe import train_bpe

    rng = random.Random(0)
    words = [("".join(rng.choice("aeioubdfgklmnprst") for _ in range(rng.randint(2, 8)))) for _ in range(3000)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 300))) for _ in range(args.docs)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(docs) + "\n")
    tok = train_bpe(docs[:200], vocab_size=args.vocab)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                      num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                      num_key_value_heads=max(1, args.hidden // 64), max_position_embeddings=args.seq_len,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    model_dir = root / "model"
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir, corpus


def peak_bytes() -> int:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_kentropy(args, model_dir: Path, corpus: Path, micro: int) -> dict:
    from kentropy.training.config import TrainConfig
    from kentropy.training.loop import train

    out = Path(tempfile.mkdtemp()) / "run"
    train(TrainConfig(model=str(model_dir), data=str(corpus), out=str(out), steps=args.steps, batch_size=args.batch,
                      micro_batch=micro, seq_len=args.seq_len, eval_every=0, save_every=0, epochs=100))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    per_step = [args.batch * args.seq_len / r["tokens_per_s"] for r in rows if r["step"] >= 2]
    return {"step_seconds": per_step, "peak_bytes": peak_bytes()}


def run_trainer(args, model_dir: Path, corpus: Path, micro: int, compile_: bool = False, skip: int = 2) -> dict:
    """The HF Trainer on the same rows (eager, or with `torch_compile`); step times after `skip` steps."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from kentropy.training.corpus import pack_rows

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = pack_rows(tok, corpus.read_text().splitlines(), args.seq_len)

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return {"input_ids": rows[i], "labels": rows[i]}

    times: list[float] = []

    class Clock(TrainerCallback):
        """Time between consecutive optimizer-step ends: a whole step, all micro-batches included."""

        t = None

        def on_step_end(self, a, state, control, **kw):
            now = time.perf_counter()
            if state.global_step > skip and self.t is not None:
                times.append(now - self.t)
            self.t = now

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(), max_steps=args.steps, per_device_train_batch_size=micro,
        gradient_accumulation_steps=args.batch // micro, learning_rate=4e-4, adam_beta1=0.9, adam_beta2=0.95,
        weight_decay=0.1, warmup_steps=max(1, round(0.05 * args.steps)), lr_scheduler_type="cosine", max_grad_norm=1.0, save_strategy="no",
        report_to=[], logging_steps=10**6, dataloader_num_workers=0, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(), torch_compile=compile_,
    )
    Trainer(model=model, args=targs, train_dataset=Rows(), callbacks=[Clock()]).train()
    return {"step_seconds": times, "peak_bytes": peak_bytes()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=16, help="global batch (rows)")
    p.add_argument("--micro", type=int, default=8, help="micro-batch for the throughput comparison")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--docs", type=int, default=600)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--worker", nargs=4, metavar=("WHICH", "MICRO", "MODEL", "CORPUS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(2)
        which, micro, model_dir, corpus = args.worker
        fn = run_kentropy if which == "kentropy" else run_trainer
        print(json.dumps(fn(args, Path(model_dir), Path(corpus), int(micro))))
        return

    root = Path(tempfile.mkdtemp(prefix="kentropy-bench-"))
    model_dir, corpus = make_inputs(root, args)
    base = [a for a in sys.argv[1:]]

    def worker(which: str, micro: int) -> dict:
        out = subprocess.run([sys.executable, __file__, *base, "--worker", which, str(micro), str(model_dir), str(corpus)],
                             capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{which} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    steps: dict[str, list[float]] = {"kentropy": [], "trainer": []}
    for _ in range(args.rounds):
        for which in steps:
            steps[which] += worker(which, args.micro)["step_seconds"]
    tps = {k: args.batch * args.seq_len / statistics.median(v) for k, v in steps.items()}
    mem = {m: worker("kentropy", m)["peak_bytes"] for m in (1, 8)}
    print(f"model: Llama {args.layers} layers, width {args.hidden}; global batch {args.batch} x {args.seq_len} tokens, micro-batch {args.micro}")
    print(f"  kentropy train   {tps['kentropy']:10.0f} tokens/s")
    print(f"  HF Trainer       {tps['trainer']:10.0f} tokens/s")
    print(f"throughput kentropy / Trainer = {tps['kentropy'] / tps['trainer']:.3f}   (target >= 1.0)")
    print(f"peak memory, micro-batch 1: {mem[1] / 2**20:.0f} MiB; micro-batch 8: {mem[8] / 2**20:.0f} MiB; "
          f"ratio 8/1 = {mem[8] / mem[1]:.2f} (global batch {args.batch} in both)")


if __name__ == "__main__":
    main()
