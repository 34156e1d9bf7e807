"""Batched probe scoring against scoring one probe at a time, same model and probes, one run.

    python benchmarks/probe_speed.py                       # CPU defaults: Llama, 4 layers, width 64, vocab 32000
    python benchmarks/probe_speed.py --model-vocab 0         # the output layer only as large as the tokenizer
    python benchmarks/probe_speed.py --device cuda --entries 130 --hidden 512 --layers 8

Builds a small randomly initialized Llama with a BPE tokenizer trained on the shipped sample
text, generates a fictional-knowledge file, and times `score_probes` (batched, length-grouped,
logits only where targets are) against a plain loop that runs each probe alone with full
logits. Checks that both give the same scores (max abs diff <= 1e-5) and prints the speed
ratio (target >= 5x); also `score_probes` with batch size 1, to show what batching alone
gives. Timings alternate the variants and take the median of repeats.

The tokenizer trained on the sample text has only ~700 tokens; by default the model's
embedding and output layer have 32,000 rows, the size of a Llama or Mistral vocabulary
(the extra ids are never produced by the tokenizer but are part of every softmax), so that
the cost of the output layer relative to the body is that of a real model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def build(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    from kentropy.measurement.documents import sample_text_path
    from kentropy.knowledge import KINDS, generate_knowledge
    from kentropy.lab.text.bpe import train_bpe

    tok = train_bpe(sample_text_path().read_text().splitlines(), vocab_size=args.vocab)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=max(args.model_vocab, len(tok)), hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).to(args.device).eval()
    entries = generate_knowledge(args.entries, n_paraphrases=0, seed=0)
    probes = [(e[f"{k}_input"][j], e[f"{k}_target"][j]) for e in entries for k in KINDS for j in range(5)]
    return model, tok, probes


def one_at_a_time(model, tok, probes) -> list[float]:
    """The baseline: each probe alone, no padding, logits at every position."""
    from kentropy.knowledge import encode_probe

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for text, target in probes:
            p = encode_probe(tok, text, target)
            logp = model(torch.tensor([p.ids], device=device), use_cache=False).logits[0].float().log_softmax(-1)
            out.append(sum(logp[t - 1, p.ids[t]].item() for t in range(p.start, p.end)) / (p.end - p.start))
    return out


def main() -> None:
    from kentropy.knowledge import score_probes

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=24)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1024, help="BPE vocabulary to train (the sample text caps it near 700)")
    p.add_argument("--model-vocab", type=int, default=32000, help="rows of the embedding/output layer (0: the tokenizer's size)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads (default: torch's, all cores)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, probes = build(args)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    runs = {"batched": lambda: score_probes(model, tok, probes, batch_size=args.batch_size),
            "one at a time": lambda: one_at_a_time(model, tok, probes),
            "batch size 1": lambda: score_probes(model, tok, probes, batch_size=1)}
    scores = {name: run() for name, run in runs.items()}  # warm-up, and the scores compared
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            sync()
            t = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    diff = max(abs(a - b) for name in runs for a, b in zip(scores[name], scores["one at a time"]))
    ratio = med["one at a time"] / med["batched"]
    print(f"model: Llama {args.layers} layers, width {args.hidden}, vocab {model.config.vocab_size} "
          f"(tokenizer {len(tok)}); {len(probes)} probes of "
          f"{args.entries} entries, batch {args.batch_size}, {args.device}, {args.threads} threads")
    for name in runs:
        print(f"  {name:<14} median {med[name] * 1000:9.1f} ms  ({len(probes) / med[name]:8.1f} probes/s)")
    print(f"max |score - one-at-a-time score| = {diff:.2e}   (must be <= 1e-5)")
    print(f"speed-up batch size 1 / batched = {med['batch size 1'] / med['batched']:.1f}x   (the batching alone)")
    print(f"speed-up one at a time / batched = {ratio:.1f}x   (target >= 5x)")
    sys.exit(0 if diff <= 1e-5 else 1)


if __name__ == "__main__":
    main()
