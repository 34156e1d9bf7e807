"""Loading models and tokenizers: local directories or hub ids with `@revision` series.

`MODEL@rev1,rev2` is a checkpoint series (one load per revision); a local directory is one
checkpoint. Weights load through `from_pretrained` (safetensors, or `weights_only` pickles);
`trust_remote_code` stays off unless the caller asks for it.
"""

from __future__ import annotations

import contextlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from kentropy.errors import ArgumentError, KentropyError, reason
from kentropy.io import read_json

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class Checkpoint:
    """One model to load: a local directory or hub id, and an optional hub revision."""

    name: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.name if self.revision is None else f"{self.name}@{self.revision}"


def parse_checkpoints(specs: list[str]) -> list[Checkpoint]:
    """`["a@r1,r2", "dir"]` -> [a@r1, a@r2, dir], in order. An existing path is never split."""
    out: list[Checkpoint] = []
    for spec in specs:
        if Path(spec).exists() or "@" not in spec:
            out.append(Checkpoint(spec))
            continue
        name, _, revs = spec.rpartition("@")
        revisions = [r.strip() for r in revs.split(",") if r.strip()]
        if not name or not revisions:
            raise KentropyError(f"MODEL {spec!r}: expected NAME@rev1,rev2,...")
        out.extend(Checkpoint(name, r) for r in revisions)
    return out


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ArgumentError("device", "choose auto, cpu, cuda or cuda:N", device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArgumentError("device", "CUDA is not available", device)
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """float32 by default; bfloat16 where the device supports it and it is asked for."""
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ArgumentError("dtype", f"choose one of {', '.join(table)}", dtype)
    if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ArgumentError("dtype", "this GPU does not support bf16", dtype)
    return table[dtype]


def is_causal_lm(config) -> bool:
    """Causal LM (has a next-token head) vs encoder, from the config alone."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    archs = getattr(config, "architectures", None) or []
    if archs:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    t = config.model_type
    return t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and t not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _check_local(ckpt: Checkpoint) -> None:
    path = Path(ckpt.name)
    if not path.exists():
        return
    if not path.is_dir():
        raise KentropyError(f"MODEL {ckpt}: not a model directory")
    if not (path / "config.json").is_file():
        raise KentropyError(f"MODEL {ckpt}: no config.json in {path}")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise KentropyError(f"MODEL {ckpt}: no weights (model.safetensors) in {path}")
    if ckpt.revision is not None:
        raise KentropyError(f"MODEL {ckpt}: a local directory has no revisions")


def check_safetensors(path: str | Path, what: str) -> None:
    """A one-line error naming `path` when the file is truncated or its header is corrupt.

    The format: 8 bytes little-endian header size n, n bytes of JSON header (UTF-8) whose
    `data_offsets` index the tensor bytes after it; the file must hold all of them.
    """
    import json

    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 0 or n > size - 8:
            raise KentropyError(f"{what} {path}: truncated or not a safetensors file ({size} bytes)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise KentropyError(f"{what} {path}: corrupt safetensors header") from None
    need = 8 + n + max(ends, default=0)
    if size < need:
        raise KentropyError(f"{what} {path}: truncated safetensors file ({size} bytes of {need})")


def check_load_report(ckpt: Checkpoint, info: dict, *, allow_unexpected: bool = False) -> None:
    """Refuse weights that do not match the config: missing ones would be randomly initialised,
    unexpected ones silently dropped, mismatched ones resized. `info` is from_pretrained's loading info."""
    def some(keys) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")

    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing weights would be randomly initialised: {some(info['missing_keys'])}")
    if info.get("unexpected_keys") and not allow_unexpected:
        problems.append(f"weights not in the config's architecture would be dropped: {some(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        problems.append(f"weights of the wrong shape: {some(k[0] if isinstance(k, tuple) else k for k in info['mismatched_keys'])}")
    if problems:
        raise KentropyError(f"MODEL {ckpt}: weights do not match config.json ({'; '.join(problems)})")


@contextlib.contextmanager
def _load_report_handled():
    """transformers' own load report off (`check_load_report` says what matters, in one line)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def check_weights_index(index: Path, what: str) -> None:
    """A sharded checkpoint's index: JSON whose `weight_map` maps tensor names to shard files, every one of
    them present next to it (safetensors shards whole: `check_safetensors`). Errors name the file."""
    try:
        data = read_json(index, what)
    except KentropyError as e:
        raise KentropyError(f"{what} {e}") from None
    shards = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(shards, dict) or not shards or not all(isinstance(f, str) for f in shards.values()):
        raise KentropyError(f"{what} {index}: no 'weight_map' of tensor names to shard files")
    for shard in sorted(set(shards.values())):
        path = index.parent / shard
        if not path.is_file():
            raise KentropyError(f"{what} {index}: its weight_map names {shard}, which is not in {index.parent}")
        if path.suffix == ".safetensors":
            check_safetensors(path, what)


def check_layers(config, what: str) -> None:
    """A model needs at least one layer: with none there is no FFN to measure, nothing to probe but the
    embeddings, nothing to learn into. `what` names where the config came from."""
    get = getattr(config, "get_text_config", None)
    n = getattr(get() if callable(get) else config, "num_hidden_layers", None)
    if isinstance(n, int) and n < 1:
        raise KentropyError(f"{what}: num_hidden_layers is {n}: a model without layers has no FFN to measure, probe or train")


def check_checkpoint(ckpt: Checkpoint, trust_remote_code: bool = False, check=None):
    """What a checkpoint's files show before any weights load, in one-line errors naming the file: a local
    directory with config.json and weights, a config transformers accepts (its whole reason when not), at
    least one layer, sharded weights whose index names only shards that are there, safetensors files whole.
    `check(ckpt, config)` adds a command's own demands (a causal LM for probing). Returns the config."""
    from transformers import AutoConfig

    _check_local(ckpt)
    path = Path(ckpt.name)
    where = f"MODEL {ckpt}: {path / 'config.json'}" if path.is_dir() else f"MODEL {ckpt}"
    try:
        config = AutoConfig.from_pretrained(ckpt.name, revision=ckpt.revision, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - transformers and huggingface_hub raise many types for one bad config
        if not path.is_dir():
            raise _load_error(ckpt, e) from None
        raise KentropyError(f"{where}: {reason(e)}") from None
    check_layers(config, where)
    if path.is_dir():
        for index in (f for f in WEIGHT_FILES if f.endswith(".index.json")):
            if (path / index).is_file():
                check_weights_index(path / index, f"MODEL {ckpt}:")
        for f in sorted(path.glob("*.safetensors")):
            check_safetensors(f, f"MODEL {ckpt}:")
    if check is not None:
        check(ckpt, config)
    return config


def _load_error(ckpt: Checkpoint, e: Exception) -> KentropyError:
    """A failed load in one line with the library's whole reason. For a local directory, the file at fault
    where its files show one (`check_checkpoint`, its config read as transformers reads it unless it asks for
    remote code, which is never run here); "offline or not found" only for a hub id that could not be fetched."""
    path = Path(ckpt.name)
    if path.is_dir():
        try:
            if "auto_map" not in _raw_config(path):
                check_checkpoint(ckpt)
        except KentropyError as found:
            return found
        return KentropyError(f"MODEL {ckpt}: cannot load {path}: {reason(e)}")
    where = f"revision {ckpt.revision!r} of {ckpt.name}" if ckpt.revision else ckpt.name
    return KentropyError(f"MODEL {ckpt}: cannot load {where}{' (offline or not found)' if isinstance(e, OSError) else ''}: "
                         f"{reason(e)}")


def _raw_config(path: Path) -> dict:
    """config.json of a local directory as plain JSON (an error naming it when it is not a JSON object)."""
    data = read_json(path / "config.json", "MODEL")
    if not isinstance(data, dict):
        raise KentropyError(f"MODEL {path / 'config.json'}: expected a JSON object, got {type(data).__name__}")
    return data


def load_tokenizer(ckpt: Checkpoint, trust_remote_code: bool = False):
    """The checkpoint's tokenizer, checked against the model's config (`kentropy.models.compat`: ids within
    vocab_size, a pad or eos token) before any weights load; a missing pad token becomes eos (said on stderr)."""
    from transformers import AutoTokenizer

    from kentropy.models.compat import check_pad, check_vocab, read_config

    _check_local(ckpt)
    try:
        tok = AutoTokenizer.from_pretrained(ckpt.name, revision=ckpt.revision, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise _load_error(ckpt, e) from None
    check_vocab(ckpt, tok, read_config(ckpt, trust_remote_code))
    check_pad(ckpt, tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
        print(f"note: {ckpt}: tokenizer has no pad token; using eos {tok.eos_token!r} (masked out)", file=sys.stderr)
    return tok


def load_model(
    ckpt: Checkpoint,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    eager_attention: bool = False,
    trust_remote_code: bool = False,
    device_map: str | None = None,
):
    """Load for inference (eval mode): a causal LM with its head, else the bare encoder.

    `eager_attention` is only for attention entropy (the probabilities must be materialized).
    `device_map="auto"` spreads the layers over the visible GPUs (accelerate) instead of `device`.
    """
    import pickle

    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    _check_local(ckpt)
    if Path(ckpt.name).is_dir():
        for f in sorted(Path(ckpt.name).glob("*.safetensors")):
            check_safetensors(f, f"MODEL {ckpt}:")
    kw = dict(revision=ckpt.revision, trust_remote_code=trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(ckpt.name, **kw)
        cls = AutoModelForCausalLM if is_causal_lm(config) else AutoModel
        extra = {"attn_implementation": "eager"} if eager_attention else {}
        if device_map is not None:
            extra["device_map"] = device_map
        with _load_report_handled():
            model, info = cls.from_pretrained(ckpt.name, dtype=dtype, output_loading_info=True, **kw, **extra)
        # a bare encoder (AutoModel) drops the checkpoint's task head: expected, not a mismatch
        check_load_report(ckpt, info, allow_unexpected=cls is AutoModel)
    except KentropyError:
        raise
    except (OSError, ValueError, RuntimeError, EOFError, SafetensorError, pickle.UnpicklingError) as e:
        raise _load_error(ckpt, e) from None  # a corrupt pickle or config, an offline hub: one line
    return (model if device_map is not None else model.to(device)).eval()


@dataclass
class Loaded:
    """One checkpoint of a series, loaded: `model` is released (None) before the next one loads."""

    checkpoint: Checkpoint
    tokenizer: object
    model: object = None
    index: int = 0  # position in the series


def load_series(specs: list[str], *, before_load=None, skip=None, check=None, **load_kw):
    """Each checkpoint of `specs` (`NAME@rev1,rev2`, directories) in order, one model in memory at a time:
    yields a `Loaded` whose `.model` is dropped before the next load (use `item.model`, not a copy of it).

    Every checkpoint's files are checked before the first one loads (`check_checkpoint`; `check(checkpoint,
    config)` adds the command's own demands), so a series never stops at a checkpoint whose config showed
    the problem all along. `before_load(checkpoint, tokenizer)` runs before the weights load (e.g. tokenizing
    the data), so that bad input fails before the heavy part; `skip(index)` true leaves a checkpoint out
    entirely (a resumed series' finished ones); `load_kw` go to `load_model` (device, dtype, eager_attention, ...).
    Shared by measure, probe, evaluate and circuits.
    """
    trust = load_kw.get("trust_remote_code", False)
    todo = [(i, ckpt) for i, ckpt in enumerate(parse_checkpoints(specs)) if skip is None or not skip(i)]
    for _, ckpt in todo:
        check_checkpoint(ckpt, trust, check)
    for i, ckpt in todo:
        item = Loaded(ckpt, load_tokenizer(ckpt, trust), index=i)
        if before_load is not None:
            before_load(ckpt, item.tokenizer)
        item.model = load_model(ckpt, **load_kw)
        try:
            yield item
        finally:
            item.model = None  # the caller holds `item`, not the model: the weights are freed here
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def max_positions(model) -> int | None:
    """The longest input the model's position embeddings allow (None when unbounded)."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def model_inputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """Forward kwargs; models with token types (BERT) get all-zero ones."""
    kw = {"input_ids": input_ids, "attention_mask": attention_mask}
    if getattr(model.config, "type_vocab_size", 0):
        kw["token_type_ids"] = torch.zeros_like(input_ids)
    return kw
