"""The lab's circuits stage: knowledge circuits (Ou et al. 2025) along one continual-learning run, and its report section.

    done = circuits_stage(stages, cfg, base, world, tok, device)   # base: a continual_stage result
    md = circuits_section(done.result, root / "figures")

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

From the numbers, a verdict on each of the paper's three findings (`findings`): "held", "did
not hold" or "not measurable", by the rules in the docstrings of `relevance_verdict`,
`formation_verdict` and `shallow_verdict`, with the numbers behind each.
"""

from __future__ import annotations

import math
from pathlib import Path

from tqdm.auto import tqdm

from kentropy.circuits import metrics as M
from kentropy.circuits.plot import plot_circuits
from kentropy.circuits.series import HIT_K, analyze, step_of
from kentropy.circuits.tasks import Task, tasks_from_knowledge, tasks_from_triples
from kentropy.errors import KentropyError
from kentropy.io import write_atomic, write_json
from kentropy.lab.stages import Done, Stages

VERSION = 1  # what the stage computes; a change here re-runs cached stages
IG_STEPS = 5  # Ou et al. 2025 (default of EAP-IG): integrated-gradient steps
BATCH_SIZE = 16
RELATED_RELATIONS = 3  # relation types of the "related" split, kept apart
CANDIDATES = 4  # candidate facts per wanted example: room to find corrupting subjects of equal token length
PROBE_KINDS = ("mem",)  # the injected sentences themselves, cut before the fact
SPLITS = ("related", "new")
ROLES = ("mover", "relation", "mixed")

HELD, NOT_HELD, UNMEASURABLE = "held", "did not hold", "not measurable"
FINDINGS = {
    "relevance": "Acquisition depends on relevance to existing knowledge",
    "formation_to_optimization": "Circuits move from formation to optimization",
    "deep_to_shallow": "Circuit edges shift from deep to shallow layers",
}


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
def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


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
        vals = [(r[key], r["examples"]) for r in ok if _finite(r.get(key)) is not None]
        w = sum(x for _, x in vals)
        return sum(v * x for v, x in vals) / w if w else None

    edges = sum(r["n_edges"] for r in ok)
    shares = [sum(r["layer_shares"][b] * r["n_edges"] for r in ok) / edges if edges else 0.0 for b in range(layers + 1)]
    clean, corr, circ = mean("metric_clean"), mean("metric_corrupted"), mean("metric_circuit")
    faith = None if None in (clean, corr, circ) else _finite(M.faithfulness(circ, clean, corr))
    return {
        "tasks": len(ok), "examples": n, "faithfulness": faith, "hit_at_10": mean(f"hit_at_{HIT_K}"),
        "hit_at_10_clean": mean(f"hit_at_{HIT_K}_clean"), "metric_clean": clean, "metric_corrupted": corr, "metric_circuit": circ,
        "node_jaccard": mean("node_jaccard"), "edge_jaccard": mean("edge_jaccard"), "edge_jaccard_prev": mean("edge_jaccard_prev"),
        "n_edges": edges, "layer_shares": shares, "lower_half_share": lower_half_share(shares) if edges else None,
        "role_counts": {k: sum(r["role_counts"][k] for r in ok) for k in ROLES},
    }


# ---- verdicts ----------------------------------------------------------------------------
def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def relevance_verdict(related: dict | None, new: dict | None) -> dict:
    """Finding 1 from the final checkpoint's split aggregates ({"faithfulness", "hit_at_10"}, None if skipped).

    "held" when the related split's circuit has BOTH a higher Hit@10 and a higher
    faithfulness than the new split's (strictly); "did not hold" otherwise; "not
    measurable" when a split or one of these numbers is missing. In this lab "related" is
    knowledge the model had before continual training, so the verdict says whether circuits
    for knowledge tied to the model's world are stronger at the end than those for the
    entirely new entities, not how fast related knowledge was acquired.
    """
    keys = ("hit_at_10", "faithfulness")
    numbers = {f"{s}_{k}": _finite(_get(d, k)) for s, d in (("related", related), ("new", new)) for k in keys}
    if None in numbers.values():
        return {"verdict": UNMEASURABLE, "numbers": numbers, "detail": "a split or its final Hit@10 / faithfulness is missing"}
    better = {k: related[k] > new[k] for k in keys}
    verdict = HELD if all(better.values()) else NOT_HELD
    detail = (f"final Hit@10 related {related['hit_at_10']:.3f} vs new {new['hit_at_10']:.3f}; "
              f"faithfulness related {related['faithfulness']:.3f} vs new {new['faithfulness']:.3f}")
    return {"verdict": verdict, "numbers": numbers, "detail": detail}


def formation_verdict(steps: list[int], jaccard_final: list[float | None], change: list[float | None]) -> dict:
    """Finding 2 from the series (checkpoints in order, the last = final).

    `jaccard_final[k]`: edge Jaccard of checkpoint k's circuit with the final one;
    `change[k]`: 1 - edge Jaccard with checkpoint k - 1 (None for k = 0). Two conditions:
    (a) rise: the last checkpoint before the final is closer to the final circuit than the
    start, jaccard_final[-2] > jaccard_final[0]; (b) early change large, late small: the
    change per training step, change[k] / (steps[k] - steps[k-1]), averaged over the first
    half of the intervals exceeds that over the second half (with an odd number of
    intervals the middle one is left out). "held" when both hold, "did not hold" when
    either fails, "not measurable" with fewer than 3 checkpoints, a missing value, or
    steps that do not increase.
    """
    n = len(steps)
    gaps = [steps[k] - steps[k - 1] for k in range(1, n)]
    if n < 3 or any(g <= 0 for g in gaps) or None in jaccard_final or None in change[1:]:
        return {"verdict": UNMEASURABLE, "numbers": {"steps": steps, "edge_jaccard_final": jaccard_final, "change": change},
                "detail": "needs >= 3 checkpoints with increasing steps and a circuit at each"}
    rates = [change[k] / gaps[k - 1] for k in range(1, n)]
    half = len(rates) // 2
    early, late = sum(rates[:half]) / half, sum(rates[-half:]) / half
    rise = jaccard_final[-2] - jaccard_final[0]
    verdict = HELD if rise > 0 and early > late else NOT_HELD
    detail = (f"edge Jaccard with final {jaccard_final[0]:.3f} (start) -> {jaccard_final[-2]:.3f} (last before final); "
              f"edge change per 100 steps early {100 * early:.3f} vs late {100 * late:.3f}")
    return {"verdict": verdict, "detail": detail,
            "numbers": {"jaccard_start": jaccard_final[0], "jaccard_before_final": jaccard_final[-2], "rise": rise,
                        "early_change_per_step": early, "late_change_per_step": late, "steps": steps,
                        "edge_jaccard_final": jaccard_final, "change": change}}


def shallow_verdict(start: float | None, final: float | None) -> dict:
    """Finding 3: share of circuit edges into the lower half of layers ([0, L // 2)) at the start vs the final checkpoint.

    "held" when final > start, "did not hold" otherwise, "not measurable" when either is
    missing (no edges, or fewer than 2 layers).
    """
    if start is None or final is None:
        return {"verdict": UNMEASURABLE, "numbers": {"start": start, "final": final}, "detail": "no lower-half share"}
    verdict = HELD if final > start else NOT_HELD
    return {"verdict": verdict, "numbers": {"start": start, "final": final, "delta": final - start},
            "detail": f"edges into the lower half of layers {start:.3f} (start) -> {final:.3f} (final)"}


def findings(checkpoints: list[dict], summary: dict | None) -> dict:
    """The three verdicts. Findings 2 and 3 use, per checkpoint, the mean over the measured splits of the split values."""

    def split(c, s):
        v = c["splits"].get(s)
        return None if v is None or "skipped" in v else v

    final = checkpoints[-1]
    f1 = relevance_verdict(split(final, "related"), split(final, "new"))
    f1["numbers"]["hit_at_10_clean"] = {s: [_get(split(c, s), "hit_at_10_clean") for c in checkpoints] for s in SPLITS}
    if summary and summary.get("P_before") is not None and summary.get("P_after") is not None:
        f1["numbers"]["new_probe_P"] = [summary["P_before"], summary["P_after"]]
        f1["detail"] += f"; injected-knowledge probe P {summary['P_before']:.3f} -> {summary['P_after']:.3f} (not in the rule)"

    steps = [c["step"] for c in checkpoints]
    jf = [_mean(_get(split(c, s), "edge_jaccard") for s in SPLITS) for c in checkpoints]
    ch = [None] + [_mean(None if _get(split(c, s), "edge_jaccard_prev") is None else 1 - split(c, s)["edge_jaccard_prev"]
                         for s in SPLITS) for c in checkpoints[1:]]
    f2 = formation_verdict(steps, jf, ch)
    lower = [_mean(_get(split(c, s), "lower_half_share") for s in SPLITS) for c in checkpoints]
    f3 = shallow_verdict(lower[0], lower[-1])
    f3["numbers"]["series"] = lower
    out = {}
    for key, f in (("relevance", f1), ("formation_to_optimization", f2), ("deep_to_shallow", f3)):
        out[key] = {"finding": FINDINGS[key], **f}
    return out


def _get(d: dict | None, key: str):
    return None if d is None else d.get(key)


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


def circuits_stage(stages: Stages, cfg, base: dict, world: Done, tok: Done, device: str) -> Done:
    """Circuits of one continual-learning run's checkpoint series, per split; findings (module docstring)."""
    series = series_of(base)
    conf = {"version": VERSION, "world": world.hash, "tokenizer": tok.hash, "knowledge": world.result["knowledge"],
            "checkpoints": [p for _, p, _ in series], "world_seed": cfg.world_seed, "entities": cfg.entities,
            "top_n": cfg.circuit_top_n, "examples": cfg.circuit_examples, "ig_steps": IG_STEPS,
            "related_relations": RELATED_RELATIONS, "probe_kinds": list(PROBE_KINDS)}

    def fn(d: Path) -> dict:
        return run_circuits(conf, series, base.get("summary"), tok.result["path"], device, d)

    return stages.run("circuits", conf, fn)


def run_circuits(conf: dict, series: list[tuple[str, str, int]], summary: dict | None, tokenizer_path: str, device: str,
                 workdir: Path) -> dict:
    """The stage's work: tasks once (one tokenizer for the whole series), then every checkpoint x task."""
    from transformers import AutoTokenizer

    from kentropy.circuits.trace import graph_of
    from kentropy.knowledge.schema import load_knowledge
    from kentropy.lab.world import build_world
    from kentropy.models import Checkpoint, load_model, pick_device

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    world = build_world(conf["entities"], conf["world_seed"])
    splits = build_tasks(world, load_knowledge(conf["knowledge"]), tok, conf["examples"], conf["world_seed"], conf["knowledge"])
    dev = pick_device(device)
    records, circuits = [], []
    layers = None
    for label, path, step in tqdm(series, desc="circuits"):
        model = load_model(Checkpoint(path), device=dev, eager_attention=True)
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
            r["faithfulness"] = _finite(r["faithfulness"])
    write_json(workdir / "records.json", records)  # every edge and head of every circuit

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


# ---- the report section ------------------------------------------------------------------
def _f(x, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _measured(result: dict) -> list[str]:
    return [s for s in SPLITS if not result["splits"][s]["skipped"]]


def _shift_figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in result["checkpoints"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for s in _measured(result):
        vals = [c["splits"][s] for c in result["checkpoints"]]
        axes[0].plot(steps[1:], [None if v["edge_jaccard_prev"] is None else 1 - v["edge_jaccard_prev"] for v in vals[1:]],
                     marker="o", label=s)
        axes[1].plot(steps, [v["lower_half_share"] for v in vals], marker="o", label=s)
    axes[0].set(xlabel="continual-training step", ylabel="1 - edge Jaccard with previous checkpoint",
                title="How much the circuit changes (formation -> optimization)")
    axes[1].set(xlabel="continual-training step", ylabel=f"share of edges into layers 0-{result['layers'] // 2 - 1}",
                title="Edges into the lower half of layers (deep -> shallow)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def circuits_section(result: dict, figures_dir: Path) -> str:
    """Markdown section with the metrics table, two figures (saved in `figures_dir`) and the findings table."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    conf, L = result["config"], []
    add = L.append
    add("## Knowledge circuits (Ou et al. 2025)\n")
    rel = ", ".join(result["splits"]["related"]["relations"]) or "-"
    add(f"A knowledge circuit is the subgraph of attention heads and MLPs that carries a factual recall. It is found with "
        f"EAP-IG ({conf['ig_steps']} integrated-gradient steps) on clean prompts \"subject + relation phrase\" against corrupted "
        f"ones (another subject of equal token length), kept as the top {conf['top_n']} edges with dead nodes pruned, and "
        f"followed over the checkpoints of the continual-learning run from the final pretraining checkpoint (step 0 = the "
        f"start, the last = final). Splits: **new** = the injected fictional entities (recall prompts cut from their "
        f"`{'/'.join(conf['probe_kinds'])}` probes); **related** = facts of the most popular world entities, which the model "
        f"read in pretraining (relations kept apart: {rel}). The lab injects no new facts about known entities, so "
        f"\"related\" is the model's own world knowledge, not newly acquired related knowledge as in the paper. At most "
        f"{conf['examples']} examples per task. Faithfulness = (m(circuit) − m(corrupted)) / (m(clean) − m(corrupted)) with m "
        f"the target logit (example-weighted over a split's tasks); Hit@10 = target in the top 10 with everything outside the "
        f"circuit patched to its corrupted value (model: the unpatched model); Jaccard with the final circuit's nodes / edges; "
        f"heads counted as mover / relation / mixed by their direct logit attribution from subject vs relation tokens (ratio 10).\n")
    for s in SPLITS:
        if result["splits"][s]["skipped"]:
            add(f"- Split **{s}** not measured: {result['splits'][s]['skipped']}.")
    measured = _measured(result)
    if measured:
        fig_main, fig_shift = figures_dir / "circuits.png", figures_dir / "circuits_shift.png"
        plot_circuits([{"model": c["label"], "revision": None, "step": c["step"],
                        "tasks": [{"task": s, **c["splits"][s]} for s in measured]} for c in result["checkpoints"]],
                      str(fig_main))
        _shift_figure(result, fig_shift)
        rel_dir = figures_dir.name
        add(f"\n![circuit metrics per checkpoint]({rel_dir}/{fig_main.name})\n\n![circuit change and layer shift]({rel_dir}/{fig_shift.name})\n")
        add("| step | checkpoint | split | tasks (examples) | faithfulness | Hit@10 circuit | Hit@10 model | node J final | "
            "edge J final | edge J previous | lower-half share | heads mover/relation/mixed |")
        add("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for c in result["checkpoints"]:
            for s in measured:
                v = c["splits"][s]
                roles = "/".join(str(v["role_counts"][r]) for r in ROLES)
                add(f"| {c['step']} | {c['label']} | {s} | {v['tasks']} ({v['examples']}) | {_f(v['faithfulness'])} | "
                    f"{_f(v['hit_at_10'])} | {_f(v['hit_at_10_clean'])} | {_f(v['node_jaccard'])} | {_f(v['edge_jaccard'])} | "
                    f"{_f(v['edge_jaccard_prev'])} | {_f(v['lower_half_share'])} | {roles} |")
        errors = [(c["label"], t["task"], t["error"]) for c in result["checkpoints"] for s in measured
                  for t in c["splits"][s]["per_task"] if "error" in t]
        for label, task, err in errors:
            add(f"- {label}, task {task}: not analysed ({err}).")
    add("\n| Finding (Ou et al. 2025) | Verdict here | Numbers |")
    add("|---|---|---|")
    for f in result["findings"].values():
        add(f"| {f['finding']} | **{f['verdict']}** | {f['detail']} |")
    add("\nVerdict rules: (1) held if at the final checkpoint the related split's circuit beats the new split's on both "
        "Hit@10 and faithfulness; (2) held if the last checkpoint before final is closer (edge Jaccard) to the final circuit "
        "than the start is, and the circuit changes more per step in the first half of the run than in the second; (3) held "
        f"if the share of circuit edges into the lower half of layers (0-{result['layers'] // 2 - 1}) is larger at the final checkpoint than at "
        "the start. Findings 2 and 3 average the measured splits; one run, no significance test.\n")
    for f in result["findings"].values():
        if f["verdict"] == NOT_HELD:
            add(f"- \"{f['finding']}\" did not reproduce in this lab run ({f['detail']}).")
        elif f["verdict"] == UNMEASURABLE:
            add(f"- \"{f['finding']}\" could not be measured here ({f['detail']}).")
    add("")
    return "\n".join(L) + "\n"
