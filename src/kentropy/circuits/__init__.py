"""Knowledge circuits (Ou et al. 2025) found with EAP-IG (Hanna et al. 2024) on HF causal LMs.

    tasks = tasks_from_triples(triples, tokenizer)          # or tasks_from_knowledge / read_tasks
    enc = encode_task(tasks[0], tokenizer)
    attr = eap_ig(model, enc, steps=5)                      # [n_up, n_down] edge scores
    circuit = select_circuit(attr.scores, graph_of(model), top_n=200)
    score_circuit(model, enc, circuit.edges)                # faithfulness, Hit@10
    exact_check(model, enc, attr.scores, graph_of(model), k=100, seed=0, top_n=200)  # Spearman, top-n overlap

Ou et al. 2025's conventions: `CONVENTIONS["ou2025"]` (metric="logit-diff", split q/k/v inputs,
one BOS, k = 1..m), passed as `encode_task(..., bos=)` and `eap_ig(..., metric=, qkv_split=, ig_range=)`.
"""

from kentropy.circuits.agreement import exact_check
from kentropy.circuits.conventions import CONVENTIONS, Convention, convention
from kentropy.circuits.eap import Attribution, CircuitScore, eap_ig, exact_edge_effects, score_circuit
from kentropy.circuits.graph import Circuit, Graph, prune_dead, select_circuit, top_edges
from kentropy.circuits.roles import HeadAttribution, head_attribution, head_roles
from kentropy.circuits.tasks import (Encoded, Example, Task, encode_task, read_tasks, tasks_from_knowledge,
                                     tasks_from_triples, write_tasks)
from kentropy.circuits.trace import Tracer, graph_of


__all__ = ["CONVENTIONS", "Attribution", "Circuit", "CircuitScore", "Convention", "convention", "exact_check", "Encoded", "Example",
           "Graph", "HeadAttribution", "Task", "Tracer", "eap_ig", "encode_task", "exact_edge_effects", "graph_of",
           "head_attribution", "head_roles", "prune_dead", "read_tasks", "score_circuit", "select_circuit",
           "tasks_from_knowledge", "tasks_from_triples", "top_edges", "write_tasks"]
