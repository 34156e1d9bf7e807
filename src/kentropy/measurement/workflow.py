"""Model x documents -> knowledge, attention and next-token entropy (a `Measurement`).

Documents are tokenized with the tokenizer's defaults and truncated (not split) to
`seq_len`; batches are grouped by length to cut padding, right-padded, and masked so that
padding never counts. Under `torchrun` each rank measures a shard and the float64 sums are
all-reduced, so the result equals the single-process one.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kentropy.errors import ArgumentError, KentropyError, reason
from kentropy.io import check_out_dir, check_out_file, json_text, temp_target, write_atomic
from kentropy.measurement import entropy as E
from kentropy.measurement.capture import AttentionEntropySums, CoefficientSums, NextTokenEntropySums, check_activation
from kentropy.measurement.documents import load_texts
from kentropy.models.compat import check_positions, check_specials_truncate, read_config
from kentropy.models.loading import (check_layers, check_safetensors, gguf_fields, load_series, max_positions, model_inputs,
                                     parse_checkpoints, pick_device, pick_dtype)
from kentropy.models.registry import find_layout
from kentropy.runtime.arguments import integer, strings, transformers_model, transformers_tokenizer
from kentropy.runtime.distributed import rank_world
from kentropy.runtime.options import device_option, dtype_option, models_option, option, require, series_resume_option, trust_remote_code_option
from kentropy.runtime.series import progress_line, run_series

METRICS = ("knowledge", "attention", "next-token")


@dataclass
class Measurement:
    """One checkpoint's entropies. `coefficients` (Cbar) is kept out of the JSON: a [L, m] tensor, or a
    list of [m_l] tensors when layers differ in size (dense and mixture-of-experts layers mixed).

    Fields after `coefficients` appear in the JSON only where they apply (None otherwise):
    - mixture-of-experts: `experts` {num_experts, expert_dim, shared_expert_dim, moe_layers};
      per layer (null for dense layers) `expert_entropy_per_layer` (entropy of the expert masses),
      `within_expert_entropy_per_layer` (mass-weighted within-expert entropy; the two add up to
      H_l), `expert_mass_per_layer` and `per_expert_entropy_per_layer` ([E (+1 shared)] each);
    - layers of different sizes: `ffn_dim_per_layer` (`ffn_dim` is then the largest);
    - encoder-decoders: `stacks` {encoder: {...}, decoder: {...}}, each with its own `layers`,
      `knowledge_entropy`, `knowledge_entropy_per_layer` (and attention entropy); the top-level
      per-layer lists are the encoder's layers then the decoder's, `knowledge_entropy` their sum;
    - hybrids: `blocks` (the measured blocks' names) and `skipped_blocks` (blocks without an FFN);
    - GGUF checkpoints: `gguf` {file, architecture, file_type, tensor_types} (`kentropy.models.loading.gguf_header`):
      the numbers are those of the weights dequantized from that file.
    """

    model: str
    revision: str | None
    knowledge_entropy: float
    knowledge_entropy_per_layer: list[float]
    attention_entropy: float | None
    attention_entropy_per_layer: list[float] | None
    next_token_entropy: float | None
    layers: int
    ffn_dim: int
    instances: int
    tokens: int
    coefficients: torch.Tensor | list[torch.Tensor] = field(repr=False)
    instance_coefficients: torch.Tensor | None = field(default=None, repr=False)  # [N, L, m], `instances=True`
    capture_points: list[str] | None = field(default=None, repr=False)  # layer l's canonical name (`blocks.{l}.mlp.coef`)
    position_stats: dict | None = field(default=None, repr=False)  # `positions=True`: per layer max/median of |c|, first-position share
    ffn_dim_per_layer: list[int] | None = None
    experts: dict | None = None
    expert_entropy_per_layer: list[float | None] | None = None
    within_expert_entropy_per_layer: list[float | None] | None = None
    expert_mass_per_layer: list[list[float] | None] | None = None
    per_expert_entropy_per_layer: list[list[float] | None] | None = None
    stacks: dict | None = None
    blocks: list[str] | None = None
    skipped_blocks: list[str] | None = None
    gguf: dict | None = None

    @property
    def max_knowledge_entropy(self) -> float:
        """sum_l ln m_l: the entropy of uniform usage of every memory vector."""
        import math

        return sum(math.log(m) for m in (self.ffn_dim_per_layer or [self.ffn_dim] * self.layers))

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("coefficients")
        d.pop("instance_coefficients")
        d.pop("capture_points")
        d.pop("position_stats")
        for k in OPTIONAL_FIELDS:
            if d[k] is None:
                d.pop(k)
        return d


OPTIONAL_FIELDS = ("ffn_dim_per_layer", "experts", "expert_entropy_per_layer", "within_expert_entropy_per_layer",
                   "expert_mass_per_layer", "per_expert_entropy_per_layer", "stacks", "blocks", "skipped_blocks", "gguf")


def check_metrics(metrics) -> tuple[str, ...]:
    """`metrics` (names of METRICS), knowledge first added where it is missing."""
    metrics = tuple(strings("metrics", metrics, empty=True))
    if not metrics or any(m not in METRICS for m in metrics):
        raise ArgumentError("metrics", f"choose from {', '.join(METRICS)}", metrics)
    if "knowledge" not in metrics:
        metrics = ("knowledge",) + metrics  # Cbar is always measured: it is the point
    return metrics


def tokenize(tokenizer, texts: list[str], seq_len: int, source: str = "texts") -> list[list[int]]:
    """Token ids per document: tokenizer defaults (special tokens included), truncated to seq_len.

    `source` names the argument the documents came by, in the error for a document without tokens."""
    integer("seq_len", seq_len, low=1)
    check_specials_truncate(tokenizer, seq_len)
    ids = tokenizer(list(texts), truncation=True, max_length=seq_len)["input_ids"]
    n_special = tokenizer.num_special_tokens_to_add()
    for i, (t, x) in enumerate(zip(texts, ids)):
        # only documents no longer than their special tokens can be empty of content
        if len(x) <= n_special and not tokenizer(t, add_special_tokens=False)["input_ids"]:
            raise ArgumentError(source, f"document {i}: no tokens (empty text {t[:40]!r})")
    return ids


def length_batches(ids: list[list[int]], batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Indices of documents sorted by length and cut into batches; this rank's share of the batches.

    Ranks take whole batches of the single-process order, so every forward is the same as in one
    process and only the float64 summation order differs.
    """
    integer("batch_size", batch_size, low=1)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)][rank::world]


def pad(ids: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest: input_ids [B, T] and attention_mask [B, T]."""
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for b, x in enumerate(ids):
        input_ids[b, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[b, : len(x)] = 1
    return input_ids.to(device), mask.to(device)


def measure_ids(
    model,
    ids: list[list[int]],
    pad_id: int,
    *,
    metrics=("knowledge",),
    activation: str = "abs",
    batch_size: int = 8,
    name: str = "",
    revision: str | None = None,
    progress: bool = True,
    instances: bool = False,
    positions: bool = False,
) -> Measurement:
    """Measure pre-tokenized documents (the core of `measure` and of `EntropyMonitor`).

    positions=True also returns, per layer, the max/median of |c| and the share of sum |c| at the first
    position (`position_stats`; dense layers, one process; `CoefficientSums(positions=True)`).

    instances=True also returns each document's own mean |c_l| (`instance_coefficients`, [N, L, m]
    float64, in the order of `ids`; dense layers of one size, one process): what a bootstrap over
    documents resamples, from the same forward that gives Cbar.
    """
    metrics = check_metrics(metrics)
    if not ids:
        raise KentropyError("no documents to measure")
    check_layers(transformers_model("model", model).config, "model")
    layout = find_layout(model)
    L, sizes = len(layout.layers), layout.sizes
    longest, limit = max(len(x) for x in ids), max_positions(model)
    if limit is not None and longest > limit:
        raise ArgumentError("seq_len", f"documents of {longest} tokens exceed the model's {limit} positions (use at most {limit})")
    causal = hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None
    if "next-token" in metrics and not causal:
        metrics = tuple(x for x in metrics if x != "next-token")  # encoders: reported as null
    want_logits = "next-token" in metrics
    # without next-token entropy the LM head is never needed: run the base model only
    forward = model if want_logits else model.base_model
    device = next(model.parameters()).device  # with a device map: the embeddings' device, where inputs go
    rank, world = rank_world()
    if instances and world > 1:
        raise KentropyError("per-document coefficients are measured in one process (not under torchrun)")
    if positions and world > 1:
        raise KentropyError("position statistics are measured in one process (not under torchrun)")
    batches = length_batches(ids, batch_size, rank, world)

    tokens = 0
    was_training = model.training
    model.eval()  # dropout off: a measurement is deterministic; the caller's mode comes back below
    with contextlib.ExitStack() as hooks, torch.inference_mode():
        if "attention" in metrics:
            hooks.enter_context(eager_attention(model))
        hooks.callback(model.train, was_training)
        # next-token entropy is reduced inside the LM head, a chunk of positions at a time; checked first
        # against the model's own logits on a few tokens of the first document
        nxt = hooks.enter_context(NextTokenEntropySums(model)) if want_logits else None
        if nxt is not None:
            probe_ids, probe_mask = pad([ids[batches[0][0]][:8]] if batches else [ids[0][:8]], pad_id, device)
            nxt.check(model, _inputs(model, probe_ids, probe_mask), E.instance_weights(probe_mask))
        coef = hooks.enter_context(CoefficientSums(layout, activation, instances=instances, positions=positions))
        attn = hooks.enter_context(AttentionEntropySums(layout)) if "attention" in metrics else None
        for batch in tqdm(batches, desc=f"measure {name}".strip(), disable=not progress or rank != 0, leave=False):
            input_ids, mask = pad([ids[i] for i in batch], pad_id, device)
            w = E.instance_weights(mask)  # [B, T]: padding weight 0, per-instance mean
            with contextlib.ExitStack() as scope:
                for cap in (coef, attn, nxt):
                    if cap is not None:
                        scope.enter_context(cap.batch(w))
                forward(**_inputs(model, input_ids, mask))
            tokens += int(mask.sum())
    next_tok = nxt.sum.to(device) if nxt is not None and nxt.sum is not None else torch.zeros((), dtype=torch.float64, device=device)

    # reduce: float64 sums and counts, across ranks when distributed
    flat = torch.cat(coef.sums).to(device) if coef.sums is not None else torch.zeros(sum(sizes), dtype=torch.float64, device=device)
    att = None
    if attn is not None:
        att = attn.sums.to(device) if attn.sums is not None else torch.zeros(L, dtype=torch.float64, device=device)
    counts = torch.tensor([sum(len(b) for b in batches), tokens], dtype=torch.float64, device=device)
    if world > 1:
        for t in [flat, counts, next_tok] + ([att] if att is not None else []):
            torch.distributed.all_reduce(t)
    n = int(counts[0])

    cbar = list(torch.split((flat / n).cpu(), sizes))  # [m_l] each, Eq. 2: mean over instances of per-instance mean |c|
    per_layer = torch.stack([E.knowledge_entropy_per_layer(c) for c in cbar])
    att_layers = (att / n).cpu().tolist() if att is not None else None
    per_doc = None
    if instances:
        per_doc = torch.empty_like(kept := coef.instances())
        per_doc[torch.tensor([i for b in batches for i in b])] = kept  # back to the order of `ids`
    return Measurement(
        model=name,
        revision=revision,
        knowledge_entropy=float(per_layer.sum()),
        knowledge_entropy_per_layer=per_layer.tolist(),
        attention_entropy=float(sum(att_layers)) if att_layers is not None else None,
        attention_entropy_per_layer=att_layers,
        next_token_entropy=float(next_tok / n) if want_logits else None,
        layers=L,
        ffn_dim=layout.ffn_dim,
        instances=n,
        tokens=int(counts[1]),
        coefficients=torch.stack(cbar) if layout.uniform else cbar,
        instance_coefficients=per_doc,
        position_stats=coef.position_stats(n) if positions else None,
        capture_points=coef.points,
        ffn_dim_per_layer=None if layout.uniform else sizes,
        **_moe_fields(layout, cbar),
        **_structure_fields(layout, per_layer.tolist(), att_layers),
    )


@contextlib.contextmanager
def eager_attention(model):
    """Attention entropy reads the attention probabilities, which only eager attention materializes: a model
    loaded with another implementation (sdpa, transformers' default) runs eager inside, its own after."""
    before = model.config._attn_implementation
    if before == "eager":
        yield
        return
    try:
        model.set_attn_implementation("eager")
    except Exception as e:  # noqa: BLE001 - a model that cannot switch raises or warns, by its kind
        raise ArgumentError("metrics", f"attention entropy needs eager attention; {type(model).__name__} cannot switch "
                                       f"from {before} ({reason(e)}): load it with attn_implementation='eager'") from None
    if model.config._attn_implementation != "eager":
        raise ArgumentError("metrics", f"attention entropy needs eager attention; {type(model).__name__} cannot switch "
                                       f"from {before}: load it with attn_implementation='eager'")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _inputs(model, input_ids: torch.Tensor, mask: torch.Tensor) -> dict:
    """Forward kwargs. An encoder-decoder reads the document in its encoder and, teacher-forced, in its
    decoder (the document shifted right by the decoder start token), so both stacks see the same tokens."""
    kw = model_inputs(model, input_ids, mask)
    if getattr(model.config, "is_encoder_decoder", False):
        if not hasattr(model, "_shift_right"):
            raise KentropyError(f"{type(model).__name__}: encoder-decoder without _shift_right; cannot build decoder inputs")
        kw["decoder_input_ids"] = model._shift_right(input_ids)
        kw["decoder_attention_mask"] = mask
    return kw


def _moe_fields(layout, cbar: list[torch.Tensor]) -> dict:
    """The expert split of H_l for every mixture-of-experts layer (None for dense layers)."""
    if not layout.moe:
        return {}
    moe = [layer for layer in layout.layers if layer.moe]
    first = moe[0]
    fields = {"experts": {"num_experts": first.n_experts, "expert_dim": first.expert_dim,
                          "shared_expert_dim": first.shared.size if first.shared is not None else 0,
                          "moe_layers": [l for l, layer in enumerate(layout.layers) if layer.moe]},
              "expert_entropy_per_layer": [], "within_expert_entropy_per_layer": [],
              "expert_mass_per_layer": [], "per_expert_entropy_per_layer": []}
    for layer, c in zip(layout.layers, cbar):
        if not layer.moe:
            for k in ("expert_entropy_per_layer", "within_expert_entropy_per_layer", "expert_mass_per_layer",
                      "per_expert_entropy_per_layer"):
                fields[k].append(None)
            continue
        groups = [layer.expert_dim] * layer.n_experts + ([layer.shared.size] if layer.shared is not None else [])
        mass, per_expert, h_mass, h_within = E.expert_split(c, groups)
        fields["expert_entropy_per_layer"].append(float(h_mass))
        fields["within_expert_entropy_per_layer"].append(float(h_within))
        fields["expert_mass_per_layer"].append(mass.tolist())
        fields["per_expert_entropy_per_layer"].append(per_expert.tolist())
    return fields


def _structure_fields(layout, per_layer: list[float], att_layers: list[float] | None) -> dict:
    """Per-stack results (encoder-decoders) and block names (where blocks were skipped)."""
    fields = {}
    if layout.skipped or len(layout.stacks) > 1:
        fields["blocks"] = [layer.name for layer in layout.layers]
    if layout.skipped:
        fields["skipped_blocks"] = list(layout.skipped)
    if len(layout.stacks) > 1:
        stacks, start = {}, 0
        for name, n in layout.stacks:
            h = per_layer[start : start + n]
            stacks[name] = {"layers": n, "knowledge_entropy": float(sum(h)), "knowledge_entropy_per_layer": h}
            if att_layers is not None:
                a = att_layers[start : start + n]
                stacks[name] |= {"attention_entropy": float(sum(a)), "attention_entropy_per_layer": a}
            start += n
        fields["stacks"] = stacks
    return fields


def measure(
    model,
    tokenizer,
    texts: list[str],
    *,
    metrics=("knowledge",),
    activation: str = "abs",
    seq_len: int = 1024,
    batch_size: int = 8,
    max_instances: int | None = None,
    name: str = "",
    revision: str | None = None,
    progress: bool = True,
) -> Measurement:
    """Knowledge (and optionally attention / next-token) entropy of `model` on `texts` (a list of str).

    Runs in eval mode (the model's mode is restored after); attention entropy runs the model with eager
    attention (switched for the measurement and back). Every argument is checked before any work.
    """
    transformers_model("model", model)
    transformers_tokenizer("tokenizer", tokenizer)
    texts = strings("texts", texts, empty=True)
    if max_instances is not None:
        texts = texts[: integer("max_instances", max_instances, low=1)]
    if not texts:
        raise ArgumentError("texts", "no documents to measure")
    metrics, activation = check_metrics(metrics), check_activation(activation)
    integer("batch_size", batch_size, low=1)
    ids = tokenize(tokenizer, texts, seq_len)
    return measure_ids(
        model,
        ids,
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        metrics=metrics,
        activation=activation,
        batch_size=batch_size,
        name=name or getattr(model.config, "_name_or_path", ""),
        revision=revision,
        progress=progress,
    )


@dataclass
class MeasureConfig:
    """Measure knowledge entropy (and optionally attention / next-token entropy) of one or more checkpoints."""

    models: list[str] = models_option()
    data: str = option(help="Documents: a .jsonl (field 'text'), a .txt (one per line), or a dataset name/dir.")
    out: str = option(help="Where to write the JSON results (atomically).")
    max_instances: int | None = option(None, "Use at most this many documents (the first ones).")
    seq_len: int = option(1024, "Truncate each document to this many tokens (documents are not split).")
    batch_size: int = option(8, "Documents per forward pass (batches are grouped by length).")
    metrics: str = option("knowledge", "Comma-separated: knowledge, attention, next-token.")
    activation: str = option("abs", "Coefficient magnitude: abs (|c|, default) or relu (max(c, 0), the paper's alternative).")
    coefficients_out: str | None = option(None, "Directory to save each checkpoint's per-layer Cbar (safetensors).")
    device: str = device_option()
    device_map: str | None = option(None, "auto: spread a model too big for one GPU over all visible GPUs (accelerate), layer by layer; one process.")
    dtype: str = dtype_option()
    trust_remote_code: bool = trust_remote_code_option()
    resume: bool = series_resume_option()

    def __post_init__(self) -> None:
        check_activation(self.activation)
        require(self, "seq_len", "batch_size", "max_instances", low=0, low_open=True)
        check_metrics(self.metric_list)
        check_out_file(self.out)
        check_out_dir(self.coefficients_out, "--coefficients-out")
        if self.device_map is not None:
            if self.device_map != "auto":
                raise KentropyError(f"--device-map {self.device_map}: only auto is supported")
            if self.device != "auto":
                raise KentropyError(f"--device-map auto places the model itself: leave out --device {self.device}")
            if rank_world()[1] > 1:
                raise KentropyError("--device-map auto runs in one process (it uses every visible GPU): run without torchrun")

    @property
    def metric_list(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.metrics.split(",") if m.strip())


def _measure_each(cfg: MeasureConfig, progress: bool = True, skip=None):
    """(index, checkpoint, Measurement) for every checkpoint of `cfg.models` not skipped, in order."""
    n = len(parse_checkpoints(cfg.models))
    texts = load_texts(cfg.data, cfg.max_instances)
    device = pick_device(cfg.device)
    metrics = check_metrics(cfg.metric_list)
    ids = {}

    def tokenize_first(ckpt, tok) -> None:  # bad documents, or documents too long for the model, fail before any weights load

        ids[ckpt] = tokenize(tok, texts, cfg.seq_len, source="data")
        check_positions(ckpt, tok, max(len(x) for x in ids[ckpt]), read_config(ckpt, cfg.trust_remote_code), cfg.seq_len)

    for item in load_series(cfg.models, before_load=tokenize_first, skip=skip, device=device, dtype=pick_dtype(cfg.dtype, device),
                            eager_attention="attention" in metrics, trust_remote_code=cfg.trust_remote_code,
                            device_map=cfg.device_map):
        ckpt = item.checkpoint
        if progress:
            progress_line("measure", item.index, n, str(ckpt))
        m = measure_ids(item.model, ids.pop(ckpt), item.tokenizer.pad_token_id, metrics=metrics, activation=cfg.activation,
                        batch_size=cfg.batch_size, name=ckpt.name, revision=ckpt.revision, progress=progress)
        m.gguf = gguf_fields(ckpt).get("gguf")
        yield item.index, ckpt, m




def measure_file(cfg: MeasureConfig, progress: bool = True) -> dict:
    """`kentropy measure`: the series with each checkpoint's result saved as it finishes (`kentropy.runtime.series`:
    `--resume` continues it), Cbar files written as they come; the payload written to `--out` at the end."""
    ckpts = parse_checkpoints(cfg.models)
    coefficients = [coefficients_path(cfg.coefficients_out, i, c.name, c.revision) for i, c in enumerate(ckpts)] if cfg.coefficients_out else None
    if coefficients:
        check_coefficients_out(cfg.coefficients_out, coefficients)

    def compute(series) -> list:
        for i, ckpt, m in _measure_each(cfg, progress, skip=series.done):
            record = m.to_json()
            json_text(record, cfg.out)  # a non-finite result is refused before anything is written
            if coefficients and rank_world()[0] == 0:
                save_coefficient(m, coefficients[i], cfg.activation)
            series.add(i, record)
        return series.ordered()

    return run_series(cfg, ckpts, compute, **({"coefficients": coefficients} if coefficients else {}))


def check_coefficients_out(directory: str, files: list[str]) -> None:
    """`--coefficients-out` holds nothing but this series' Cbar files (`files`, each replaced as its checkpoint
    finishes, or kept from before the interruption that --resume continues): files of another series or
    other data are refused, never mixed in."""
    d = Path(directory)
    if not d.is_dir():
        return
    mine = {Path(f).name for f in files}
    other = sorted(p.name for p in d.iterdir() if p.name not in mine and temp_target(p.name) not in mine)
    if other:
        raise KentropyError(f"--coefficients-out {directory}: holds {len(other)} file(s) that are not this series' Cbar "
                            f"files ({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); choose an empty or new directory")


def coefficients_path(directory: str, index: int, model: str, revision: str | None) -> str:
    """`DIR/NNN_<name>.safetensors`: the file of the series' checkpoint `index`."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}@{revision}" if revision else model).strip("_")[-80:]
    return str(Path(directory) / f"{index:03d}_{slug}.safetensors")


def save_coefficient(r: Measurement, path: str, activation: str) -> str:
    """One checkpoint's Cbar as safetensors (tensors `layers.{l}`, [m_l]), atomically."""
    from safetensors.torch import save_file


    tensors = {f"layers.{l}": r.coefficients[l].contiguous() for l in range(r.layers)}  # [m_l]: E*m (+shared) for MoE
    meta = {"model": r.model, "revision": r.revision or "", "activation": activation,
            "instances": str(r.instances), "tokens": str(r.tokens), "capture_points": ",".join(r.capture_points or [])}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def save_coefficients(results: list[Measurement], directory: str, activation: str) -> list[str]:
    """Write each checkpoint's Cbar as `DIR/NNN_<name>.safetensors` (tensors `layers.{l}`, [m])."""
    return [save_coefficient(r, coefficients_path(directory, i, r.model, r.revision), activation) for i, r in enumerate(results)]


def load_coefficients(path: str) -> torch.Tensor | list[torch.Tensor]:
    """Cbar [L, m] from a `.safetensors` file written by `--coefficients-out`, or a dir holding one
    (a list of [m_l] tensors where layers differ in size, e.g. MoE next to dense layers).

    Tensors `layers.0` .. `layers.{L-1}` (in layer order, not name order), each [m], finite,
    non-negative and not all zero (a mean magnitude); anything else is an error naming the layer.
    """
    from safetensors import safe_open


    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if len(files) != 1:
            raise KentropyError(f"--coefficients {path}: expected one .safetensors file in the directory, found {len(files)}")
        p = files[0]
    if not p.is_file():
        raise KentropyError(f"--coefficients {path}: not found")
    check_safetensors(p, "--coefficients")
    try:
        with safe_open(str(p), framework="pt") as f:
            names = [k for k in f.keys() if k.startswith("layers.")]
            layers = {}
            for k in names:
                suffix = k.split(".", 1)[1]
                if not suffix.isdigit():
                    raise KentropyError(f"--coefficients {p}: tensor {k!r} is not named layers.N")
                layers[int(suffix)] = f.get_tensor(k)
    except KentropyError:
        raise
    except Exception as e:
        raise KentropyError(f"--coefficients {p}: not a readable safetensors file ({e})") from None
    if not layers:
        raise KentropyError(f"--coefficients {p}: no 'layers.N' tensors")
    if sorted(layers) != list(range(len(layers))):
        missing = sorted(set(range(max(layers) + 1)) - set(layers))
        raise KentropyError(f"--coefficients {p}: layers.{missing[0]} is missing")
    for l, t in sorted(layers.items()):
        where = f"--coefficients {p}: layers.{l}"
        if t.dim() != 1 or t.numel() == 0 or not t.is_floating_point():
            raise KentropyError(f"{where}: expected a non-empty float vector, got {t.dtype} of shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise KentropyError(f"{where}: holds NaN or infinite values")
        if (t < 0).any():
            raise KentropyError(f"{where}: holds negative values (Cbar is a mean magnitude)")
        if not (t > 0).any():
            raise KentropyError(f"{where}: is all zero")
    rows = [layers[l] for l in range(len(layers))]
    return torch.stack(rows) if len({r.numel() for r in rows}) == 1 else rows
