"""Circuit graph bookkeeping and the metric formulas, against references written out here."""

import math

import pytest
import torch

from kentropy.circuits.graph import Circuit, Graph, prune_dead, select_circuit, top_edges
from kentropy.circuits.metrics import classify_role, faithfulness, hits_at_k, jaccard, layer_shares
from kentropy.circuits.roles import HeadAttribution, head_roles


def edge(g, a, b):
    return g.up_names().index(a), g.down_names().index(b)


def test_graph_names_and_edges():
    g = Graph(layers=2, heads=2)
    assert g.up_names() == ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1"]
    assert g.down_names() == ["a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits"]
    # input -> 7 nodes; each layer-0 head -> m0, 2 heads, m1, logits; m0 -> 4; each layer-1 head -> m1, logits; m1 -> logits
    assert int(g.valid().sum()) == 7 + 2 * 5 + 4 + 2 * 2 + 1
    v = g.valid()
    assert v[edge(g, "a0.h0", "m0")] and not v[edge(g, "a0.h0", "a0.h1")] and not v[edge(g, "m1", "a1.h0")]
    p = Graph(layers=2, heads=2, parallel=True)  # the MLP of a layer does not read that layer's heads
    assert int(p.valid().sum()) == 26 - 4 and not p.valid()[edge(p, "a1.h1", "m1")]
    assert [g.layer_of_down(i) for i in range(g.n_down)] == [0, 0, 0, 1, 1, 1, 2]


def test_top_edges_and_dead_nodes():
    g = Graph(layers=2, heads=2)
    s = torch.zeros(g.n_up, g.n_down)
    s[edge(g, "input", "a0.h0")] = 5.0
    s[edge(g, "a0.h0", "logits")] = -4.0
    s[edge(g, "a0.h1", "m1")] = 3.0  # a0.h1 is not reached from input: dead
    s[edge(g, "m0", "a1.h0")] = -2.5  # m0 has no input, a1.h0 goes nowhere: dead
    s[edge(g, "a0.h0", "a1.h1")] = 0.5  # a1.h1 reaches no logits: dead
    s[edge(g, "a1.h0", "a0.h0")] = 9.0  # not an edge (backwards): never chosen
    top = top_edges(s, g, 5)
    assert int(top.sum()) == 5 and not top[edge(g, "a1.h0", "a0.h0")]
    c = select_circuit(s, g, 5)
    assert c.edge_list() == [("input", "a0.h0", 5.0), ("a0.h0", "logits", -4.0)]
    assert c.nodes() == {"a0.h0"} and c.edge_names() == {"input->a0.h0", "a0.h0->logits"}
    s[edge(g, "input", "a0.h1")] = 2.0  # now a0.h1 -> m1 -> ? m1 has no edge to logits: still dead
    assert prune_dead(top_edges(s, g, 6), g).sum() == 2
    s[edge(g, "m1", "logits")] = 2.0
    assert select_circuit(s, g, 7).edge_names() == {"input->a0.h0", "a0.h0->logits", "input->a0.h1", "a0.h1->m1", "m1->logits"}


def test_faithfulness():
    assert faithfulness(3.0, 3.0, 1.0) == 1.0 and faithfulness(1.0, 3.0, 1.0) == 0.0
    assert faithfulness(2.5, 3.0, 1.0) == pytest.approx(0.75)
    assert math.isnan(faithfulness(2.0, 1.0, 1.0))


def test_hits_at_k():
    logits = torch.tensor([[0.0, 5.0, 3.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    assert hits_at_k(logits, torch.tensor([2, 2]), k=2).tolist() == [True, False]
    assert hits_at_k(logits, torch.tensor([0, 0]), k=1).tolist() == [False, True]
    assert hits_at_k(logits, torch.tensor([3, 3]), k=10).tolist() == [True, True]  # k beyond the vocabulary


def test_jaccard_and_layer_shares():
    assert jaccard({"a", "b", "c"}, {"b", "c", "d"}) == pytest.approx(2 / 4)
    assert jaccard(set(), set()) == 1.0 and jaccard({"a"}, set()) == 0.0
    assert layer_shares([0, 0, 1, 2, 2, 2, 2, 2], 2) == [2 / 8, 1 / 8, 5 / 8]
    assert layer_shares([], 3) == [0.0, 0.0, 0.0, 0.0]


def test_roles():
    assert classify_role(10.0, 1.0) == "mover" and classify_role(-10.0, 0.5) == "mover"
    assert classify_role(0.2, 2.0) == "relation" and classify_role(0.0, -0.1) == "relation"
    assert classify_role(9.9, 1.0) == "mixed" and classify_role(0.0, 0.0) == "mixed"
    g = Graph(layers=2, heads=2)
    edges = torch.zeros(g.n_up, g.n_down, dtype=torch.bool)
    for a, b in [("input", "a0.h1"), ("a0.h1", "m0"), ("m0", "a1.h0"), ("a1.h0", "logits")]:
        edges[edge(g, a, b)] = True
    attr = HeadAttribution(subject=torch.tensor([[0.0, 3.0], [0.1, 0.0]]), relation=torch.tensor([[0.0, 0.2], [1.5, 0.0]]),
                           total=torch.zeros(2, 2))
    roles = head_roles(Circuit(g, edges, torch.zeros(g.n_up, g.n_down)), attr)
    assert roles == {"a0.h1": {"role": "mover", "subject": 3.0, "relation": pytest.approx(0.2)},
                     "a1.h0": {"role": "relation", "subject": pytest.approx(0.1), "relation": 1.5}}
