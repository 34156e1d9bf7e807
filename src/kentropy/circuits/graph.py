"""The circuit graph of a transformer: nodes, the edges between them, and a circuit (a set of edges).

Nodes: `input` (the embeddings entering block 0), every attention head `a{l}.h{h}`, every
MLP `m{l}`, and `logits`. An edge u -> v exists when v reads the residual stream after u
wrote to it: every upstream node feeds every later head, every later MLP and the logits. In
parallel-residual blocks (GPT-NeoX, Phi) the MLP of a layer does not read that layer's heads.

A head has one input (`qkv_split=False`: its q, k and v read the same patched residual) or
three (`qkv_split=True`, as in Hanna et al.'s EAP-IG: downstream nodes `a{l}.h{h}<q>`,
`<k>`, `<v>`, each patched on its own; with grouped-query attention every query head has
its own k and v input).

Upstream index (forward order): input = 0, a{l}.h{h} = 1 + l(H+1) + h, m{l} = 1 + l(H+1) + H.
Downstream index, with S = H (joint) or 3H (split) head inputs per layer: a{l}.h{h} =
l(S+1) + h (split: a{l}.h{h}<p> = l(S+1) + iH + h for p = q, k, v at i = 0, 1, 2),
m{l} = l(S+1) + S, logits = L(S+1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kentropy.errors import KentropyError


QKV = ("q", "k", "v")


@dataclass(frozen=True)
class Graph:
    layers: int
    heads: int
    parallel: bool = False
    qkv_split: bool = False

    @property
    def head_inputs(self) -> int:
        """Downstream head inputs per layer: H (joint) or 3H (split q/k/v)."""
        return self.heads * (3 if self.qkv_split else 1)

    @property
    def _stride(self) -> int:
        return self.head_inputs + 1

    @property
    def n_up(self) -> int:
        return 1 + self.layers * (self.heads + 1)

    @property
    def n_down(self) -> int:
        return self.layers * self._stride + 1

    def head_down(self, layer: int, part: str | None = None) -> list[int]:
        """Downstream indices of the layer's head inputs: per head (joint), or per head for q/k/v `part` (split)."""
        base = layer * self._stride
        if self.qkv_split:
            if part not in QKV:
                raise ValueError(f"split q/k/v graph: part must be one of {QKV}, got {part!r}")
            base += QKV.index(part) * self.heads
        elif part is not None:
            raise ValueError("joint q/k/v graph: heads have one input")
        return [base + h for h in range(self.heads)]

    def mlp_down(self, layer: int) -> int:
        return layer * self._stride + self.head_inputs

    @property
    def logits_down(self) -> int:
        return self.n_down - 1

    def head_up(self, layer: int, head: int) -> int:
        return 1 + layer * (self.heads + 1) + head

    def mlp_up(self, layer: int) -> int:
        return 1 + layer * (self.heads + 1) + self.heads

    def avail(self, down: int) -> int:
        """How many upstream nodes (a prefix in forward order) write before downstream node `down` reads."""
        if down == self.logits_down:
            return self.n_up
        layer, k = divmod(down, self._stride)
        start = 1 + layer * (self.heads + 1)
        if k < self.head_inputs or self.parallel:
            return start
        return start + self.heads

    def valid(self) -> torch.Tensor:
        """[n_up, n_down] bool: which edges exist."""
        n = torch.tensor([self.avail(v) for v in range(self.n_down)])
        return torch.arange(self.n_up)[:, None] < n[None, :]

    def up_names(self) -> list[str]:
        names = ["input"]
        for l in range(self.layers):
            names += [f"a{l}.h{h}" for h in range(self.heads)] + [f"m{l}"]
        return names

    def down_names(self) -> list[str]:
        names = []
        for l in range(self.layers):
            if self.qkv_split:
                names += [f"a{l}.h{h}<{p}>" for p in QKV for h in range(self.heads)]
            else:
                names += [f"a{l}.h{h}" for h in range(self.heads)]
            names.append(f"m{l}")
        return names + ["logits"]

    def down_node(self, down: int) -> int:
        """The node a downstream index reads into, as its upstream index (logits: n_up)."""
        if down == self.logits_down:
            return self.n_up
        layer, k = divmod(down, self._stride)
        if k == self.head_inputs:
            return self.mlp_up(layer)
        return self.head_up(layer, k % self.heads)

    def layer_of_down(self, down: int) -> int:
        """The layer of a downstream node; `logits` counts as layer L (one past the last block)."""
        return down // self._stride


@dataclass
class Circuit:
    """A set of edges of `graph` (boolean [n_up, n_down]) with the scores that chose them."""

    graph: Graph
    edges: torch.Tensor  # [n_up, n_down] bool
    scores: torch.Tensor  # [n_up, n_down] float, the EAP-IG scores of all edges

    def edge_list(self) -> list[tuple[str, str, float]]:
        """(from, to, score) of every circuit edge, by decreasing |score|."""
        up, down = self.graph.up_names(), self.graph.down_names()
        u, v = self.edges.nonzero(as_tuple=True)
        s = self.scores[u, v]
        order = torch.argsort(s.abs(), descending=True, stable=True)
        return [(up[int(u[i])], down[int(v[i])], float(s[i])) for i in order]

    def nodes(self) -> set[str]:
        """Heads and MLPs on the circuit (input and logits left out: every non-empty circuit has them)."""
        up, down = self.graph.up_names(), self.graph.down_names()
        u, v = self.edges.nonzero(as_tuple=True)
        names = {up[int(i)] for i in u} | {down[int(i)].split("<")[0] for i in v}
        return names - {"input", "logits"}

    def edge_names(self) -> set[str]:
        return {f"{a}->{b}" for a, b, _ in self.edge_list()}


def top_edges(scores: torch.Tensor, graph: Graph, n: int) -> torch.Tensor:
    """The n valid edges of largest |score| (ties broken by index), as a [n_up, n_down] bool mask."""
    if n < 0:
        raise KentropyError(f"--top-n {n}: must be non-negative")
    valid = graph.valid()
    flat = torch.where(valid, scores.abs().float(), torch.full_like(scores, -1.0, dtype=torch.float32)).reshape(-1)
    n = min(n, int(valid.sum()))
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, descending=True, stable=True)[:n]] = True
    return keep.view_as(valid) & valid


def prune_dead(edges: torch.Tensor, graph: Graph) -> torch.Tensor:
    """Drop the edges touching nodes that lie on no path input -> ... -> logits.

    A head or MLP is alive if it is reachable from `input` along circuit edges and reaches
    `logits` along circuit edges; an edge is kept when both its ends are alive.
    """
    n_nodes = graph.n_up + 1  # node id: upstream index; logits = n_up
    down_node = torch.tensor([graph.down_node(v) for v in range(graph.n_down)])
    u, v = edges.nonzero(as_tuple=True)
    src, dst = u.tolist(), down_node[v].tolist()
    fwd = [[] for _ in range(n_nodes)]
    bwd = [[] for _ in range(n_nodes)]
    for a, b in zip(src, dst):
        fwd[a].append(b)
        bwd[b].append(a)

    def reach(start: int, adj) -> set[int]:
        seen, stack = {start}, [start]
        while stack:
            for b in adj[stack.pop()]:
                if b not in seen:
                    seen.add(b)
                    stack.append(b)
        return seen

    alive = reach(0, fwd) & reach(graph.n_up, bwd)
    keep = torch.tensor([a in alive and b in alive for a, b in zip(src, dst)], dtype=torch.bool)
    out = torch.zeros_like(edges)
    out[u[keep], v[keep]] = True
    return out


def select_circuit(scores: torch.Tensor, graph: Graph, top_n: int) -> Circuit:
    """Ou et al. 2025 / Hanna et al. 2024: the top-n edges by |score|, dead nodes pruned."""
    return Circuit(graph, prune_dead(top_edges(scores, graph, top_n), graph), scores)
