"""The one registry of model families: where each keeps its FFN (dense or mixture-of-experts),
its attention, and what circuit tracing needs. Matched by module structure, not by name.

An FFN computes `FFN(x) = f(x K^T) V`. For every block we need
- the down projection `V` (its *input* is the memory coefficient vector c, size m),
- the input projections that produce c: gate and up of a gated FFN, a fused `gate_up`
  projection, or the single input projection of a plain FFN (where neuron i's rows, bias
  entries and output column sit in each of them is the neuron map's, `neurons.py`),
- for mixture-of-experts blocks: the experts (3-D weights `gate_up_proj [E, 2m, h]` or
  `up_proj [E, m, h]`, `down_proj [E, h, m]`), the router, and a shared expert (with its
  sigmoid gate) where the model has one,
- the self-attention module, whose eager forward returns the probabilities [B, H, T, T].

Capture points have one canonical name each: `blocks.{l}.mlp.coef` (the down projection's
input, or every expert's effective coefficients) and `blocks.{l}.attn.probs`; an
encoder-decoder prefixes its stack (`encoder.blocks.{l}.mlp.coef`).

The layer stack is the first `nn.ModuleList` whose every block matches one of a family's
FFN layouts (an encoder-decoder has two such stacks, both taken). Hybrid families name a
marker for blocks that have no FFN (Mamba or attention-only blocks): those are skipped and
listed in `Layout.skipped`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kentropy.errors import KentropyError


@dataclass(frozen=True)
class Dense:
    """A dense FFN; paths are relative to the block."""

    down: str  # the down projection: its input is the coefficient vector c [.., m]
    up: str  # the projection whose output row i feeds coefficient i (fused: both halves)
    gate: str | None = None  # gated FFNs: c = act(gate(x)) * up(x)
    up_half: int | None = None  # fused [gate | up] in `up` (Phi-3, ModernBERT): the half multiplied linearly
    transposed: bool = False  # GPT-2's Conv1D stores weights as [in, out]


@dataclass(frozen=True)
class MoE:
    """A mixture-of-experts FFN (transformers 5 experts with 3-D weights); paths relative to the block."""

    experts: str  # gate_up_proj [E, 2m, h] ([gate | up]) or up_proj [E, m, h]; down_proj [E, h, m]
    router: str
    shared: Dense | None = None  # shared expert(s), applied to every token
    shared_gate: str | None = None  # Linear(h, 1): the shared expert's output is scaled by its sigmoid


@dataclass(frozen=True)
class Circuits:
    """Where a circuit graph reads and writes the residual stream; paths relative to the block.

    Pre-norm blocks normalize what a node reads (`attn_norm`, `mlp_norm`), post-norm blocks what
    it writes (`attn_post`, `mlp_post`: OLMo 2, no pre-norms), sandwich blocks both (Gemma 2/3).
    """

    attn_norm: str | None  # norm whose input is the residual stream read by the heads (None: they read it raw)
    mlp_norm: str | None  # norm whose input is the residual stream read by the MLP (Phi: the same norm; None: raw)
    projections: tuple[tuple[str, str], ...]  # (path, parts): parts "q", "k", "v" or fused "qkv"
    o_proj: str  # input: the heads' outputs concatenated, [B, T, H * dh]
    mlp_in: str  # module whose input is mlp_norm(residual); a mixture-of-experts block, router included, is one MLP
    mlp_out: str  # module whose output is the MLP's output (before `mlp_post`)
    final_norm: tuple[str, ...]  # candidate paths inside model.base_model
    parallel: bool | None = False  # MLP reads the block input (None: config.use_parallel_residual)
    transposed: bool = False  # GPT-2's Conv1D stores weights as [in, out]
    interleaved: bool = False  # fused qkv laid out per head [q_h k_h v_h] (NeoX), else [q | k | v]
    attn_post: str | None = None  # RMSNorm of the attention output before it joins the residual
    mlp_post: str | None = None  # RMSNorm of the MLP output before it joins the residual
    projection_norms: tuple[tuple[str, str], ...] = ()  # (projection, norm of its output), where the block has one


@dataclass(frozen=True)
class Family:
    name: str
    models: str  # the transformers model types known to use this layout (for the README and errors)
    ffn: tuple[Dense | MoE, ...]  # a block's FFN is the first of these that matches (MoE before dense)
    attention: str | None  # self-attention module (absent in some blocks of hybrids: then None)
    probs_at: int = 1  # index of the probabilities in the attention module's output tuple
    skip: tuple[str, tuple[str, ...]] | None = None  # hybrids: (path, class-name markers) of blocks without FFN
    circuits: tuple[Circuits, ...] = ()  # most specific first: a block takes the first whose paths exist; (): refused


def _gated(prefix: str) -> Dense:
    return Dense(f"{prefix}.down_proj", f"{prefix}.up_proj", f"{prefix}.gate_proj")


_QKV = (("self_attn.q_proj", "q"), ("self_attn.k_proj", "k"), ("self_attn.v_proj", "v"))
_QK_NORMS = (("self_attn.q_proj", "self_attn.q_norm"), ("self_attn.k_proj", "self_attn.k_norm"))  # OLMo 2, OLMoE, Gemma 3, Qwen 3
_POST = dict(attn_post="post_attention_layernorm", mlp_post="post_feedforward_layernorm", projection_norms=_QK_NORMS)
_GATED_CIRCUITS = (
    Circuits("input_layernorm", "pre_feedforward_layernorm", _QKV, "self_attn.o_proj", "mlp", "mlp", ("norm",), **_POST),  # Gemma 2/3
    Circuits(None, None, _QKV, "self_attn.o_proj", "mlp", "mlp", ("norm",), **_POST),  # OLMo 2
    Circuits("input_layernorm", "post_attention_layernorm", _QKV, "self_attn.o_proj", "mlp", "mlp", ("norm",),
             projection_norms=_QK_NORMS),  # pre-norm: Llama's post_attention_layernorm is the MLP's input norm
)
_T5 = "DenseReluDense"

# One table. Order matters only where one layout is a subset of another (gated before plain up/down).
FAMILIES: tuple[Family, ...] = (
    Family("gated (Llama-style; MoE with mlp.experts)",
           "llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, olmo, olmo2, granite; "
           "MoE: olmoe, mixtral, qwen2_moe, qwen3_moe, deepseek_v3",
           (MoE("mlp.experts", "mlp.gate", _gated("mlp.shared_expert"), "mlp.shared_expert_gate"),
            MoE("mlp.experts", "mlp.gate", _gated("mlp.shared_experts")),
            MoE("mlp.experts", "mlp.gate"),
            _gated("mlp")),
           "self_attn",
           circuits=_GATED_CIRCUITS),
    Family("gated feed_forward", "llama4_text (dense layers), jamba (dense and MoE)",
           (MoE("feed_forward.experts", "feed_forward.router"), _gated("feed_forward")), "self_attn"),
    Family("fused gate_up", "phi3 (Phi-3, Phi-4-mini)", (Dense("mlp.down_proj", "mlp.gate_up_proj", up_half=1),), "self_attn"),
    Family("GPT-2", "gpt2", (Dense("mlp.c_proj", "mlp.c_fc", transposed=True),), "attn",
           circuits=(Circuits("ln_1", "ln_2", (("attn.c_attn", "qkv"),), "attn.c_proj", "mlp", "mlp", ("ln_f",), transposed=True),)),
    Family("GPT-NeoX/Pythia", "gpt_neox", (Dense("mlp.dense_4h_to_h", "mlp.dense_h_to_4h"),), "attention",
           circuits=(Circuits("input_layernorm", "post_attention_layernorm", (("attention.query_key_value", "qkv"),),
                              "attention.dense", "mlp", "mlp", ("final_layer_norm",), parallel=None, interleaved=True),)),
    Family("BLOOM, Falcon", "bloom, falcon", (Dense("mlp.dense_4h_to_h", "mlp.dense_h_to_4h"),), "self_attention"),
    Family("GPT-J", "gptj", (Dense("mlp.fc_out", "mlp.fc_in"),), "attn"),
    Family("Phi", "phi", (Dense("mlp.fc2", "mlp.fc1"),), "self_attn",
           circuits=(Circuits("input_layernorm", "input_layernorm", _QKV, "self_attn.dense", "mlp", "mlp", ("final_layernorm",),
                              parallel=True),)),
    Family("OPT", "opt", (Dense("fc2", "fc1"),), "self_attn",
           circuits=(Circuits("self_attn_layer_norm", "final_layer_norm", _QKV, "self_attn.out_proj", "fc1", "fc2",
                              ("decoder.final_layer_norm",)),)),
    Family("plain up/down (no gate)", "nemotron (relu²), arcee", (Dense("mlp.down_proj", "mlp.up_proj"),), "self_attn"),
    Family("BERT-style encoders", "bert, roberta, electra", (Dense("output.dense", "intermediate.dense"),), "attention.self"),
    Family("ModernBERT", "modernbert (fused Wi)", (Dense("mlp.Wo", "mlp.Wi", up_half=1),), "attn"),
    Family("T5 encoder-decoder", "t5, mt5, umt5 (per stack: encoder, decoder)",
           tuple(Dense(f"layer.{i}.{_T5}.wo", f"layer.{i}.{_T5}.wi_1", f"layer.{i}.{_T5}.wi_0") for i in (1, 2))
           + tuple(Dense(f"layer.{i}.{_T5}.wo", f"layer.{i}.{_T5}.wi") for i in (1, 2)),
           "layer.0.SelfAttention", probs_at=2),
    Family("NemotronH hybrid", "nemotron_h (Mamba and attention blocks have no FFN: skipped)",
           (MoE("mixer.experts", "mixer.gate", Dense("mixer.shared_experts.down_proj", "mixer.shared_experts.up_proj")),
            Dense("mixer.down_proj", "mixer.up_proj")),
           None, skip=("mixer", ("Mamba", "Attention"))),
)


def submodule(block: nn.Module, path: str | None) -> nn.Module | None:
    """`block.get_submodule(path)`, or None where the path does not exist (or is None)."""
    if path is None:
        return None
    try:
        return block.get_submodule(path)
    except AttributeError:
        return None


def _has_matrix(module: nn.Module | None) -> bool:
    return module is not None and getattr(module, "weight", None) is not None and module.weight.dim() == 2


def _dense_matches(block: nn.Module, spec: Dense) -> bool:
    if spec.gate is not None and submodule(block, spec.gate) is None:
        return False
    return _has_matrix(submodule(block, spec.down)) and _has_matrix(submodule(block, spec.up))


def _experts_supported(experts: nn.Module | None) -> bool:
    """transformers 5 experts (`@use_experts_implementation`): 3-D weights, [gate | up] concatenated, not transposed."""
    if experts is None or not hasattr(experts, "has_gate"):
        return False
    up = getattr(experts, "gate_up_proj" if experts.has_gate else "up_proj", None)
    down = getattr(experts, "down_proj", None)
    return (isinstance(up, torch.Tensor) and up.dim() == 3 and isinstance(down, torch.Tensor) and down.dim() == 3
            and experts.is_concatenated and not experts.is_transposed and not experts.has_bias
            and not experts.has_post_expert_norm)


def _moe_matches(block: nn.Module, spec: MoE) -> bool:
    return (_experts_supported(submodule(block, spec.experts)) and submodule(block, spec.router) is not None
            and (spec.shared is None or _dense_matches(block, spec.shared))
            and (spec.shared_gate is None or _has_matrix(submodule(block, spec.shared_gate))))


def block_ffn(block: nn.Module, fam: Family) -> Dense | MoE | None:
    """The first of the family's FFN layouts that this block has, or None."""
    for spec in fam.ffn:
        if _dense_matches(block, spec) if isinstance(spec, Dense) else _moe_matches(block, spec):
            return spec
    return None


def _skippable(block: nn.Module, fam: Family) -> bool:
    if fam.skip is None:
        return False
    path, markers = fam.skip
    m = submodule(block, path)
    return m is not None and any(k in type(m).__name__ for k in markers)


def _stack_matches(stack: nn.Module, fam: Family) -> bool:
    if not isinstance(stack, nn.ModuleList) or len(stack) == 0:
        return False
    specs = [block_ffn(b, fam) for b in stack]
    return any(s is not None for s in specs) and all(s is not None or _skippable(b, fam) for b, s in zip(stack, specs))


@dataclass
class DenseFFN:
    """One dense FFN's modules (also a MoE layer's shared expert)."""

    spec: Dense
    down: nn.Module
    up: nn.Module
    gate: nn.Module | None

    @property
    def size(self) -> int:
        """m, the number of memory coefficients."""
        w = self.down.weight
        return w.shape[0] if self.spec.transposed else w.shape[1]



@dataclass
class Layer:
    """One block's FFN (dense, or experts + optional shared expert) and its attention."""

    name: str  # canonical block name: "blocks.{i}" ("encoder.blocks.{i}" in an encoder-decoder)
    stack: str  # the stack's name ("" when the model has one stack)
    attention: nn.Module | None
    dense: DenseFFN | None = None
    experts: nn.Module | None = None
    router: nn.Module | None = None
    shared: DenseFFN | None = None
    shared_gate: nn.Module | None = None

    @property
    def moe(self) -> bool:
        return self.experts is not None

    @property
    def n_experts(self) -> int:
        return int(self.experts.down_proj.shape[0]) if self.moe else 0

    @property
    def expert_dim(self) -> int:
        """m of one routed expert (down_proj is [E, h, m])."""
        return int(self.experts.down_proj.shape[2]) if self.moe else 0

    @property
    def size(self) -> int:
        """Memory vectors in this layer: m (dense), or E*m plus the shared expert's m (MoE)."""
        if not self.moe:
            return self.dense.size
        return self.n_experts * self.expert_dim + (self.shared.size if self.shared is not None else 0)

    @property
    def gated(self) -> bool:
        if self.moe:
            return bool(self.experts.has_gate)
        return self.dense.gate is not None or self.dense.spec.up_half is not None

    @property
    def points(self) -> dict[str, nn.Module]:
        """Canonical capture points of this block: `{name}.mlp.coef` and `{name}.attn.probs`."""
        out = {f"{self.name}.mlp.coef": self.experts if self.moe else self.dense.down}
        if self.attention is not None:
            out[f"{self.name}.attn.probs"] = self.attention
        return out


@dataclass
class Layout:
    """The FFN layout of one model: its family, one `Layer` per block with an FFN, in order."""

    family: Family
    layers: list[Layer]
    skipped: list[str] = field(default_factory=list)  # blocks without FFN (hybrids), by canonical name
    stacks: list[tuple[str, int]] = field(default_factory=list)  # (stack name, layers) in order

    @property
    def sizes(self) -> list[int]:
        return [layer.size for layer in self.layers]

    @property
    def ffn_dim(self) -> int:
        """m, the number of memory coefficients per layer (the largest, where layers differ)."""
        return max(self.sizes)

    @property
    def uniform(self) -> bool:
        return len(set(self.sizes)) == 1

    @property
    def moe(self) -> bool:
        return any(layer.moe for layer in self.layers)

    @property
    def gated(self) -> bool:
        return all(layer.gated for layer in self.layers)

    @property
    def points(self) -> dict[str, nn.Module]:
        return {k: v for layer in self.layers for k, v in layer.points.items()}


def supported() -> str:
    return "; ".join(f"{f.name} [{f.models}]" for f in FAMILIES)


def find_stacks(model: nn.Module) -> tuple[Family, list[tuple[str, nn.ModuleList]]] | None:
    """The first family any `nn.ModuleList` of `model` matches, and every stack matching it (named by path)."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    for _, stack in lists:
        for fam in FAMILIES:
            if _stack_matches(stack, fam):
                return fam, [(n, s) for n, s in lists if _stack_matches(s, fam)]
    return None


def _dense(block: nn.Module, spec: Dense) -> DenseFFN:
    return DenseFFN(spec, block.get_submodule(spec.down), block.get_submodule(spec.up), submodule(block, spec.gate))


def _layer(block: nn.Module, fam: Family, name: str, stack: str) -> Layer:
    spec = block_ffn(block, fam)
    attn = submodule(block, fam.attention)
    if isinstance(spec, Dense):
        return Layer(name, stack, attn, dense=_dense(block, spec))
    return Layer(name, stack, attn, experts=block.get_submodule(spec.experts), router=block.get_submodule(spec.router),
                 shared=_dense(block, spec.shared) if spec.shared is not None else None,
                 shared_gate=submodule(block, spec.shared_gate))


def _stack_name(path: str) -> str:
    """encoder.block -> encoder; model.layers -> model (used only when a model has several stacks)."""
    return path.rpartition(".")[0] or path


def find_layout(model: nn.Module) -> Layout:
    """Find the layer stack(s) and each block's FFN by structure; clear error if none matches."""
    found = find_stacks(model)
    if found is None:
        raise KentropyError(
            f"unsupported model family {type(model).__name__}: no FFN layout found; supported: {supported()}"
        )
    fam, stacks = found
    layers, skipped, names = [], [], []
    for path, stack in stacks:
        sname = _stack_name(path) if len(stacks) > 1 else ""
        prefix = f"{sname}.blocks" if sname else "blocks"
        n = 0
        for i, block in enumerate(stack):
            if block_ffn(block, fam) is None:
                skipped.append(f"{prefix}.{i}")
                continue
            layers.append(_layer(block, fam, f"{prefix}.{i}", sname))
            n += 1
        names.append((sname, n))
    return Layout(fam, layers, skipped, names)
