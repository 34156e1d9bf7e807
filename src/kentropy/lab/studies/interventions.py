"""Plasticity interventions compared in one protocol: which restores what a late checkpoint lost?

    kentropy lab --preset interventions --out lab-iv/      # quick + the `interventions:` section (`make interventions`)

From the final checkpoint of every pretraining seed of the core model (the unit; and of every seed of each
decay-study arm whose verdict says it decayed, when the decay study runs in the same lab or in `--decay-lab`),
the lab's continual-learning stage (the official protocol, the lab's continual seeds, averaged within a
pretraining seed) runs after each method:

- none: the checkpoint as it is (the core's own run from it, reused);
- Algorithm 1 (`kentropy resuscitate`, ratio `resuscitate_ratio`, P = `amplify`; the core's runs, reused);
- ReDo and shrink-and-perturb (`kentropy intervene`), edits applied once before training;
- rehearsal (train's --replay: rows of the world's pretraining stream, never injected rows), HFT
  (--freeze-half) and continual ReDo (--recycle-every), methods of the training itself.

Knowledge entropy is measured on the held-out world documents (the measuring data of the core
study) for the starting checkpoint, after every edit, and at the end of every continual run.
The gates come first: each method's manipulation per pretraining seed (`check`: an edit must raise H, continual
ReDo must recycle neurons; rehearsal and HFT move nothing measured before their outcome), and the knowledge gate
(D before continual learning above the prior-only floor) for the retention measures. The comparison (`compare`,
pure) pairs each method with no intervention and with Algorithm 1 by pretraining seed, over the seeds where its
manipulation passed: on A and F, and on the absolute P and D after continual learning, each with a paired
t-test, Holm-adjusted across the methods. A gain in acquisition needs both A and P after (`acquisition`), in
retention both F and D after (`retention`): an edit that damages the model can raise A against its own lowered
start and lower F, while it ends with a lower P and D.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from kentropy.errors import KentropyError
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import InterventionsConfig, LabConfig
from kentropy.lab.judge import stats
from kentropy.lab.judge.gates import blocked, knowledge_gate, not_applicable
from kentropy.lab.judge.seeds import holm, p_two_sided, t_interval
from kentropy.lab.judge.verdicts import DECAY, HELD, NOT_MEASURED, effect_verdict, weaker
from kentropy.lab.labdir import LabDir, slug
from kentropy.lab.report.interventions import interventions_section
from kentropy.lab.results import Context, Section
from kentropy.lab.stages.continual import check_knowledge_fits, continual_stage
from kentropy.lab.stages.resuscitate import resuscitate_stage
from kentropy.lab.studies.decay import run_decay_study
from kentropy.training.rundir import RunDir

NONE, ALGORITHM_1 = "none", "Algorithm 1"
EDITS = ("ReDo", "shrink-perturb")
TRAINING = ("rehearsal", "HFT", "continual ReDo")
METHODS = (NONE, ALGORITHM_1, *EDITS, *TRAINING)
ALPHA = 0.05
BETTER = {"A": 1, "F": -1, "P_after": 1, "D_after": 1}  # the better direction: more acquisition, less forgetting
GAINS = {"acquisition": ("A", "P_after"), "retention": ("F", "D_after")}  # a gain needs the relative and the absolute measure
MEASURE_BATCH = 16


@dataclass
class Start:
    """A checkpoint the comparison starts from: the final one of a pretraining seed of the core model, or of a decayed arm."""

    name: str  # the group its seeds are compared in: "core model", "decay arm NAME"
    seed: int  # its pretraining seed (the unit)
    step: int
    path: str
    hash: str  # the start's part of the continual stages' cache key (as the core and the loop give it)
    prefix: str  # the continual stages' label prefix ("" for the core, "decay-ARM-" for an arm)
    pre: Done  # its pretraining stage


def training_options(icfg: InterventionsConfig, replay: str) -> dict[str, dict]:
    """TrainConfig fields of each training-time method; rehearsal replays `replay` (the world's pretraining stream)."""
    return {"rehearsal": {"replay": replay, "replay_fraction": icfg.replay_fraction},
            "HFT": {"freeze_half": True},
            "continual ReDo": {"recycle_every": icfg.recycle_every, "threshold": icfg.redo_threshold}}


def edit_params(icfg: InterventionsConfig) -> dict[str, dict]:
    """`kentropy intervene`'s method and options of each edit."""
    return {"ReDo": {"method": "redo", "threshold": icfg.redo_threshold},
            "shrink-perturb": {"method": "shrink-perturb", "shrink": icfg.shrink, "perturb": icfg.perturb}}


def entropy_stage(stages: Stages, name: str, path: str, path_hash: str, corpora: Done, cfg: LabConfig, device: str) -> Done:
    """H (and H per layer) of one checkpoint on the held-out world documents, as the core's measure stage takes them."""
    conf = {"model": path_hash, "corpora": corpora.hash, "seq_len": cfg.seq_len, "batch_size": MEASURE_BATCH}

    def fn(d: Path) -> dict:
        from kentropy.measurement.documents import load_texts
        from kentropy.measurement.workflow import measure_ids, tokenize
        from kentropy.models.loading import ModelRef, load_model, load_tokenizer, pick_device

        tok = load_tokenizer(ModelRef(path))
        ids = tokenize(tok, load_texts(corpora.result["measure"]), cfg.seq_len)
        model = load_model(ModelRef(path), device=pick_device(device))
        m = measure_ids(model, ids, tok.pad_token_id if tok.pad_token_id is not None else 0, batch_size=MEASURE_BATCH,
                        name=path, progress=False)
        return {"path": path, "knowledge_entropy": m.knowledge_entropy, "knowledge_entropy_per_layer": m.knowledge_entropy_per_layer}

    return stages.run(name, conf, fn, code=("kentropy.measurement.workflow", "kentropy.measurement.capture", "kentropy.measurement.entropy"))


def edit_stage(stages: Stages, start: Start, method: str, params: dict, seed: int, corpora: Done, cfg: LabConfig,
               device: str) -> Done:
    """`kentropy intervene` on the start (H before and after on the held-out world documents). A threshold that selects
    no neuron (or a whole layer) is not an error of the lab: the result says so ("error"), and no model is written."""
    from kentropy.edits.intervene import InterveneConfig, run_intervene

    conf = {"start": start.hash, "corpora": corpora.hash, "params": params, "seed": seed, "seq_len": cfg.seq_len}

    def fn(d: Path) -> dict:
        icfg = InterveneConfig(model=start.path, out=str(d / "model"), data=corpora.result["measure"], seq_len=cfg.seq_len,
                               batch_size=MEASURE_BATCH, seed=seed, overwrite=True, device=device, **params)
        try:
            report = run_intervene(icfg)
        except KentropyError as e:
            if params["method"] != "redo":
                raise
            return {"path": None, "report": None, "error": str(e)}
        return {"path": str(d / "model"), "report": report, "error": None}

    return stages.run(f"intervene-{slug(method)}-{start.prefix}step{start.step}", conf, fn,
                      code=("kentropy.edits.intervene", "kentropy.edits.redo", "kentropy.edits.shrink_perturb", "kentropy.edits.session", "kentropy.edits.resuscitate",
                            "kentropy.models.neurons", "kentropy.models.parameters", "kentropy.measurement.workflow"))


def run_start(stages: Stages, cfg: LabConfig, start: Start, world: Done, corpora: Done, replay: str, device: str) -> dict:
    """Every method from one start: the continual runs per seed, H at the start, after each edit and at each run's end."""
    icfg = cfg.interventions
    h_start = entropy_stage(stages, f"entropy-{start.prefix}step{start.step}", start.path, start.hash, corpora, cfg,
                            device).result["knowledge_entropy"]
    # method -> (starting model path, its hash, its label, train options, edit record)
    plans: dict[str, tuple] = {NONE: (start.path, start.hash, f"{start.prefix}step{start.step}", None, None)}
    r = resuscitate_stage(stages, cfg, start.path, start.pre, corpora, icfg.amplify, device, name=f"resuscitate-{start.prefix}P{icfg.amplify:g}")
    rep = r.result["report"]
    plans[ALGORITHM_1] = (r.result["path"], r.hash, f"{start.prefix}resuscitated-P{icfg.amplify:g}", None,
                          {"before": rep["knowledge_entropy_before"], "after": rep["knowledge_entropy_after"], "error": None,
                           "params": {"ratio": cfg.resuscitate_ratio, "amplify": icfg.amplify}})
    for method, params in edit_params(icfg).items():
        e = edit_stage(stages, start, method, params, icfg.seed, corpora, cfg, device)
        rep = e.result["report"] or {}
        plans[method] = (e.result["path"], e.hash, f"{start.prefix}intervened-{slug(method)}", None,
                         {"before": rep.get("knowledge_entropy_before", h_start), "after": rep.get("knowledge_entropy_after"),
                          "error": e.result["error"], "params": rep.get("params", params)})
    for method, options in training_options(icfg, replay).items():
        plans[method] = (start.path, start.hash, f"{start.prefix}{slug(method)}", options, None)

    out = {}
    for method in METHODS:
        path, h, label, options, edit = plans[method]
        runs = []
        if path is not None:  # an edit that was not applied has no runs
            for seed in cfg.seeds:
                done = continual_stage(stages, cfg, path, h, label, seed, world, corpora, device, train_options=options)
                final = done.result["checkpoints"][-1]
                hf = entropy_stage(stages, f"entropy-{label}-seed{seed}", final, done.hash, corpora, cfg, device).result
                s = done.result["summary"]
                runs.append({"seed": seed, "A": s["A"], "F": s["F"], "P_after": s["P_after"], "D_after": s["D_after"],
                             "knowledge_entropy_final": hf["knowledge_entropy"], "plasticity": s.get("plasticity"),
                             "downstream_before": s["downstream_before"]})
        out[method] = {"train_options": options, "edit": edit, "runs": runs}
    return {"name": start.name, "seed": start.seed, "step": start.step, "path": start.path, "knowledge_entropy_start": h_start,
            "methods": out}


def paired(values: list[float], reference: list[float]) -> dict:
    """The paired difference d_s = values_s − reference_s over seeds: its mean, 95% t-interval and the two-sided paired
    t-test p (t = mean(d) / (sd(d) / √n), n − 1 degrees of freedom); interval and p are null for one seed."""
    d = [a - b for a, b in zip(values, reference)]
    return {"differences": d, "mean": sum(d) / len(d), "ci": t_interval(d), "p": p_two_sided(d)}


def check(method: str, edit: dict | None, runs: list[dict]) -> dict:
    """One pretraining seed's manipulation check of `method`, against what it targets: an edit (Algorithm 1, ReDo,
    shrink-perturb) must raise the H measured after it above the H before it (an edit not applied fails); continual
    ReDo must recycle neurons during training; none, rehearsal and HFT move nothing measured before their outcome."""
    if edit is not None:
        if edit["after"] is None:
            return {"applies": True, "target": "H after the edit above H before", "passed": False,
                    "why": edit["error"] or "H after the edit was not measured"}
        rose = edit["after"] > edit["before"]
        return {"applies": True, "target": "H after the edit above H before", "H_before": edit["before"], "H_after": edit["after"],
                "passed": rose, "why": None if rose else "the edit did not raise the measured H"}
    counts = [recycled(r["plasticity"]) for r in runs]
    if any(c is not None for c in counts):
        moved = all(c for c in counts)
        return {"applies": True, "target": "neurons recycled during training", "recycled": counts, "passed": moved,
                "why": None if moved else "a run recycled no neuron"}
    return not_applicable(f"{method} moves nothing measured before its outcome")


def seed_values(raw: dict) -> dict[str, dict]:
    """One start's methods (`run_start`) as one record per method for its pretraining seed: A, F, P after and D after as
    means over the continual seeds, H at the end likewise, the manipulation check and the edit's H."""
    out = {}
    for name, m in raw["methods"].items():
        runs = m["runs"]
        mean = {k: None if not runs or any(r[k] is None for r in runs) else sum(r[k] for r in runs) / len(runs)
                for k in (*BETTER, "knowledge_entropy_final")}
        out[name] = {"seed": raw["seed"], **mean, "manipulation": check(name, m["edit"], runs),
                     "recycled_neurons": [recycled(r["plasticity"]) for r in runs]}
    return out


def _verdict(d: dict | None, metric: str, p_holm: float | None, gates: dict) -> str:
    stop = blocked(gates)
    if stop:
        return stop[0]
    if d is None:
        return NOT_MEASURED
    return effect_verdict(d["mean"], d["ci"], p_holm, BETTER[metric], None, ALPHA)


def compare(methods: dict[str, list[dict]], knowledge: dict) -> dict:
    """Per method (METHODS order; each a list of per pretraining seed records {"seed", "A", "F", "P_after", "D_after",
    "manipulation"}): its gates (manipulation over the seeds, `counted_seeds` where it passed; `knowledge` for F and D
    after), each metric's mean with a t-interval over the counted seeds, the paired difference from `none` and from
    Algorithm 1 over the seeds counted in both, Holm across the methods judged, the verdicts per metric
    (`effect_verdict`, the better direction, no paper size) and per gain (`acquisition`: the weaker of A and P after;
    `retention`: of F and D after), and which methods beat each reference (`beat`: the gains `held`)."""
    rows = {}
    for name, recs in methods.items():
        checks = {str(r["seed"]): r["manipulation"] for r in recs}
        counted = [r for r in recs if r["manipulation"]["passed"]]
        applies = any(c.get("applies", True) for c in checks.values())
        manipulation = {"applies": applies, "per_seed": checks, "passed": bool(counted),
                        "why": None if counted else "the manipulation passed in no pretraining seed"}
        row = {"seeds": [r["seed"] for r in recs], "counted_seeds": [r["seed"] for r in counted], "manipulation": manipulation,
               "gates": {"knowledge": knowledge, "power": not_applicable("the paper gives no size for these methods: the ladder "
                                                                          "reads no null as did not hold"),
                         "manipulation": manipulation}}
        for metric in BETTER:
            vals = [r[metric] for r in counted]
            row[metric] = {"seeds": vals, **(stats.mean_ci(vals) if vals and None not in vals else
                                             {"mean": None, "lo": None, "hi": None, "n": len(vals)})}
        rows[name] = row
    out = {"methods": rows, "beat": {}}
    for ref, key in ((NONE, "vs_none"), (ALGORITHM_1, "vs_algorithm_1")):
        others = [n for n in methods if n not in (NONE, ref)]
        ref_by_seed = {r["seed"]: r for r in methods[ref] if r["manipulation"]["passed"]}
        for metric in BETTER:
            diffs, gates = {}, {}
            for n in others:
                pairs = [(r[metric], ref_by_seed[r["seed"]][metric]) for r in methods[n]
                         if r["manipulation"]["passed"] and r["seed"] in ref_by_seed]
                ok = pairs and all(a is not None and b is not None for a, b in pairs)
                diffs[n] = paired([a for a, _ in pairs], [b for _, b in pairs]) if ok else None
                g = rows[n]["gates"]
                gates[n] = {**g, "knowledge": g["knowledge"] if metric in GAINS["retention"] else not_applicable(
                    "acquisition needs no prior knowledge")}
            # the family: the methods judged (a gate failed, or no values: not)
            family = [n for n in others if not blocked(gates[n]) and diffs[n] is not None and diffs[n]["p"] is not None]
            adjusted = dict(zip(family, holm([diffs[n]["p"] for n in family])))
            for n in others:
                d = diffs[n]
                entry = {} if d is None else {**d, "p_holm": adjusted.get(n)}
                rows[n].setdefault(key, {})[metric] = {**entry, "verdict": _verdict(d, metric, adjusted.get(n), gates[n])}
        for n in others:
            for gain, metrics in GAINS.items():
                rows[n][key][gain] = weaker(*[rows[n][key][m]["verdict"] for m in metrics])
        out["beat"][key] = {gain: [n for n in others if rows[n][key][gain] == HELD] for gain in GAINS}
    return out


def recycled(plasticity: dict | None) -> int | None:
    """Neurons a run recycled in all (continual ReDo; None for a run that does not recycle)."""
    if not plasticity or not plasticity.get("recycle_every"):
        return None
    return sum(r["neurons"] for r in plasticity["recycled"])


def decay_lab_arms(lab_dir: str) -> list[dict]:
    """`decay_study.arms` of a finished decay-study lab directory (its results.json); an error naming the directory
    where there is none."""
    import json

    path = LabDir(lab_dir).results
    try:
        study = json.loads(path.read_text()).get("decay_study")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KentropyError(f"--decay-lab {lab_dir}: cannot read {path} ({e.__class__.__name__}): not a finished lab directory") from None
    if not study or not study.get("arms"):
        raise KentropyError(f"--decay-lab {lab_dir}: {path} holds no decay study (run kentropy lab --preset decay there first)")
    return study["arms"]


def pretraining_of(checkpoint: str) -> Done:
    """The lab pretraining stage whose run (`RunDir`) saved `checkpoint`, as its result.json gives it."""
    import json

    ckpt = Path(checkpoint)
    run = RunDir(ckpt.parent.parent)
    stage = run.root.parent
    if ckpt.parent != run.checkpoints or not (stage / "result.json").is_file():
        raise KentropyError(f"--decay-lab: {checkpoint} is not a checkpoint of a finished pretraining stage")
    return Done(json.loads((stage / "result.json").read_text()), stage, stage.name)


def decayed_arms(ctx: Context) -> tuple[list[Start], str | None]:
    """The final checkpoints of every seed of the decay study's arms whose verdict says H fell (`decayed` or `decayed, at
    least the SESOI`): the study of this lab, else of `interventions.decay_lab`; else none, and why."""
    cfg = ctx.run.cfg
    if cfg.decay is not None:
        study, pretrains = run_decay_study(ctx.stages, cfg, cfg.decay, ctx.device)  # every stage cached by the study's own run
        arms = study["arms"]
        where = "this lab's decay study"
    elif cfg.interventions.decay_lab:
        arms = decay_lab_arms(cfg.interventions.decay_lab)
        pretrains = {(a["name"], s["seed"]): pretraining_of(paths[-1]) for a in arms if a.get("verdict") in DECAY
                     for s, paths in zip(a["seeds"], a["checkpoints"])}
        where = f"the decay study of {cfg.interventions.decay_lab}"
    else:
        return [], "the decay study did not run in this lab: no decayed arm to start from"
    starts = []
    for arm in arms:
        if arm.get("verdict") not in DECAY:
            continue
        for s in arm["seeds"]:
            pre = pretrains[(arm["name"], s["seed"])]
            final = pre.result["checkpoints"][-1]
            starts.append(Start(f"decay arm {arm['name']}", s["seed"], final["step"], final["path"], f"{pre.hash}/{final['step']}",
                                f"decay-{slug(arm['name'])}-seed{s['seed']}-", pre))
    return starts, None if starts else f"no arm of {where} has a verdict that says H fell ({' or '.join(DECAY)})"


def interventions_study(ctx: Context) -> Section:
    """Every method from the final checkpoint of every pretraining seed of the core (and of the decayed arms), compared
    over those seeds on H, A, F, P after and D after."""
    from kentropy.lab.studies.core import pretrain_text_tokens

    cfg, stages = ctx.run.cfg, ctx.stages
    corpora, world = ctx.done["corpora"], ctx.done["world"]
    replay = corpora.result["pretrain"][str(pretrain_text_tokens(cfg))]["path"]  # the world's stream, as pretraining read it
    starts = [Start("core model", seed, sr.pretraining.final.step, sr.pretraining.final.path,
                    f"{sr.pretrain.hash}/{sr.pretraining.final.step}", f"pre{seed}-", sr.pretrain)
              for seed, sr in ctx.run.seeds.items()]
    arms, note = decayed_arms(ctx)
    for start in arms:  # every injected passage fits the lab's continual rows in the arm's own tokens, before any training
        try:
            check_knowledge_fits(cfg, world, Done({"path": start.path}, Path(start.path), start.hash))
        except KentropyError as e:
            raise KentropyError(f"interventions from {start.name} seed {start.seed}: {e}") from None
    result = {"params": dataclasses.asdict(cfg.interventions), "algorithm_1": {"ratio": cfg.resuscitate_ratio},
              "seeds": list(cfg.seeds), "replay": replay, "alpha": ALPHA, "decay_arms_note": note, "starts": []}
    groups: dict[str, list[dict]] = {}
    for start in starts + arms:
        groups.setdefault(start.name, []).append(run_start(stages, cfg, start, world, corpora, replay, ctx.device))
    for name, raws in groups.items():
        knowledge = knowledge_gate([{"seed": r["seed"], "start": name, "downstream": r["methods"][NONE]["runs"][0]["downstream_before"]}
                                    for r in raws if r["methods"][NONE]["runs"]], world.result["task_metadata"], cfg.head_band)
        for r in raws:
            for m in r["methods"].values():
                for run in m["runs"]:
                    run.pop("downstream_before")
        values = [seed_values(r) for r in raws]
        judged = compare({m: [v[m] for v in values] for m in METHODS}, knowledge)
        methods = []
        for m in METHODS:
            edits = [r["methods"][m]["edit"] or {} for r in raws]
            row = judged["methods"][m]
            methods.append({"method": m, "params": edits[0].get("params") or raws[0]["methods"][m]["train_options"],
                            "knowledge_entropy_start": [r["knowledge_entropy_start"] for r in raws],
                            "knowledge_entropy_before_edit": [e.get("before") for e in edits],
                            "knowledge_entropy_after_edit": [e.get("after") for e in edits],
                            "knowledge_entropy_final": [v[m]["knowledge_entropy_final"] for v in values],
                            "recycled_neurons": [v[m]["recycled_neurons"] for v in values], **row})
        result["starts"].append({"name": name, "seeds": [r["seed"] for r in raws], "step": raws[0]["step"],
                                 "paths": [r["path"] for r in raws], "knowledge_entropy": [r["knowledge_entropy_start"] for r in raws],
                                 "knowledge": knowledge, "methods": methods, "beat": judged["beat"]})
    return Section("interventions", interventions_section(result), result)
