"""Loading models and tokenizers: local directories or hub ids with `@revision` series, and GGUF files.

`MODEL@rev1,rev2` is a checkpoint series (one load per revision); a local directory is one
checkpoint. Weights load through `from_pretrained` (safetensors, or `weights_only` pickles);
`trust_remote_code` stays off unless the caller asks for it.

A MODEL ending in `.gguf` is a GGUF file: `DIR/FILE.gguf` on disk, or `OWNER/REPO/FILE.gguf[@rev]` on the
hub. transformers reads its config and tokenizer from the file's metadata and dequantizes every tensor to
`dtype` (`from_pretrained(DIR, gguf_file=FILE)`), so what is measured or edited is the dequantized model.
Reading one needs the `gguf` package (`pip install 'kentropy[gguf]'`); `gguf_header` describes the file.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from kentropy.errors import ArgumentError, KentropyError, reason
from kentropy.io import read_json
from kentropy.models.compat import check_pad, check_vocab, load_config, read_config

GGUF = ".gguf"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ModelRef:
    """A reference to one model to load (not a training checkpoint): a local directory, a hub id with an optional
    revision, or a GGUF file."""

    name: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.name if self.revision is None else f"{self.name}@{self.revision}"

    @property
    def gguf_file(self) -> str | None:
        """The GGUF file's name when the checkpoint is one (`name` ends in `.gguf`), else None."""
        return Path(self.name).name if self.name.lower().endswith(GGUF) else None

    @property
    def source(self) -> str:
        """What `from_pretrained` reads: the directory or hub repo holding the GGUF file, else `name`."""
        return str(Path(self.name).parent) if self.gguf_file else self.name

    @property
    def pretrained_kw(self) -> dict:
        """`from_pretrained(ckpt.source, **ckpt.pretrained_kw)`: the revision, and the GGUF file where there is one."""
        return {"revision": self.revision} | ({"gguf_file": self.gguf_file} if self.gguf_file else {})


def parse_checkpoints(specs: list[str]) -> list[ModelRef]:
    """`["a@r1,r2", "dir"]` -> [a@r1, a@r2, dir], in order. An existing path is never split."""
    out: list[ModelRef] = []
    for spec in specs:
        if Path(spec).exists() or "@" not in spec:
            out.append(ModelRef(spec))
            continue
        name, _, revs = spec.rpartition("@")
        revisions = [r.strip() for r in revs.split(",") if r.strip()]
        if not name or not revisions:
            raise KentropyError(f"MODEL {spec!r}: expected NAME@rev1,rev2,...")
        out.extend(ModelRef(name, r) for r in revisions)
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


def _check_local(ckpt: ModelRef, trust_remote_code: bool = False) -> None:
    if ckpt.gguf_file:
        _check_gguf(ckpt, trust_remote_code)
        return
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


def _gguf_module(ckpt: ModelRef):
    try:
        import gguf
    except ImportError:
        raise KentropyError(f"MODEL {ckpt}: reading a GGUF file needs the gguf package (pip install 'kentropy[gguf]')") from None
    return gguf


def _is_local_gguf(ckpt: ModelRef) -> bool:
    """A GGUF on disk (the file, or its directory, exists here), not a hub `OWNER/REPO/FILE.gguf`."""
    path = Path(ckpt.name)
    return path.exists() or path.parent.is_dir()


def gguf_header(ckpt: ModelRef) -> dict:
    """What a local GGUF file holds, from its header (gguf's `GGUFReader`; no tensor is dequantized):
    {file, architecture, file_type (llama.cpp's name, e.g. Q4_K_M; null when the file does not say),
    tensor_types: {ggml type: tensor count}}. A truncated or corrupt file is an error naming it."""
    _gguf_module(ckpt)
    path = Path(ckpt.name)
    if not path.is_file():
        raise KentropyError(f"MODEL {ckpt}: GGUF file not found")
    stat = path.stat()
    header = _read_gguf_header(str(ckpt), str(path), stat.st_size, stat.st_mtime_ns)
    return header | {"tensor_types": dict(header["tensor_types"])}  # a copy: the cached one stays as read


@functools.lru_cache(maxsize=4)
def _read_gguf_header(what: str, path: str, size: int, mtime_ns: int) -> dict:
    """`gguf_header` of one file, parsed once per process (GGUFReader reads every metadata value, the whole
    vocabulary included); keyed by size and time of change as well."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        arch = reader.fields["general.architecture"].contents()
        file_type = reader.fields["general.file_type"].contents() if "general.file_type" in reader.fields else None
        ends = [int(t.data_offset) + int(t.n_bytes) for t in reader.tensors]
        types = [t.tensor_type.name for t in reader.tensors]
    except Exception as e:  # noqa: BLE001 - the reader raises ValueError, KeyError, struct and numpy errors alike
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise KentropyError(f"MODEL {what}: not a readable GGUF file, truncated or corrupt ({first})") from None
    if not ends or max(ends) > size:
        raise KentropyError(f"MODEL {what}: truncated GGUF file ({size} bytes of {max(ends, default=0)})")
    if file_type is not None:
        try:
            file_type = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            file_type = str(file_type)
    return {"file": path, "architecture": arch, "file_type": file_type,
            "tensor_types": {t: types.count(t) for t in sorted(set(types))}}


def gguf_fields(ckpt: ModelRef) -> dict:
    """`{"gguf": gguf_header(ckpt)}` for a local GGUF file, else `{}`: what a command's result records of it."""
    return {"gguf": gguf_header(ckpt)} if ckpt.gguf_file and Path(ckpt.name).is_file() else {}


def _check_gguf(ckpt: ModelRef, trust_remote_code: bool) -> None:
    """The gguf package is there; a local file is complete and of an architecture transformers loads from GGUF."""

    _gguf_module(ckpt)
    if not _is_local_gguf(ckpt):
        return  # on the hub: from_pretrained fetches it (an offline miss is reported by the load)
    if ckpt.revision is not None:
        raise KentropyError(f"MODEL {ckpt}: a local GGUF file has no revisions")
    header = gguf_header(ckpt)
    try:
        with _load_report_handled():
            load_config(ckpt, trust_remote_code)
    except Exception as e:  # noqa: BLE001 - transformers raises ValueError, KeyError or NotImplementedError here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise KentropyError(f"MODEL {ckpt}: transformers cannot load GGUF architecture {header['architecture']!r} ({first})") from None


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


def check_load_report(ckpt: ModelRef, info: dict, *, allow_unexpected: bool = False) -> None:
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


def check_checkpoint(ckpt: ModelRef, trust_remote_code: bool = False, check=None):
    """What a checkpoint's files show before any weights load, in one-line errors naming the file: a local
    directory with config.json and weights, a config transformers accepts (its whole reason when not), at
    least one layer, sharded weights whose index names only shards that are there, safetensors files whole.
    `check(ckpt, config)` adds a command's own demands (a causal LM for probing). Returns the config."""
    from transformers import AutoConfig

    _check_local(ckpt, trust_remote_code)
    path = Path(ckpt.name)
    where = f"MODEL {ckpt}: {path / 'config.json'}" if path.is_dir() else f"MODEL {ckpt}"
    try:
        config = (load_config(ckpt, trust_remote_code) if ckpt.gguf_file
                  else AutoConfig.from_pretrained(ckpt.name, revision=ckpt.revision, trust_remote_code=trust_remote_code))
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


def _load_error(ckpt: ModelRef, e: Exception) -> KentropyError:
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


def load_tokenizer(ckpt: ModelRef, trust_remote_code: bool = False):
    """The checkpoint's tokenizer, checked against the model's config (`kentropy.models.compat`: ids within
    vocab_size, a pad or eos token) before any weights load; a missing pad token becomes eos (said on stderr)."""
    from transformers import AutoTokenizer


    _check_local(ckpt, trust_remote_code)
    try:
        tok = AutoTokenizer.from_pretrained(ckpt.source, trust_remote_code=trust_remote_code, **ckpt.pretrained_kw)
    except Exception as e:
        raise _load_error(ckpt, e) from None
    check_vocab(ckpt, tok, read_config(ckpt, trust_remote_code))
    check_pad(ckpt, tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
        print(f"note: {ckpt}: tokenizer has no pad token; using eos {tok.eos_token!r} (masked out)", file=sys.stderr)
    return tok


def load_model(
    ckpt: ModelRef,
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
    A GGUF file is dequantized to `dtype` (the result is a plain model: it saves as safetensors).
    """
    import pickle

    from safetensors import SafetensorError
    from transformers import AutoModel, AutoModelForCausalLM


    _check_local(ckpt, trust_remote_code)
    if Path(ckpt.name).is_dir():
        for f in sorted(Path(ckpt.name).glob("*.safetensors")):
            check_safetensors(f, f"MODEL {ckpt}:")
    kw = dict(trust_remote_code=trust_remote_code, **ckpt.pretrained_kw)
    try:
        with _load_report_handled():
            config = load_config(ckpt, trust_remote_code)
        cls = AutoModelForCausalLM if is_causal_lm(config) else AutoModel
        extra = {"attn_implementation": "eager"} if eager_attention else {}
        if device_map is not None:
            extra["device_map"] = device_map
        if ckpt.gguf_file:
            from transformers import GgufConfig

            extra["quantization_config"] = GgufConfig(dequantize=True)  # plain weights: hooks, edits and saving work
        with _load_report_handled():
            model, info = cls.from_pretrained(ckpt.source, config=config, dtype=dtype, output_loading_info=True, **kw, **extra)
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

    checkpoint: ModelRef
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
