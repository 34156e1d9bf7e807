"""Does a tokenizer fit its model? Checked from the model's config, before any weights load.

    check_vocab(ckpt, tok)                       # every id the tokenizer can emit has an embedding row
    check_positions(ckpt, tok, longest, config, seq_len)  # the longest input fits the position embeddings
    check_specials_truncate(tok, seq_len)        # --seq-len leaves room after the special tokens

A failure is one `KentropyError` naming the tokenizer, the model and the number that does not fit.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from kentropy.errors import KentropyError

POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def read_config(ckpt, trust_remote_code: bool = False):
    """The checkpoint's config (no weights; a GGUF file's from its metadata), or None when it cannot be read
    (load_model reports that)."""
    try:
        return load_config(ckpt, trust_remote_code)
    except Exception:  # noqa: BLE001 - the model load that follows gives the one-line reason
        return None


def load_config(ckpt, trust_remote_code: bool = False):
    """The checkpoint's config (`AutoConfig.from_pretrained`; errors propagate). A local GGUF file's is parsed
    once per process and copied: transformers reads it from the file's whole metadata, the vocabulary included
    (about a minute for a 262k-token vocabulary on a loaded 2-core machine)."""
    from transformers import AutoConfig

    path = Path(ckpt.name)
    if ckpt.gguf_file and path.is_file():
        stat = path.stat()
        return copy.deepcopy(_gguf_config(ckpt.source, ckpt.gguf_file, stat.st_size, stat.st_mtime_ns, trust_remote_code))
    return AutoConfig.from_pretrained(ckpt.source, trust_remote_code=trust_remote_code, **ckpt.pretrained_kw)


@functools.lru_cache(maxsize=4)
def _gguf_config(source: str, gguf_file: str, size: int, mtime_ns: int, trust_remote_code: bool):
    """One GGUF file's config, keyed by its size and time of change as well (a rewritten file is read again)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source, gguf_file=gguf_file, trust_remote_code=trust_remote_code)


def _text_config(config):
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def vocab_size(config) -> int | None:
    """Rows of the input embedding, from the config (the text model's, for multimodal configs)."""
    v = getattr(_text_config(config), "vocab_size", None)
    return v if isinstance(v, int) and v > 0 else None


def position_limit(config) -> int | None:
    """The longest input the position embeddings allow, from the config (None when unbounded)."""
    c = _text_config(config)
    for key in POSITION_KEYS:
        v = getattr(c, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _name(tok) -> str:
    return getattr(tok, "name_or_path", "") or type(tok).__name__


def check_vocab(ckpt, tok, config) -> None:
    """Every id the tokenizer can emit (its vocabulary and added tokens) is below the model's vocab_size."""
    v = vocab_size(config) if config is not None else None
    if v is None:
        return
    top = max(tok.get_vocab().values(), default=-1)
    if top >= v or len(tok) > v:
        raise KentropyError(f"MODEL {ckpt}: tokenizer {_name(tok)} emits ids up to {top} ({len(tok)} tokens) but the model's "
                            f"embedding has vocab_size {v}: the tokenizer does not fit the model")


def check_positions(ckpt, tok, longest: int, config, seq_len: int, flag: str = "--seq-len") -> None:
    """Inputs of `longest` tokens (at most `seq_len`) fit the model's position embeddings."""
    limit = position_limit(config) if config is not None else None
    if limit is not None and longest > limit:
        raise KentropyError(f"{flag} {seq_len}: inputs of {longest} tokens (tokenizer {_name(tok)}) exceed the "
                            f"{limit} positions of MODEL {ckpt} (use {flag} {limit} or less)")


def check_specials_truncate(tok, seq_len: int, flag: str = "--seq-len") -> None:
    """`seq_len` is more than the special tokens the tokenizer adds (else HF skips truncation without a word)."""
    n = tok.num_special_tokens_to_add()
    if seq_len <= n:
        raise KentropyError(f"{flag} {seq_len}: tokenizer {_name(tok)} adds {n} special tokens to every document; "
                            f"{flag} must exceed {n} (else nothing is truncated)")


def check_pad(ckpt, tok) -> None:
    """Batching needs a pad token, or an eos to pad with."""
    if tok.pad_token is None and tok.eos_token is None:
        raise KentropyError(f"MODEL {ckpt}: tokenizer {_name(tok)} has neither a pad nor an eos token (batches need one to pad with)")
