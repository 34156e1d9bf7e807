"""`kentropy circuits`: find each checkpoint's knowledge circuit per task and track it across the series.

    kentropy circuits ckpt/step100 ckpt/step200 ckpt/final --task tasks.json --out circuits.json --plot circuits.png

Per checkpoint and task: EAP-IG scores (or exact single-edge patching effects), the circuit
(top-n edges, dead nodes pruned), its faithfulness and Hit@10, per-layer edge shares and
head roles, optionally EAP-IG's agreement with exact patching on a sample of edges; then
node and edge Jaccard with the circuit of the same task in the last checkpoint (the
"final" one). The conventions (metric, q/k/v inputs, BOS, IG steps) are `conventions.py`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tqdm.auto import tqdm

from kentropy.circuits import metrics as M
from kentropy.circuits.agreement import exact_check
from kentropy.circuits.arch import wire
from kentropy.circuits.conventions import CONVENTIONS, Convention, convention
from kentropy.circuits.eap import eap_ig, exact_edge_effects, score_circuit
from kentropy.circuits.graph import Circuit, Graph, select_circuit
from kentropy.circuits.roles import head_attribution, head_roles
from kentropy.circuits.tasks import Task, check_corrupted_targets, encode_task, read_tasks, tasks_from_knowledge
from kentropy.circuits.trace import graph_of
from kentropy.runtime.options import device_option, dtype_option, models_option, option, require, series_resume_option, trust_remote_code_option
from kentropy.errors import KentropyError
from kentropy.io import check_out_file
from kentropy.knowledge.schema import load_knowledge
from kentropy.models.loading import gguf_fields, load_series, parse_checkpoints, pick_device, pick_dtype
from kentropy.runtime.series import progress_line

HIT_K = 10  # Ou et al. 2025: Hit@10 of the target under the circuit
METHODS = ("eap-ig", "exact")
EXACT_MAX_EDGES = 10_000  # --method exact: one forward pass per edge and batch; refused on larger graphs


@dataclass
class CircuitsConfig:
    """Find knowledge circuits (EAP-IG) in each checkpoint and track them across the series (the last one is final)."""

    models: list[str] = models_option()
    out: str = option(help="Where to write the JSON results (atomically).")
    task: str | None = option(None, "TASK.json: recall tasks written by kentropy.circuits.write_tasks, or a {'triples': [...]} file.")
    knowledge: str | None = option(None, "A Fictional Knowledge file to build the tasks from (instead of --task).")
    probe_kinds: str = option("mem", "With --knowledge: which probes become facts (comma-separated: mem, gen, hard_gen).")
    top_n: int = option(200, "Circuit size: the top-n edges by |EAP-IG score| (before dead nodes are pruned).")
    ig_steps: int = option(5, "Integrated-gradient steps m between corrupted and clean input embeddings.")
    convention: str = option("kentropy", "kentropy (target logit, joint q/k/v, tokenizer's BOS, k=1..m) or ou2025 "
                             "(Ou et al. 2025: logit-diff, split, always, 1..m); the four flags below override it.")
    metric: str | None = option(None, "logit (target logit) or logit-diff (minus the corrupted target's logit); default: the convention's.")
    qkv: str | None = option(None, "joint (one input per head) or split (q, k, v edges apart); default: the convention's.")
    bos: str | None = option(None, "auto (tokenizer's default), always (exactly one BOS; EOS if none) or never; default: the convention's.")
    ig_range: str | None = option(None, "IG points k/m for k = 1..m (Ou et al.'s vendored EAP-IG) or 0..m-1 (hannamw/EAP-IG master); default: the convention's.")
    method: str = option("eap-ig", f"eap-ig, or exact (one forward per edge: refused above {EXACT_MAX_EDGES} edges).")
    check_exact: int = option(0, "With eap-ig: compare with exact patching on K sampled edges (Spearman, top-n overlap; 0: off).")
    max_examples: int | None = option(None, "Use at most this many examples per task (the first ones).")
    batch_size: int = option(16, "Prompts per forward pass.")
    seed: int = option(0, "Seed for choosing corrupting subjects (when tasks are built from triples or --knowledge).")
    plot: str | None = option(None, "PNG file: each metric against the checkpoint (training step).")
    device: str = device_option()
    dtype: str = dtype_option()
    trust_remote_code: bool = trust_remote_code_option()
    resume: bool = series_resume_option()

    def __post_init__(self) -> None:
        if (self.task is None) == (self.knowledge is None):
            raise KentropyError("give exactly one of --task and --knowledge")
        if self.top_n <= 0:
            raise KentropyError(f"--top-n {self.top_n}: must be positive")
        if self.ig_steps <= 0:
            raise KentropyError(f"--ig-steps {self.ig_steps}: must be positive")
        if self.batch_size <= 0:
            raise KentropyError(f"--batch-size {self.batch_size}: must be positive")
        if self.max_examples is not None and self.max_examples <= 0:
            raise KentropyError(f"--max-examples {self.max_examples}: must be positive")
        if not self.kinds or any(k not in ("mem", "gen", "hard_gen") for k in self.kinds):
            raise KentropyError(f"--probe-kinds {self.probe_kinds}: choose from mem, gen, hard_gen")
        require(self, "seed", low=0)
        if self.method not in METHODS:
            raise KentropyError(f"--method {self.method}: choose from {', '.join(METHODS)}")
        if self.check_exact < 0:
            raise KentropyError(f"--check-exact {self.check_exact}: must be non-negative")
        if self.check_exact and self.method == "exact":
            raise KentropyError("--check-exact: only with --method eap-ig")
        conv = convention(self.convention, metric=self.metric, qkv=self.qkv, bos=self.bos, ig_range=self.ig_range)
        self.metric, self.qkv, self.bos, self.ig_range = conv.metric, conv.qkv, conv.bos, conv.ig_range
        check_out_file(self.out)
        check_out_file(self.plot, "--plot")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.probe_kinds.split(",") if k.strip())

    @property
    def conventions(self) -> Convention:
        return Convention(self.metric, self.qkv, self.bos, self.ig_range)


def load_tasks(cfg: CircuitsConfig, tokenizer) -> list[Task]:
    """The tasks of `cfg` (built with `tokenizer` when they come from triples or --knowledge), capped."""
    if cfg.task is not None:
        tasks = read_tasks(cfg.task, tokenizer, seed=cfg.seed)
    else:
        tasks = tasks_from_knowledge(load_knowledge(cfg.knowledge), tokenizer, kinds=cfg.kinds,
                                     seed=cfg.seed, where=str(cfg.knowledge))
    if not tasks:
        raise KentropyError("no recall tasks: no fact has a corrupting subject of equal token length")
    if cfg.max_examples is not None:
        tasks = [Task(t.name, t.relation, t.split, t.examples[: cfg.max_examples]) for t in tasks]
    if cfg.metric == "logit-diff":
        for t in tasks:
            check_corrupted_targets(t, str(cfg.task or cfg.knowledge))
    return tasks


def step_of(label: str) -> int | None:
    """The training step in a checkpoint name: its last integer ("checkpoint-1600" -> 1600), else None."""
    nums = re.findall(r"\d+", label.rstrip("/").split("/")[-1])
    return int(nums[-1]) if nums else None


def analyze(model, tokenizer, task: Task, *, top_n: int, ig_steps: int, batch_size: int,
            conventions: Convention = CONVENTIONS["kentropy"], method: str = "eap-ig", check_exact: int = 0,
            seed: int = 0) -> tuple[dict, Circuit]:
    """One checkpoint x one task: circuit, faithfulness, Hit@10, per-layer shares, head roles (and the exact check)."""
    conv = conventions
    enc = encode_task(task, tokenizer, bos=conv.bos)
    g = graph_of(model, conv.qkv_split)
    n_edges = int(g.valid().sum())
    kw = dict(batch_size=batch_size, metric=conv.metric, qkv_split=conv.qkv_split)
    if method == "exact":
        if n_edges > EXACT_MAX_EDGES:
            raise KentropyError(f"--method exact: this graph has {n_edges} edges, more than {EXACT_MAX_EDGES} "
                                "(one forward pass each); use eap-ig with --check-exact K")
        scores = exact_edge_effects(model, enc, **kw)
    else:
        scores = eap_ig(model, enc, steps=ig_steps, ig_range=conv.ig_range, **kw).scores
    circuit = select_circuit(scores, g, top_n)
    ev = score_circuit(model, enc, circuit.edges, k=HIT_K, **kw)
    check = None
    if method == "eap-ig" and check_exact > 0:
        check = exact_check(model, enc, scores, g, k=check_exact, seed=seed, top_n=top_n, **kw)
    roles = head_roles(circuit, head_attribution(model, enc, batch_size=batch_size, metric=conv.metric))
    edges = circuit.edge_list()
    down_index = {n: i for i, n in enumerate(g.down_names())}
    counts = {r: sum(1 for x in roles.values() if x["role"] == r) for r in ("mover", "relation", "mixed")}
    return {
        "task": task.name, "relation": task.relation, "split": task.split, "examples": len(enc),
        "metric_clean": ev.clean, "metric_corrupted": ev.corrupted, "metric_circuit": ev.circuit,
        "faithfulness": ev.faithfulness, f"hit_at_{HIT_K}": ev.hit_at_k, f"hit_at_{HIT_K}_clean": ev.hit_at_k_clean,
        "n_edges": len(edges), "n_nodes": len(circuit.nodes()),
        "layer_shares": M.layer_shares([g.layer_of_down(down_index[b]) for _, b, _ in edges], g.layers),
        "role_counts": counts, "head_roles": roles,
        "node_jaccard": None, "edge_jaccard": None,
        "check_exact": check,
        "nodes": sorted(circuit.nodes()),
        "edges": [{"from": a, "to": b, "score": s} for a, b, s in edges],
    }, circuit


def circuits_series(cfg: CircuitsConfig, progress: bool = True, series=None) -> list[dict]:
    """Every checkpoint of `cfg.models`, in order: per task the `analyze` record, Jaccard vs the last checkpoint.

    `series` (a `kentropy.runtime.series.Partial`) keeps each checkpoint's records as they finish and skips those it holds.
    """
    n = len(parse_checkpoints(cfg.models))
    device = pick_device(cfg.device)
    results, tasks = [], []

    def tasks_first(ckpt, tok) -> None:  # the tasks (built with the first tokenizer) fail before any weights load
        if not tasks:
            tasks.extend(load_tasks(cfg, tok))

    for item in load_series(cfg.models, before_load=tasks_first, skip=series.done if series else None, device=device,
                            dtype=pick_dtype(cfg.dtype, device), eager_attention=True, trust_remote_code=cfg.trust_remote_code):
        ckpt, tok, model = item.checkpoint, item.tokenizer, item.model
        if progress:
            progress_line("circuits", item.index, n, str(ckpt))
        wiring = wire(model)
        g = Graph(wiring.layers, wiring.heads, wiring.parallel, cfg.conventions.qkv_split)
        records = []
        for task in tqdm(tasks, desc=f"circuits {ckpt}", disable=not progress, leave=False):
            records.append(analyze(model, tok, task, top_n=cfg.top_n, ig_steps=cfg.ig_steps, batch_size=cfg.batch_size,
                                   conventions=cfg.conventions, method=cfg.method, check_exact=cfg.check_exact,
                                   seed=cfg.seed)[0])
        label = ckpt.revision or ckpt.name
        results.append({"model": ckpt.name, "revision": ckpt.revision, **gguf_fields(ckpt), "step": step_of(label),
                        "graph": {"layers": g.layers, "heads": g.heads, "parallel": g.parallel, "norms": wiring.norms,
                                  "qkv_split": g.qkv_split, "edges": int(g.valid().sum())},
                        "tasks": records})
        if series is not None:
            series.add(item.index, results[-1])
        del model  # `item` drops its own reference before the next checkpoint loads
    if series is not None:
        results = series.ordered()
    return with_jaccard(results)


def _nodes_edges(rec: dict) -> tuple[set[str], set[str]]:
    """A task record's circuit as node names and `from->to` edge names (as `Circuit.nodes`, `Circuit.edge_names`)."""
    return set(rec["nodes"]), {f"{e['from']}->{e['to']}" for e in rec["edges"]}


def with_jaccard(results: list[dict]) -> list[dict]:
    """Fill each task record's node and edge Jaccard against the same task in the last checkpoint."""
    final = {rec["task"]: _nodes_edges(rec) for rec in results[-1]["tasks"]}
    for res in results:
        for rec in res["tasks"]:
            (nodes, edges), (f_nodes, f_edges) = _nodes_edges(rec), final[rec["task"]]
            rec["node_jaccard"] = M.jaccard(nodes, f_nodes)
            rec["edge_jaccard"] = M.jaccard(edges, f_edges)
    return results
