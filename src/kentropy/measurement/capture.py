"""Hooks that reduce activations on the fly into float64 running sums.

Each hook turns one layer's activation into per-instance means (a masked, weighted sum
over tokens) and adds them to a running total, so no `[batch, seq, m]` tensor outlives the
layer's own forward. Hooks are removed in `finally` (use the classes as context managers).
A batch's per-token weights are passed to the forward they belong to:

    with CoefficientSums(layout) as coef:
        for input_ids, mask in batches:
            with coef.batch(instance_weights(mask)):     # [B, T]: 1/|s| on real tokens, 0 on padding
                model(input_ids=input_ids, attention_mask=mask)
    cbar = [s / n for s in coef.sums]                      # Eq. 2

`CoefficientSums(layout, instances=True)` also keeps every document's own mean |c_l| ([N, L, m],
`instances()`): Cbar, H and the document bootstrap all come from that one forward.
`CoefficientSums(layout, positions=True)` also reduces, per dense layer and document, how |c| is
spread over neurons and positions (`position_stats(n)`): on real tokens only,
- max/median: the mean over the document's tokens t of max_i |c_{t,i}| / median_i |c_{t,i}| (the
  median interpolated between the two middle values for even m);
- first-position share: Σ_i |c_{t0,i}| / Σ_t Σ_i |c_{t,i}|, t0 the document's first real token;
both then averaged over documents, as Cbar is.

Mixture-of-experts layers are reduced per expert on the routed tokens only: the effective
coefficient of memory (e, i) at token t is g_e(t) * c_{e,i}(t), g the routing weight the model
applies, so each routed (token, expert) row is weighted by w[t] * g_e(t) and summed into its
expert's slice; nothing of size [tokens, E, m] is ever made. How the rows are reached depends on
the experts implementation the model was loaded with (`config._experts_implementation`):
- `grouped_mm`, `batched_mm`: the model's own kernels run; `_apply_gate` (gated experts) or the
  activation module (ungated) hands us the [S, m] coefficient rows, whose (token, expert) order
  is the one that implementation uses (sorted by expert, or token-major);
- `eager` (gated): the experts run through `_eager_gated`, the same per-expert loop as
  transformers' eager forward, op for op, with the reduction inserted;
- any other implementation (hub kernels): measured through `grouped_mm`, so outputs match the
  model's up to that kernel's rounding.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import MethodType

import torch
import torch.nn.functional as F

from kentropy.errors import ArgumentError, KentropyError
from kentropy.measurement.entropy import attention_entropy_per_query, coefficient_magnitude, next_token_entropy_per_position
from kentropy.models.registry import Layer, Layout
from kentropy.runtime.arguments import choice

OWN_ROWS = ("grouped_mm", "batched_mm")  # implementations whose own kernels we read (row order known)
ACTIVATIONS = ("abs", "relu")  # the coefficient magnitudes of `coefficient_magnitude`


def check_activation(activation) -> str:
    """`activation` is one of ACTIVATIONS (the error names the argument)."""
    return choice("activation", activation, ACTIVATIONS)


# next-token entropy: logits of at most this many values at a time (16 MiB in float32; the reduction's
# float32 temporaries are about three times that: at a 262k vocabulary, 16 positions per chunk), and never
# fewer than MIN_ROWS positions per head call (each call reads the whole head matrix)
LOGIT_CHUNK = 2**22
MIN_ROWS = 16


_ABSENT = object()  # an attribute the instance did not have (the class's shows through)


class _Hooks:
    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._patched: list[tuple[object, str, object]] = []  # (object, attribute, what the instance had), undone on exit
        self._weights: torch.Tensor | None = None  # [B, T] per-token weights of the batch in flight

    @contextmanager
    def batch(self, weights: torch.Tensor):
        """The forward run inside reduces with these per-token weights ([B, T]; 0 on padding)."""
        self._weights = weights
        try:
            yield self
            self._end_batch()
        finally:
            self._weights = None

    def _end_batch(self) -> None:
        """Called after a batch's forward completed (a subclass may keep per-batch results)."""

    @property
    def weights(self) -> torch.Tensor:
        if self._weights is None:
            raise KentropyError("a capture hook ran outside `with capture.batch(weights):`")
        return self._weights

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for obj, attr, before in reversed(self._patched):
            if before is _ABSENT:
                delattr(obj, attr)  # the class attribute shows through again
            else:
                setattr(obj, attr, before)  # e.g. accelerate's device-placing forward
            _Hooks._live.discard((id(obj), attr))
        self._patched.clear()

    _live: set = set()  # (id(object), attribute) patched by any capture now: two captures never patch one place

    def _patch(self, obj, attr: str, value) -> None:
        if (id(obj), attr) in _Hooks._live:
            raise KentropyError(f"{type(obj).__name__}.{attr} is already patched on this instance")
        self._patched.append((obj, attr, vars(obj).get(attr, _ABSENT)))
        _Hooks._live.add((id(obj), attr))
        setattr(obj, attr, value)


def coef_point(layer: Layer) -> tuple[str, torch.nn.Module]:
    """A block's FFN capture point from the registry (`Layer.points`): its canonical name
    (`blocks.{l}.mlp.coef`) and the module there (the down projection, or the experts)."""
    return next((name, module) for name, module in layer.points.items() if name.endswith(".mlp.coef"))


def _magnitude(c: torch.Tensor, activation: str) -> torch.Tensor:
    a = coefficient_magnitude(c, activation)
    return a if a.dtype in (torch.float32, torch.float64) else a.float()  # bf16/fp16: reduce in fp32


def median(a: torch.Tensor) -> torch.Tensor:
    """The median over the last dim, interpolated as numpy's (the mean of the two middle values when the
    count is even), in float64: [..., n] -> [...]. A selection, not a sort: the lower middle value by
    `torch.median`, the upper one as the smallest value above it unless the lower one repeats past the middle."""
    n = a.shape[-1]
    lo = a.median(-1).values  # the ((n + 1) // 2)-th smallest
    if n % 2:
        return lo.double()
    above = a > lo.unsqueeze(-1)
    repeats = (n - above.sum(-1)) > n // 2  # more than n/2 values <= lo: the (n/2 + 1)-th smallest is lo too
    hi = torch.where(above, a, torch.full_like(a, float("inf"))).amin(-1)
    return (lo.double() + torch.where(repeats, lo, hi).double()) / 2


class CoefficientSums(_Hooks):
    """Sum over instances of the per-instance mean |c_l| for every layer: `sums[l]` is [size_l] float64.

    A MoE layer's vector is every expert's coefficients, expert-major (index e*m + i), then the
    shared expert's. After the data, Cbar_l = sums[l] / instances (Eq. 2). `points` names layer l's
    capture point as the registry does (`blocks.{l}.mlp.coef`).

    instances=True also keeps each instance's own vector (dense layers of one size): `instances()` is
    [N, L, m] float64 in the order the batches ran; their sum over N is `sums` (up to float32 rounding).
    """

    def __init__(self, layout: Layout, activation: str = "abs", *, instances: bool = False, positions: bool = False) -> None:
        super().__init__()
        check_activation(activation)
        if instances and (layout.moe or len(set(layout.sizes)) != 1):
            raise ArgumentError("instances", "per-instance coefficients need dense FFN layers of one size")
        if positions and layout.moe:
            raise ArgumentError("positions", "position statistics need dense FFN layers")
        self._positions = torch.zeros(len(layout.layers), 2, dtype=torch.float64) if positions else None
        self.activation = activation
        self.sizes = layout.sizes
        self.points = [coef_point(layer)[0] for layer in layout.layers]
        self.sums: list[torch.Tensor] | None = None
        self._keep = instances
        self._batch: list[torch.Tensor | None] = [None] * len(layout.layers)
        self._done: list[torch.Tensor] = []
        try:
            for l, layer in enumerate(layout.layers):
                if layer.moe:
                    self._install_experts(l, layer)
                    if layer.shared is not None:
                        self._install_shared(l, layer)
                else:  # the registry's capture point: the down projection, whose input is c
                    self._handles.append(coef_point(layer)[1].register_forward_pre_hook(self._dense_hook(l)))
        except BaseException:
            self.__exit__()
            raise

    def _add(self, l: int, start: int, values: torch.Tensor) -> None:
        """sums[l][start : start + len] += values (float64)."""
        if self.sums is None:
            self.sums = [torch.zeros(n, dtype=torch.float64, device=values.device) for n in self.sizes]
        # .to: with --device-map the layers live on several GPUs; the sums stay on the first one's
        self.sums[l][start : start + values.numel()] += values.reshape(-1).double().to(self.sums[l].device)

    def _token_weights(self, device, dtype=torch.float32) -> torch.Tensor:
        return self.weights.reshape(-1).to(device=device, dtype=dtype)  # [N]: row-major over [B, T]

    # ---- dense --------------------------------------------------------------------------------
    def _dense_hook(self, l: int):
        def hook(module, args):
            c = args[0]  # [B, T, m]: the input of the down projection (OPT flattens to [B*T, m])
            w = self.weights  # [B, T]
            B, T = w.shape
            c = c.reshape(B, T, -1)
            a = _magnitude(c, self.activation)
            w = w.to(device=a.device, dtype=a.dtype)
            # sum_b mean_t |c[b, t]| as one [1, B*T] @ [B*T, m] product
            self._add(l, 0, w.reshape(1, -1) @ a.reshape(B * T, -1))
            if self._keep:  # per instance b: mean_t |c[b, t]| as a [B, 1, T] @ [B, T, m] product -> [B, m]
                self._batch[l] = torch.bmm(w.unsqueeze(1), a).squeeze(1).double().cpu()
            if self._positions is not None:
                self._add_positions(l, a, w)

        return hook

    def _add_positions(self, l: int, a: torch.Tensor, w: torch.Tensor) -> None:
        """Per document: sum_t w_t max_i a / median_i a (w = 1/|s| on real tokens: the mean over them) and the
        share of sum |c| at its first real token; both summed over the batch's documents."""
        real = w > 0  # [B, T]
        ratio = a.amax(-1).double() / median(a).clamp_min(torch.finfo(torch.float64).tiny)  # [B, T]
        a = a.double()
        peak = (w.double() * torch.where(real, ratio, torch.zeros_like(ratio))).sum(-1)  # [B]
        total = a.sum(-1) * real  # [B, T]: sum_i |c| on real tokens
        first = real.int().argmax(-1)  # the first real position of each document
        share = total.gather(1, first[:, None]).squeeze(1) / total.sum(-1).clamp_min(torch.finfo(torch.float64).tiny)
        self._positions[l] += torch.stack([peak.sum(), share.sum()]).cpu()

    def position_stats(self, n: int) -> dict[str, list[float]]:
        """Per layer, averaged over the `n` documents: `max_over_median` and `first_position_share` of |c|."""
        if self._positions is None:
            raise KentropyError("CoefficientSums(positions=True) keeps position statistics")
        mean = self._positions / n
        return {"max_over_median": mean[:, 0].tolist(), "first_position_share": mean[:, 1].tolist()}

    def _end_batch(self) -> None:
        if self._keep:
            self._done.append(torch.stack(self._batch, dim=1))  # [B, L, m]
            self._batch = [None] * len(self._batch)

    def instances(self) -> torch.Tensor:
        """Every instance's mean |c_l|: [N, L, m] float64, in the order of the batches."""
        if not self._keep:
            raise KentropyError("CoefficientSums(instances=True) keeps per-instance coefficients")
        return torch.cat(self._done)

    # ---- shared expert ------------------------------------------------------------------------
    def _install_shared(self, l: int, layer: Layer) -> None:
        start = layer.n_experts * layer.expert_dim
        state = {}

        def gate_hook(module, args):  # the shared expert's input x: its gate is sigmoid(shared_gate(x))
            state["g"] = torch.sigmoid(layer.shared_gate(args[0])).reshape(-1)

        def down_hook(module, args):
            a = _magnitude(args[0], self.activation)
            a = a.reshape(-1, a.shape[-1])  # [N, m_shared]
            w = self._token_weights(a.device, a.dtype)
            if layer.shared_gate is not None:
                w = w * state.pop("g").to(a.dtype)
            self._add(l, start, w.reshape(1, -1) @ a)

        if layer.shared_gate is not None:
            self._handles.append(layer.shared.up.register_forward_pre_hook(gate_hook))
        self._handles.append(layer.shared.down.register_forward_pre_hook(down_hook))

    # ---- routed experts -----------------------------------------------------------------------
    def _install_experts(self, l: int, layer: Layer) -> None:
        experts = layer.experts
        impl = getattr(experts.config, "_experts_implementation", None) or "eager"
        E, m = layer.n_experts, layer.expert_dim
        if impl == "eager" and experts.has_gate:
            self._patch(experts, "forward", MethodType(_eager_gated(self, l, E, m), experts))
            return
        if impl not in OWN_ROWS and impl != "eager":
            from transformers.integrations.moe import grouped_mm_experts_forward

            self._patch(experts, "forward", MethodType(grouped_mm_experts_forward, experts))
            impl = "grouped_mm"
        rows = {}  # the current forward's row -> (expert, weight) map

        def pre_hook(module, args, kwargs):
            hidden, idx, weights = _routing(args, kwargs)
            tok_w = self._token_weights(hidden.device)
            k = idx.shape[-1]
            flat_e, flat_g = idx.reshape(-1), weights.reshape(-1).float()
            if impl == "batched_mm":  # token-major: row s is token s // k, its (s % k)-th expert
                order = torch.arange(flat_e.numel(), device=flat_e.device)
                rows["queue"] = [(flat_e, tok_w[order // k] * flat_g)]
            elif impl == "grouped_mm":  # rows sorted by expert, as grouped_mm_experts_forward sorts them
                sorted_e, perm = torch.sort(flat_e)
                rows["queue"] = [(sorted_e, tok_w[perm // k] * flat_g[perm])]
            else:  # eager, ungated: one activation call per routed expert, in increasing expert order
                rows["queue"] = []
                for e in torch.unique(flat_e).tolist():
                    if e >= E:
                        continue
                    pos, tok = torch.where(idx.t() == e)  # the order of torch.where(expert_mask[e]) there
                    rows["queue"].append((torch.full_like(tok, e), tok_w[tok] * weights[tok, pos].float()))

        def reduce(c: torch.Tensor) -> None:
            expert, rw = rows["queue"].pop(0)
            a = _magnitude(c, self.activation)  # [S, m], a fresh tensor: scaled in place below
            valid = expert < E  # expert-parallel sentinels carry no token
            a.mul_(torch.where(valid, rw, 0).to(a.dtype)[:, None])
            acc = torch.zeros(E, m, dtype=a.dtype, device=a.device)
            acc.index_add_(0, expert.clamp(max=E - 1), a)
            self._add(l, 0, acc)

        self._handles.append(experts.register_forward_pre_hook(pre_hook, with_kwargs=True))
        if experts.has_gate:
            original = type(experts)._apply_gate

            def apply_gate(gate_up_out):
                c = original(experts, gate_up_out)
                reduce(c)
                return c

            self._patch(experts, "_apply_gate", apply_gate)
        else:
            self._handles.append(experts.act_fn.register_forward_hook(lambda mod, args, out: reduce(out)))


def _routing(args, kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden_states [N, h], top_k_index [N, k], top_k_weights [N, k]) of an experts call."""
    names = ("hidden_states", "top_k_index", "top_k_weights")
    vals = list(args) + [kwargs[n] for n in names[len(args):]]
    return vals[0], vals[1], vals[2]


def _eager_gated(sums: CoefficientSums, l: int, E: int, m: int):
    """transformers' eager experts forward (gated, [gate | up] concatenated), op for op, with each
    expert's coefficients reduced on its routed tokens before the down projection."""

    def forward(self, hidden_states, top_k_index, top_k_weights):
        final_hidden_states = torch.zeros_like(hidden_states)
        tok_w = sums._token_weights(hidden_states.device)
        with torch.no_grad():
            expert_mask = F.one_hot(top_k_index, num_classes=self.num_experts + 1)
            expert_mask = expert_mask.permute(2, 1, 0)
            expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        acc = None
        for expert_idx in expert_hit:
            expert_idx = expert_idx[0]
            if expert_idx == self.num_experts:
                continue
            top_k_pos, token_idx = torch.where(expert_mask[expert_idx])
            current_state = hidden_states[token_idx]
            gate, up = F.linear(current_state, self.gate_up_proj[expert_idx]).chunk(2, dim=-1)
            current_hidden_states = self.act_fn(gate) * up
            a = _magnitude(current_hidden_states, sums.activation)  # [n_e, m]
            rw = (tok_w[token_idx] * top_k_weights[token_idx, top_k_pos].float()).to(a.dtype)
            if acc is None:
                acc = torch.zeros(E, m, dtype=a.dtype, device=a.device)
            acc[expert_idx] += rw @ a
            current_hidden_states = F.linear(current_hidden_states, self.down_proj[expert_idx])
            current_hidden_states = current_hidden_states * top_k_weights[token_idx, top_k_pos, None]
            final_hidden_states.index_add_(0, token_idx, current_hidden_states.to(final_hidden_states.dtype))
        if acc is not None:
            sums._add(l, 0, acc)
        return final_hidden_states

    return forward


def logit_transform(model):
    """What a causal LM does to `lm_head(h)` before it returns the logits, from its config: Gemma 2/3's final
    soft-capping `cap * tanh(z / cap)`, Cohere's `logit_scale` (multiplied), Granite's `logits_scaling`
    (divided). Returns z -> logits, elementwise, in z's dtype, as the model computes them."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(model, "logit_scale", None)  # Cohere keeps config.logit_scale on the model
    scale = scale if isinstance(scale, (int, float)) else None
    divide = getattr(cfg, "logits_scaling", None) if "granite" in str(getattr(cfg, "model_type", "")) else None

    def transform(z: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            z = z * scale
        if divide is not None:
            z = z / divide
        if cap is not None:
            z = torch.tanh(z / cap) * cap
        return z

    return transform


class NextTokenEntropySums(_Hooks):
    """Sum over instances of the per-instance mean next-token entropy (paper A.3), reduced inside the LM head.

    The head's forward is replaced for the duration: it receives the final hidden states h [B, T, d], keeps
    the real positions (weight > 0), and turns them into logits a chunk of positions at a time (at most
    `LOGIT_CHUNK` logits), each chunk reduced to its weighted entropy and freed. The head returns an empty
    [B, T, 0] tensor, so no [tokens, vocab] logits exist for a whole batch. `logit_transform` applies what
    the model does to the head's output; `check(model, inputs)` compares the result with the model's own
    logits on one short input and refuses a model whose logits are made otherwise.
    """

    def __init__(self, model) -> None:
        super().__init__()
        head = model.get_output_embeddings()
        if head is None:
            raise ValueError("next-token entropy needs a model with an LM head")
        self.transform = logit_transform(model)
        vocab = head.weight.shape[0]
        self.rows = max(MIN_ROWS, LOGIT_CHUNK // vocab)
        self.sum: torch.Tensor | None = None  # float64 scalar
        self._original = head.forward  # the class's, or an instance one (accelerate's device placement)
        self._patch(head, "forward", self._forward(self._original))

    def _forward(self, original):
        def forward(hidden: torch.Tensor) -> torch.Tensor:
            w = self.weights.to(hidden.device)  # [B, T]
            if hidden.shape[:-1] != w.shape:
                raise RuntimeError(f"the LM head got hidden states {tuple(hidden.shape)} for a batch of {tuple(w.shape)} tokens")
            real = w.reshape(-1) > 0
            h, w = hidden.reshape(-1, hidden.shape[-1])[real], w.reshape(-1)[real]  # [N, d], [N]: real positions only
            total = torch.zeros((), dtype=torch.float64, device=hidden.device)
            for start in range(0, h.shape[0], self.rows):
                logits = self.transform(original(h[start : start + self.rows]))  # [n, V]
                total += (w[start : start + self.rows] * next_token_entropy_per_position(logits)).sum().double()
            self.sum = total if self.sum is None else self.sum + total.to(self.sum.device)
            return hidden.new_empty(*hidden.shape[:-1], 0)

        return forward

    def check(self, model, inputs: dict, weights: torch.Tensor) -> None:
        """The chunked reduction equals the entropy of the model's own logits on `inputs` (one short batch,
        `weights` [B, T]), else a KentropyError: the model makes its logits in a way this does not reproduce."""
        head = model.get_output_embeddings()
        reducing, head.forward = head.forward, self._original
        try:
            logits = model(**inputs).logits  # the model's own head and transform
        finally:
            head.forward = reducing
        want = (weights.to(logits.device) * next_token_entropy_per_position(logits)).sum().double()
        kept, self.sum = self.sum, None
        try:
            with self.batch(weights):
                model(**inputs)
            got, why = self.sum, "its forward does not call the LM head module"
        except RuntimeError as e:
            got, why = None, (str(e).strip().splitlines() or [type(e).__name__])[0]
        finally:
            self.sum = kept
        rtol = 1e-4 if logits.dtype in (torch.float32, torch.float64) else 1e-2  # half precision: chunked matmuls round apart
        if got is not None:
            if torch.isclose(got.to(want.device), want, rtol=rtol, atol=1e-6):
                return
            why = f"{float(got):.6g} here, {float(want):.6g} from the model's logits"
        raise KentropyError(f"--metrics next-token: {type(model).__name__} makes its logits in a way the chunked "
                            f"reduction does not reproduce ({why})")


class AttentionEntropySums(_Hooks):
    """Sum over instances of the per-instance mean attention entropy, per layer: `sums` is [L].

    Needs eager attention (the module must return its probabilities).
    """

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        missing = [layer.name for layer in layout.layers if layer.attention is None]
        if missing:
            raise ArgumentError("metrics", f"attention: blocks {', '.join(missing)} have an FFN but no self-attention")
        self.layers = len(layout.layers)
        self.at = layout.family.probs_at
        self.sums: torch.Tensor | None = None  # [L] float64
        for l, layer in enumerate(layout.layers):
            self._handles.append(layer.attention.register_forward_hook(self._hook(l)))

    def _hook(self, l: int):
        def hook(module, args, output):
            probs = output[self.at] if isinstance(output, tuple) and len(output) > self.at else None
            if probs is None or probs.dim() != 4:
                raise KentropyError("attention entropy needs attention probabilities: load the model with "
                                    "attn_implementation='eager'")
            h = attention_entropy_per_query(probs)  # [B, T]
            w = self.weights.to(device=h.device, dtype=h.dtype)
            if self.sums is None:
                self.sums = torch.zeros(self.layers, dtype=torch.float64, device=h.device)
            self.sums[l] += (w * h).sum().double().to(self.sums.device)

        return hook
