"""Plasticity interventions compared in one protocol: which restores what a late checkpoint lost?

    kentropy lab --preset interventions --out lab-iv/      # quick + the `interventions:` section (`make interventions`)

From the final checkpoint of the core model (and of every decay-study arm whose verdict is
`decayed`, when the decay study runs in the same lab), the lab's continual-learning stage (the
official protocol, the lab's continual seeds) runs after each method:

- none: the checkpoint as it is (the core's own run from it, reused);
- Algorithm 1 (`kentropy resuscitate`, ratio `resuscitate_ratio`, P = `amplify`; the core's runs, reused);
- ReDo and shrink-and-perturb (`kentropy intervene`), edits applied once before training;
- rehearsal (train's --replay: rows of the world's pretraining stream, never injected rows), HFT
  (--freeze-half) and continual ReDo (--recycle-every), methods of the training itself.

Knowledge entropy is measured on the held-out world documents (the measuring data of the core
study) for the starting checkpoint, after every edit, and at the end of every continual run.
The comparison's statistics are `compare` (pure): per method A and F with 95% t-intervals over
seeds, the paired difference from no intervention and from Algorithm 1 with a paired t-test,
Holm-adjusted across the methods. An edit whose H after is not above H before is `not tested`:
its outcome is reported, not judged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from kentropy.errors import KentropyError
from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import InterventionsConfig, LabConfig
from kentropy.lab.judge import stats
from kentropy.lab.judge.manipulation import raised_entropy
from kentropy.lab.judge.seeds import DECAYED, holm, p_two_sided, t_interval
from kentropy.lab.judge.verdicts import NOT_MEASURED, NOT_TESTED, verdict
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
BETTER = {"A": 1, "F": -1}  # the direction that is better: more acquisition, less forgetting
MEASURE_BATCH = 16


@dataclass
class Start:
    """A checkpoint the comparison starts from: the core model's final one, or a decayed arm's."""

    name: str
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
        from kentropy.models.loading import Checkpoint, load_model, load_tokenizer, pick_device

        tok = load_tokenizer(Checkpoint(path))
        ids = tokenize(tok, load_texts(corpora.result["measure"]), cfg.seq_len)
        model = load_model(Checkpoint(path), device=pick_device(device))
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
                      code=("kentropy.edits.intervene", "kentropy.edits.redo", "kentropy.edits.shrink_perturb", "kentropy.edits.session", "kentropy.measurement.workflow"))


def run_start(stages: Stages, cfg: LabConfig, start: Start, world: Done, corpora: Done, replay: str, device: str) -> dict:
    """Every method from one start: the continual runs per seed, H at the start, after each edit and at each run's end."""
    icfg = cfg.interventions
    h_start = entropy_stage(stages, f"entropy-{start.prefix}step{start.step}", start.path, start.hash, corpora, cfg,
                            device).result["knowledge_entropy"]
    # method -> (starting model path, its hash, its label, train options, edit record)
    plans: dict[str, tuple] = {NONE: (start.path, start.hash, f"{start.prefix}step{start.step}", None, None)}
    r = resuscitate_stage(stages, cfg, start.path, start.pre, corpora, icfg.amplify, device)
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
                runs.append({"seed": seed, "A": s["A"], "F": s["F"], "knowledge_entropy_final": hf["knowledge_entropy"],
                             "plasticity": s.get("plasticity")})
        out[method] = {"train_options": options, "edit": edit, "runs": runs}
    return {"name": start.name, "step": start.step, "path": start.path, "knowledge_entropy_start": h_start, "methods": out}


def paired(values: list[float], reference: list[float]) -> dict:
    """The paired difference d_s = values_s − reference_s over seeds: its mean, 95% t-interval and the two-sided paired
    t-test p (t = mean(d) / (sd(d) / √n), n − 1 degrees of freedom); interval and p are null for one seed."""
    d = [a - b for a, b in zip(values, reference)]
    return {"differences": d, "mean": sum(d) / len(d), "ci": t_interval(d), "p": p_two_sided(d)}


def judge(diff: dict | None, metric: str, p_holm: float | None, tested: bool) -> str:
    """Does the method beat the reference on `metric`? `held`: better (A higher, F lower) with Holm-adjusted p < α;
    `direction only`: better, not significantly (or one seed); `did not hold`: not better; `not tested`: the edit did
    not raise H; `not measured`: A or F missing."""
    if not tested:
        return NOT_TESTED
    if diff is None:
        return NOT_MEASURED
    return verdict(diff["mean"] * BETTER[metric] > 0, p_holm is not None and p_holm < ALPHA)


def manipulation(edit: dict | None) -> dict | None:
    """An edit's check: did H measured after it rise above H before it? (None for a method that edits nothing.)"""
    if edit is None:
        return None
    if edit["after"] is None:
        return {"raised_entropy": False, "note": edit["error"] or "H after the edit was not measured"}
    return {"raised_entropy": raised_entropy(edit["before"], edit["after"]), "note": edit["error"]}


def compare(methods: dict[str, dict]) -> dict:
    """Per method (METHODS order; each {"runs": [{"A", "F", ...}], "edit"}): A and F with t-intervals, the paired
    difference from `none` and from Algorithm 1 with Holm across the compared methods, a verdict per metric, and which
    methods beat each reference (verdict `held`)."""
    rows = {}
    for name, m in methods.items():
        check = manipulation(m["edit"])
        row = {"manipulation": check, "tested": check is None or check["raised_entropy"],
               "seeds": [r["seed"] for r in m["runs"]]}
        for metric in ("A", "F"):
            vals = [r[metric] for r in m["runs"]]
            row[metric] = {"seeds": vals, **(stats.mean_ci(vals) if vals and None not in vals else {"mean": None, "lo": None, "hi": None, "n": len(vals)})}
        rows[name] = row
    out = {"methods": rows, "beat": {}}
    for ref, key in ((NONE, "vs_none"), (ALGORITHM_1, "vs_algorithm_1")):
        others = [n for n in methods if n not in (NONE, ref)]
        out["beat"][key] = {}
        for metric in ("A", "F"):
            ref_vals = rows[ref][metric]["seeds"]
            diffs = {}
            for n in others:
                vals = rows[n][metric]["seeds"]
                ok = vals and ref_vals and None not in vals and None not in ref_vals and len(vals) == len(ref_vals)
                diffs[n] = paired(vals, ref_vals) if ok else None
            # the family: the methods judged (an edit that did not raise H, or with no values, is not)
            family = [n for n in others if rows[n]["tested"] and diffs[n] is not None]
            adjusted = dict(zip(family, holm([diffs[n]["p"] for n in family])))
            for n in others:
                d = diffs[n]
                entry = {} if d is None else {**d, "p_holm": adjusted.get(n)}
                rows[n].setdefault(key, {})[metric] = {**entry, "verdict": judge(d, metric, adjusted.get(n), rows[n]["tested"])}
            out["beat"][key][metric] = [n for n in others if rows[n][key][metric]["verdict"] == "held"]
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
    """The decay study's arms whose verdict is `decayed` (their first seed's final checkpoint): the study of this
    lab, else of `interventions.decay_lab`; else none, and why."""
    cfg = ctx.run.cfg
    if cfg.decay is not None:
        study, pretrains = run_decay_study(ctx.stages, cfg, cfg.decay, ctx.device)  # every stage cached by the study's own run
        arms = study["arms"]
        where = "this lab's decay study"
    elif cfg.interventions.decay_lab:
        arms = decay_lab_arms(cfg.interventions.decay_lab)
        pretrains = {(a["name"], a["seeds"][0]["seed"]): pretraining_of(a["checkpoints"][0][-1]) for a in arms}
        where = f"the decay study of {cfg.interventions.decay_lab}"
    else:
        return [], "the decay study did not run in this lab: no decayed arm to start from"
    starts = []
    for arm in arms:
        if arm.get("verdict") != DECAYED:
            continue
        pre = pretrains[(arm["name"], arm["seeds"][0]["seed"])]
        final = pre.result["checkpoints"][-1]
        starts.append(Start(f"decay arm {arm['name']}", final["step"], final["path"], f"{pre.hash}/{final['step']}",
                            f"decay-{slug(arm['name'])}-", pre))
    return starts, None if starts else f"no arm of {where} has the verdict {DECAYED!r}: none decayed"


def interventions_study(ctx: Context) -> Section:
    """Every method from the core's final checkpoint (and the decayed arms'), compared on H, A and F."""
    from kentropy.lab.studies.core import pretrain_text_tokens

    cfg, stages = ctx.run.cfg, ctx.stages
    corpora, world, pre = ctx.done["corpora"], ctx.done["world"], ctx.done["pretrain"]
    replay = corpora.result["pretrain"][str(pretrain_text_tokens(cfg))]["path"]  # the world's stream, as pretraining read it
    final = ctx.run.pretraining.final
    starts = [Start("core model", final.step, final.path, f"{pre.hash}/{final.step}", "", pre)]
    arms, note = decayed_arms(ctx)
    for start in arms:  # every injected passage fits the lab's continual rows in the arm's own tokens, before any training
        try:
            check_knowledge_fits(cfg, world, Done({"path": start.path}, Path(start.path), start.hash))
        except KentropyError as e:
            raise KentropyError(f"interventions from {start.name}: {e}") from None
    result = {"params": dataclasses.asdict(cfg.interventions), "algorithm_1": {"ratio": cfg.resuscitate_ratio},
              "seeds": list(cfg.seeds), "replay": replay, "alpha": ALPHA, "decay_arms_note": note, "starts": []}
    for start in starts + arms:
        raw = run_start(stages, cfg, start, world, corpora, replay, ctx.device)
        judged = compare(raw["methods"])
        methods = []
        for name in METHODS:
            m, row = raw["methods"][name], judged["methods"][name]
            edit = m["edit"] or {}
            methods.append({"method": name, "params": edit.get("params") or m["train_options"],
                            "knowledge_entropy_start": raw["knowledge_entropy_start"],
                            "knowledge_entropy_before_edit": edit.get("before"), "knowledge_entropy_after_edit": edit.get("after"),
                            "knowledge_entropy_final": [r["knowledge_entropy_final"] for r in m["runs"]],
                            "recycled_neurons": [recycled(r["plasticity"]) for r in m["runs"]], **row})
        result["starts"].append({"name": raw["name"], "step": raw["step"], "path": raw["path"],
                                 "knowledge_entropy": raw["knowledge_entropy_start"], "methods": methods, "beat": judged["beat"]})
    return Section("interventions", interventions_section(result), result)
