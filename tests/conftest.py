"""Shared fixtures: tiny models of every family, built from configs, with a BPE tokenizer trained here."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402

from kentropy.measurement.documents import sample_text_path  # noqa: E402
from kentropy.lab.text.bpe import train_bpe  # noqa: E402

torch.set_num_threads(1)  # 2 cores here; tests also run side by side

V = 320  # tiny vocab: the tokenizer below is trained to exactly this size
_KW = dict(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2)


def family_config(family: str, **over):
    """A 2-layer, width-16 config of `family` (ffn dim 24 everywhere)."""
    tokens = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    cfgs = {
        "llama": lambda: T.LlamaConfig(**_KW, num_key_value_heads=2, **tokens),
        "olmo": lambda: T.OlmoConfig(**_KW, **tokens),
        "olmo2": lambda: T.Olmo2Config(**_KW, **tokens),
        "qwen2": lambda: T.Qwen2Config(**_KW, num_key_value_heads=2, **tokens),
        "mistral": lambda: T.MistralConfig(**_KW, num_key_value_heads=2, **tokens),
        "gemma": lambda: T.GemmaConfig(**_KW, num_key_value_heads=2, head_dim=8, **tokens),
        "gpt2": lambda: T.GPT2Config(vocab_size=V, n_embd=16, n_layer=2, n_head=2, n_positions=128, n_inner=24, **tokens),
        "gpt_neox": lambda: T.GPTNeoXConfig(**_KW, **tokens),
        "phi": lambda: T.PhiConfig(**_KW, **tokens),
        "opt": lambda: T.OPTConfig(vocab_size=V, hidden_size=16, ffn_dim=24, num_hidden_layers=2, num_attention_heads=2,
                                   word_embed_proj_dim=16, max_position_embeddings=128, **tokens),
        "bert": lambda: T.BertConfig(**_KW, pad_token_id=2),
    }
    cfg = cfgs[family]()
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


FAMILIES = ["llama", "olmo", "olmo2", "qwen2", "mistral", "gemma", "gpt2", "gpt_neox", "phi", "opt", "bert"]
GATED = {"llama", "olmo", "olmo2", "qwen2", "mistral", "gemma"}


def tiny_model(family: str, seed: int = 0, eager: bool = True):
    """A randomly initialized tiny model in eval mode (encoders as the bare model)."""
    torch.manual_seed(seed)
    cfg = family_config(family)
    kw = {"attn_implementation": "eager"} if eager else {}
    cls = T.AutoModel if family == "bert" else T.AutoModelForCausalLM
    model = cls.from_config(cfg, **kw)
    with torch.no_grad():  # larger-than-default weights so that coefficients are far from uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """`kentropy ARGS...` in this process (fast): exit code, stdout, stderr."""
    from kentropy.cli.app import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    return sample_text_path().read_text().splitlines()


@pytest.fixture(scope="session")
def tokenizer(sample_texts):
    tok = train_bpe(sample_texts, vocab_size=V, min_frequency=1)
    assert len(tok) <= V
    return tok


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer):
    """Factory: save a tiny `family` model (+ tokenizer) to a fresh directory and return its path."""

    def make(family: str = "llama", seed: int = 0):
        d = tmp_path_factory.mktemp(f"{family}-{seed}")
        tiny_model(family, seed).save_pretrained(d)
        tokenizer.save_pretrained(d)
        return d

    return make
