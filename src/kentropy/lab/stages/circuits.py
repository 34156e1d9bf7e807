"""The circuits stage: knowledge circuits (Ou et al. 2025) along one continual-learning run.

    done = circuits_stage(stages, cfg, base, world, tok, device)   # base: a continual_stage result

Over the checkpoint series [start] + the run's checkpoints (the last is "final"), for two
knowledge splits, EAP-IG circuits (kentropy.circuits, `series.analyze`) and their metrics:
faithfulness, Hit@10, node / edge Jaccard with the final circuit and with the previous
checkpoint's, per-layer edge shares, head roles. Splits:

- "new": the injected fictional knowledge (entirely new entities), recall prompts from its
  mem probes (`tasks_from_knowledge`), one relation type ("knowledge-mem").
- "related": facts of the world's entities the model read in pretraining. The lab injects
  no new attributes of known entities, so this split is the model's own world knowledge,
  kept as the paper's reference for knowledge tied to what the model knows. Relation
  types: the `RELATED_RELATIONS` entity relations whose subjects are the most popular
  (the facts read most often), each on its most popular subjects.

From the numbers, the statistics of the paper's three findings for this run (`lab/judge/circuits.py`, which
judges them across runs); the report section is `lab/report/circuits.py`.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from kentropy.circuits import metrics as M
from kentropy.circuits.series import HIT_K, analyze, step_of
from kentropy.circuits.tasks import Task, tasks_from_knowledge, tasks_from_triples
from kentropy.errors import KentropyError
from kentropy.io import write_json
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import LabConfig
from kentropy.lab.judge.circuits import finite, findings
from kentropy.lab.labdir import LabDir

IG_STEPS = 5  # Ou et al. 2025 (default of EAP-IG): integrated-gradient steps
BATCH_SIZE = 16
RELATED_RELATIONS = 3  # relation types of the "related" split, kept apart
CANDIDATES = 4  # candidate facts per wanted example: room to find corrupting subjects of equal token length
PROBE_KINDS = ("mem",)  # the injected sentences themselves, cut before the fact
ROLES = ("mover", "relation", "mixed")


# ---- tasks -------------------------------------------------------------------------------
def related_triples(world, per_relation: int, relations: int = RELATED_RELATIONS) -> tuple[list[tuple], list[str]]:
    """Facts of popular world entities as (subject, relation phrase, target, relation, True), and the relations used.

    Relations: among those between entities (the fact_recall task's kind), the `relations`
    whose subjects carry the largest summed popularity (document share), i.e. whose facts
    the model read most often. Per relation, the `per_relation` most popular subjects with a
    fact of it. The phrase is the relation's first predicate cut before its object.
    """
    rels = [r for r in world.schema.relations.values() if r.object is not None and r.vp[0].endswith(" {o}")]
    weight = {r.name: sum(world.popularity[s] for s in world.facts[r.name]) for r in rels}
    chosen = sorted(rels, key=lambda r: (-weight[r.name], r.name))[:relations]
    out = []
    for r in chosen:
        phrase = r.vp[0][: -len(" {o}")]
        subjects = sorted(world.facts[r.name], key=lambda e: world.rank[e])[:per_relation]
        out += [(world.names[s], phrase, world.text(world.facts[r.name][s]), r.name, True) for s in subjects]
    return out, [r.name for r in chosen]


def _cap(tasks: list[Task], n: int) -> list[Task]:
    return [Task(t.name, t.relation, t.split, t.examples[:n]) for t in tasks]


def build_tasks(world, entries: list[dict], tokenizer, examples: int, seed: int, where: str) -> dict[str, dict]:
    """Per split: {"tasks": [Task], "skipped": reason or None, "relations": [...]}; a split without usable facts is skipped."""
    out = {}
    triples, relations = related_triples(world, CANDIDATES * examples)
    tasks = _cap(tasks_from_triples(triples, tokenizer, seed=seed), examples)
    out["related"] = {"tasks": tasks, "relations": relations,
                      "skipped": None if tasks else "no world fact has a corrupting subject of equal token length"}
    try:
        tasks = _cap(tasks_from_knowledge(entries, tokenizer, kinds=PROBE_KINDS, seed=seed, where=where), examples)
        reason = None if tasks else "no injected fact has a corrupting subject of equal token length"
    except KentropyError as e:
        tasks, reason = [], str(e)
    out["new"] = {"tasks": tasks, "relations": sorted({t.relation for t in tasks}), "skipped": reason}
    return out


# ---- aggregation -------------------------------------------------------------------------
def lower_half_share(shares: list[float] | None) -> float | None:
    """Share of circuit edges whose downstream node lies in layers [0, L // 2) (`shares`: L + 1 bins, last = logits)."""
    if not shares or len(shares) < 3 or sum(shares) == 0:
        return None
    layers = len(shares) - 1
    return float(sum(shares[: layers // 2]))


def aggregate(records: list[dict], layers: int) -> dict:
    """One split at one checkpoint from its tasks' records (tasks that failed carry "error" and are left out).

    Weighted by examples: Hit@10 and the Jaccards are means; faithfulness is that of the
    pooled metrics, (m_circuit - m_corrupted) / (m_clean - m_corrupted) on example-weighted
    means (a per-task ratio explodes when a task's clean and corrupted runs nearly tie);
    layer shares pool the edges of all tasks; role counts are sums.
    """
    ok = [r for r in records if "error" not in r]
    n = sum(r["examples"] for r in ok)

    def mean(key):
        vals = [(r[key], r["examples"]) for r in ok if finite(r.get(key)) is not None]
        w = sum(x for _, x in vals)
        return sum(v * x for v, x in vals) / w if w else None

    edges = sum(r["n_edges"] for r in ok)
    shares = [sum(r["layer_shares"][b] * r["n_edges"] for r in ok) / edges if edges else 0.0 for b in range(layers + 1)]
    clean, corr, circ = mean("metric_clean"), mean("metric_corrupted"), mean("metric_circuit")
    faith = None if None in (clean, corr, circ) else finite(M.faithfulness(circ, clean, corr))
    return {
        "tasks": len(ok), "examples": n, "faithfulness": faith, "hit_at_10": mean(f"hit_at_{HIT_K}"),
        "hit_at_10_clean": mean(f"hit_at_{HIT_K}_clean"), "metric_clean": clean, "metric_corrupted": corr, "metric_circuit": circ,
        "node_jaccard": mean("node_jaccard"), "edge_jaccard": mean("edge_jaccard"), "edge_jaccard_prev": mean("edge_jaccard_prev"),
        "n_edges": edges, "layer_shares": shares, "lower_half_share": lower_half_share(shares) if edges else None,
        "role_counts": {k: sum(r["role_counts"][k] for r in ok) for k in ROLES},
    }


# ---- the stage ---------------------------------------------------------------------------
def series_of(base: dict) -> list[tuple[str, str, int]]:
    """(label, path, step) of [start] + the run's checkpoints; the start is step 0, the last is "final"."""
    paths = [base["start"]] + list(base["checkpoints"])
    if len(paths) < 2:
        raise KentropyError("circuits: the continual run saved no checkpoints")
    out = [("start", base["start"], 0)]
    for i, p in enumerate(base["checkpoints"], 1):
        step = step_of(str(p))
        out.append((Path(p).name, str(p), i if step is None else step))
    last = out[-1]
    out[-1] = ("final", last[1], last[2])
    return out


def circuits_stage(stages: Stages, cfg: LabConfig, base: dict, world: Done, tok: Done, device: str) -> Done:
    """Circuits of one continual-learning run's checkpoint series, per split; findings (module docstring)."""
    series = series_of(base)
    conf = {"world": world.hash, "tokenizer": tok.hash, "knowledge": world.result["knowledge"],
            "checkpoints": [p for _, p, _ in series], "world_seed": cfg.world_seed, "entities": cfg.entities,
            "top_n": cfg.circuit_top_n, "examples": cfg.circuit_examples, "ig_steps": IG_STEPS,
            "related_relations": RELATED_RELATIONS, "probe_kinds": list(PROBE_KINDS)}

    def fn(d: Path) -> dict:
        return run_circuits(conf, series, base.get("summary"), tok.result["path"], device, d, lab=stages.dir)

    return stages.run("circuits", conf, fn, code=("kentropy.lab.judge.circuits", "kentropy.circuits.series", "kentropy.circuits.eap",
                                                  "kentropy.circuits.metrics", "kentropy.circuits.trace", "kentropy.circuits.tasks",
                                                  "kentropy.circuits.graph", "kentropy.circuits.roles", "kentropy.circuits.arch"))


def run_circuits(conf: dict, series: list[tuple[str, str, int]], summary: dict | None, tokenizer_path: str, device: str,
                 workdir: Path, lab: LabDir | None = None) -> dict:
    """The stage's work: tasks once (one tokenizer for the whole series), then every checkpoint x task
    (`lab`: the lab whose paths records.json keeps relative to it)."""
    from transformers import AutoTokenizer

    from kentropy.circuits.trace import graph_of
    from kentropy.knowledge.schema import load_knowledge
    from kentropy.lab.text.world import build_world
    from kentropy.models.loading import ModelRef, load_model, pick_device

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    world = build_world(conf["entities"], conf["world_seed"])
    splits = build_tasks(world, load_knowledge(conf["knowledge"]), tok, conf["examples"], conf["world_seed"], conf["knowledge"])
    dev = pick_device(device)
    records, circuits = [], []
    layers = None
    for label, path, step in tqdm(series, desc="circuits"):
        model = load_model(ModelRef(path), device=dev, eager_attention=True)
        layers = graph_of(model).layers
        per_task, found = {}, {}
        for name, s in splits.items():
            for task in s["tasks"]:
                try:
                    rec, found[task.name] = analyze(model, tok, task, top_n=conf["top_n"], ig_steps=conf["ig_steps"],
                                                    batch_size=BATCH_SIZE)
                except KentropyError as e:  # e.g. an example that does not align under this checkpoint: say why
                    rec = {"task": task.name, "relation": task.relation, "split": name, "error": str(e)}
                per_task[task.name] = rec
        records.append({"label": label, "path": path, "step": step, "tasks": per_task})
        circuits.append(found)
        del model
    for k, (rec, found) in enumerate(zip(records, circuits)):
        for name, r in rec["tasks"].items():
            if "error" in r:
                continue
            final, prev = circuits[-1].get(name), circuits[k - 1].get(name) if k else None
            r["node_jaccard"] = M.jaccard(found[name].nodes(), final.nodes()) if final else None
            r["edge_jaccard"] = M.jaccard(found[name].edge_names(), final.edge_names()) if final else None
            r["edge_jaccard_prev"] = M.jaccard(found[name].edge_names(), prev.edge_names()) if prev else None
            r["faithfulness"] = finite(r["faithfulness"])
    write_json(workdir / "records.json", lab.stored(records) if lab else records)  # every edge and head of every circuit

    checkpoints = []
    for rec in records:
        out = {}
        for name, s in splits.items():
            if s["skipped"]:
                out[name] = {"skipped": s["skipped"]}
                continue
            recs = [rec["tasks"][t.name] for t in s["tasks"]]
            out[name] = {**aggregate(recs, layers), "per_task": [_brief(r) for r in recs]}
        checkpoints.append({"label": rec["label"], "path": rec["path"], "step": rec["step"], "splits": out})
    return {
        "config": conf, "layers": layers, "records": str(workdir / "records.json"),
        "splits": {name: {"tasks": [{"name": t.name, "relation": t.relation, "examples": len(t.examples)} for t in s["tasks"]],
                          "relations": s["relations"], "skipped": s["skipped"]} for name, s in splits.items()},
        "checkpoints": checkpoints,
        "findings": findings(checkpoints, summary),
    }


def _brief(r: dict) -> dict:
    """A task's record without its edge and node lists (those stay in records.json)."""
    return {k: v for k, v in r.items() if k not in ("edges", "nodes", "head_roles")}
