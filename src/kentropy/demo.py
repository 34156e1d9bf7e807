"""`make demo` before the lab: a tiny Llama-style model on shipped text, then `kentropy measure`.

    python -m kentropy.demo OUT_DIR     # builds OUT_DIR/model and measures it on the shipped text
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import torch

from kentropy.tokenizer import train_bpe


def sample_text_path() -> Path:
    """The shipped sample corpus (one document per line)."""
    return Path(str(resources.files("kentropy") / "data" / "sample.txt"))


def build_tiny_llama(out_dir: str | Path, texts: list[str], seed: int = 0, hidden: int = 64, layers: int = 4) -> Path:
    """A randomly initialized SwiGLU Llama with a BPE tokenizer trained on `texts`, saved as an HF dir."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_bpe(texts, vocab_size=512)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 8 // 3, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main(argv: list[str]) -> None:
    from kentropy.cli import main as cli

    out = Path(argv[0] if argv else "demo")
    data = sample_text_path()
    model_dir = build_tiny_llama(out / "model", data.read_text().splitlines())
    sys.argv = ["kentropy", "measure", str(model_dir), "--data", str(data), "--seq-len", "128",
                "--metrics", "knowledge,attention,next-token", "--out", str(out / "measure.json")]
    cli()


if __name__ == "__main__":
    main(sys.argv[1:])
