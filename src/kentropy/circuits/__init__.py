"""Knowledge circuits (Ou et al. 2025) found with EAP-IG (Hanna et al. 2024) on HF causal LMs.

    tasks = tasks_from_triples(triples, tokenizer)          # or tasks_from_knowledge / read_tasks
    enc = encode_task(tasks[0], tokenizer)
    attr = eap_ig(model, enc, steps=5)                      # [n_up, n_down] edge scores
    circuit = select_circuit(attr.scores, graph_of(model), top_n=200)
    evaluate(model, enc, circuit.edges)                     # faithfulness, Hit@10
"""

from kentropy.circuits.eap import Attribution, Evaluation, eap_ig, evaluate, exact_edge_effects
from kentropy.circuits.graph import Circuit, Graph, prune_dead, select_circuit, top_edges
from kentropy.circuits.roles import HeadAttribution, head_attribution, head_roles
from kentropy.circuits.tasks import (Encoded, Example, Task, encode_task, read_tasks, tasks_from_knowledge,
                                     tasks_from_triples, write_tasks)
from kentropy.circuits.trace import Tracer, graph_of


__all__ = ["Attribution", "Circuit", "Encoded", "Evaluation", "Example", "Graph", "HeadAttribution", "Task", "Tracer",
           "eap_ig", "encode_task", "evaluate", "exact_edge_effects", "graph_of", "head_attribution", "head_roles",
           "prune_dead", "read_tasks", "select_circuit", "tasks_from_knowledge", "tasks_from_triples", "top_edges",
           "write_tasks"]
