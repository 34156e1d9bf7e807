"""The lab report: `report.md`, PNG figures and `results.json`, every number from this run's stages.

`write_report(run, sections, timings)` reads the typed results of the core stages (`LabRun`: one
`SeedRun` per pretraining seed, the study's unit), computes the gates before any verdict and the
findings through them (`judge/findings.py`), and appends each optional study's `Section` (its
markdown before the timings, its results under its key). The report opens with what this design
can test (`report/gates.py`).
"""

from __future__ import annotations

import math
from pathlib import Path

from kentropy.io import write_atomic, write_json
from kentropy.lab.config import config_json
from kentropy.lab.judge import stats as analysis
from kentropy.lab.judge.deviations import RULES
from kentropy.lab.judge.findings import core_plan, finding_1, finding_3, findings_2, pilot_estimates, can_test
from kentropy.lab.judge.gates import knowledge_gate, regime_gate
from kentropy.lab.judge.paper import IMPLIED, PAPER_REFERENCE, last_layer_text, scale_text
from kentropy.lab.judge.plan import FINDINGS
from kentropy.lab.report.figures import cmap, save, subplots
from kentropy.lab.report.gates import DEMO, gates_markdown, testable_markdown
from kentropy.lab.report.loop import floor_text
from kentropy.lab.report.fmt import fmt, fmt_ci
from kentropy.lab.results import LabRun, Section, SeedRun
from kentropy.lab.text.tasks import METRICS, downstream_floor

PAPER_CONTINUAL_LR = 4e-4  # the paper continued OLMo-1B at 4e-4, OLMo-1B's own pretraining peak


def _mean(xs: list) -> float | None:
    return None if any(x is None for x in xs) else sum(xs) / len(xs)


def seed_record(sr: SeedRun, cfg) -> dict:
    """One pretraining seed's entropy trajectory, its continual rows (per starting checkpoint, means over the
    continual seeds, with the standard error of F from the downstream rows) and its resuscitations (per p, the
    resuscitated runs against the plain final checkpoint's, after continual learning)."""
    res = sorted(sr.entropy, key=lambda r: r["step"])
    by_step = {r["step"]: r for r in res}
    rows = []
    for c in sr.starts:
        runs = [sr.continual[(c.step, s)].summary for s in cfg.seeds]
        row = {"step": c.step, "knowledge_entropy": by_step[c.step]["knowledge_entropy"]}
        for key in ("A", "F", "P_before", "P_after", "D_before", "D_after"):
            row[key + "_seeds"] = [r[key] for r in runs]
            row[key] = _mean(row[key + "_seeds"])
        row["dP"] = row["P_after"] - row["P_before"]
        ses = [analysis.forgetting_se(r["downstream_before"], r["downstream_after"]) if r["F"] is not None else None for r in runs]
        row["F_se_seeds"] = ses
        row["F_se_paired_seeds"] = [None if se is None else analysis.paired_rows(r["downstream_before"], r["downstream_after"])
                                    for se, r in zip(ses, runs)]
        row["F_se"] = _mean(ses)
        rows.append(row)
    final = sr.pretraining.final.step
    base = {k: _mean([sr.continual[(final, s)].summary[k] for s in cfg.seeds]) for k in ("A", "F", "P_after", "D_after")}
    resus = []
    for p, r in sorted(sr.resuscitated.items()):
        got = {k: _mean([r.runs[s].summary[k] for s in cfg.seeds]) for k in ("A", "F", "P_after", "D_after")}
        resus.append({"seed": sr.seed, "amplify": p, "H_before": r.report["knowledge_entropy_before"],
                      "H_after": r.report["knowledge_entropy_after"], **got,
                      **{f"delta_{k}": None if got[k] is None or base[k] is None else got[k] - base[k] for k in got}})
    return {"seed": sr.seed, "steps": [r["step"] for r in res],
            "knowledge_entropy": [r["knowledge_entropy"] for r in res],
            "knowledge_entropy_per_layer": [r["knowledge_entropy_per_layer"] for r in res],
            "attention_entropy": [r["attention_entropy"] for r in res], "next_token_entropy": [r["next_token_entropy"] for r in res],
            "instances": res[0]["instances"], "tokens": res[0]["tokens"], "loss": sr.pretraining.loss,
            "entropy_trend": analysis.entropy_trend([r["step"] for r in res], [r["knowledge_entropy"] for r in res]),
            "continual": rows, "base_A": base["A"], "base_F": base["F"], "base_P_after": base["P_after"],
            "base_D_after": base["D_after"], "resuscitation": resus}


def across(seeds: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per starting checkpoint and per amplification: each quantity's mean and 95% t-interval over pretraining seeds."""
    cont = []
    for i, row in enumerate(seeds[0]["continual"]):
        out = {"step": row["step"]}
        for key in ("knowledge_entropy", "A", "F", "dP", "P_before", "P_after", "D_before", "D_after", "F_se"):
            vals = [s["continual"][i][key] for s in seeds]
            out[key] = analysis.mean_ci(vals) if all(v is not None for v in vals) else None
            out[key + "_seeds"] = vals
        cont.append(out)
    resus = []
    for i, r in enumerate(seeds[0]["resuscitation"]):
        out = {"amplify": r["amplify"]}
        for key in ("H_before", "H_after", "A", "F", "P_after", "D_after"):
            vals = [s["resuscitation"][i][key] for s in seeds]
            out[key] = analysis.mean_ci(vals) if all(v is not None for v in vals) else None
            out[key + "_seeds"] = vals
        resus.append(out)
    return cont, resus


def figures(fig_dir: Path, seeds: list[dict], resus: list[dict]) -> dict:
    out = {}
    colors = cmap("viridis")
    col = lambda i: colors(i / max(1, len(seeds) - 1))  # noqa: E731

    fig, ax = subplots(1, 2, figsize=(11, 3.8))
    for i, s in enumerate(seeds):
        ax[0].plot(s["steps"], s["knowledge_entropy"], marker="o", color=col(i), label=f"seed {s['seed']}")
        ax[1].plot(s["knowledge_entropy_per_layer"][-1], marker=".", color=col(i), label=f"seed {s['seed']}, final")
    ax[0].set(title="Knowledge entropy (sum over layers)", xlabel="pretraining step", ylabel="H(θ)")
    ax[1].set(title="Knowledge entropy per layer, final checkpoint", xlabel="layer", ylabel="H_l(θ)")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    out["entropy"] = save(fig, fig_dir / "entropy.png")

    fig, ax = subplots(1, 3, figsize=(13, 3.6))
    for i, s in enumerate(seeds):
        ax[0].plot(s["steps"], s["attention_entropy"], marker="o", color=col(i))
        ax[1].plot(s["steps"], s["next_token_entropy"], marker="o", color=col(i))
        ax[2].plot([x for x, _ in s["loss"]], [v for _, v in s["loss"]], lw=0.8, color=col(i))
    ax[0].set(title="Attention entropy", xlabel="pretraining step")
    ax[1].set(title="Next-token entropy", xlabel="pretraining step")
    ax[2].set(title="Pretraining loss", xlabel="step", yscale="log")
    fig.tight_layout()
    out["attention"] = save(fig, fig_dir / "attention_next_token.png")

    fig, ax = subplots(1, 2, figsize=(11, 3.6))
    for k, key in enumerate(("A", "F")):
        for i, s in enumerate(seeds):
            h = [r["knowledge_entropy"] for r in s["continual"]]
            ys = [r[key] if r[key] is not None else float("nan") for r in s["continual"]]
            ax[k].plot(h, ys, marker="o", color=col(i), label=f"seed {s['seed']}")
            if key == "F":
                ax[k].errorbar(h, ys, yerr=[r["F_se"] or 0 for r in s["continual"]], fmt="none", color=col(i), capsize=3)
        ax[k].set(xlabel="knowledge entropy of the starting checkpoint", ylabel=f"{key} (%)",
                  title=f"{'Acquisition A' if key == 'A' else 'Forgetting F (± se)'} per pretraining seed")
        ax[k].legend(fontsize=7)
    fig.tight_layout()
    out["scatter"] = save(fig, fig_dir / "entropy_vs_AF.png")

    if resus:
        fig, ax = subplots(1, 2, figsize=(11, 3.6))
        labels = ["none"] + [f"P={r['amplify']:g}" for r in resus]
        for k, key in enumerate(("A", "F")):
            base = [s["base_" + key] for s in seeds]
            if any(v is None for v in base) or any(r[key] is None for r in resus):
                continue
            ax[k].bar(labels, [sum(base) / len(base)] + [r[key]["mean"] for r in resus], color="tab:green" if key == "A" else "tab:olive")
            for j, vals in enumerate([base] + [r[key + "_seeds"] for r in resus]):
                ax[k].scatter([j] * len(vals), vals, color="k", s=10, zorder=3)
            ax[k].set(title=f"{key} (%) of the final checkpoint, resuscitated")
        fig.tight_layout()
        out["resuscitation"] = save(fig, fig_dir / "resuscitation.png")
    return out


SLOPE_NAMES = {"2a": "slope_A_on_step", "2b": "slope_F_on_step", "2c": "slope_A_on_H", "2d": "slope_F_on_H", "2e": "slope_dP_on_H"}


def judge_core(run: LabRun, seeds: list[dict]) -> tuple[dict, list[dict]]:
    """The core study's gates (computed first), findings and testable table."""
    cfg = run.cfg
    pilot = cfg.pilot_plan()
    starts = [{"seed": sr.seed, "start": f"step {c.step}", "downstream": sr.continual[(c.step, cfg.seeds[0])].summary["downstream_before"]}
              for sr in (run.seeds[s] for s in cfg.pretrain_seeds) for c in sr.starts]
    knowledge = knowledge_gate([x for x in starts if x["downstream"]], run.world["task_metadata"], cfg.head_band)
    g1, f1 = finding_1(seeds, layers=cfg.layers, ffn_dim=cfg.ffn, steps=run.pretraining.steps, plan=core_plan(cfg.decay_sesoi),
                       pilot=pilot, regime=regime_gate(**run.regime))
    per_seed = [{"step": [r["step"] for r in s["continual"]], "H": [r["knowledge_entropy"] for r in s["continual"]],
                 **{k: [r[k] for r in s["continual"]] for k in ("A", "F", "dP")}} for s in seeds]
    g2, f2 = findings_2(per_seed, list(SLOPE_NAMES), layers=cfg.layers, steps=run.pretraining.steps, pilot=pilot, knowledge=knowledge)
    g3, f3 = finding_3([r for s in seeds for r in s["resuscitation"]], layers=cfg.layers, pilot=pilot, knowledge=knowledge)
    gates = {"1": g1, **g2, **g3}
    verdicts = {"1": (f1["verdict"], f1["why"]), **{k: (v["verdict"], v["why"]) for k, v in f2.items()},
                "3a": (f3["verdict_A"], f3["why_A"]), "3b": (f3["verdict_F"], f3["why_F"])}
    findings = {"entropy_decay": {"per_seed": [s["entropy_trend"] for s in seeds], "across_seeds": f1, "verdict": f1["verdict"],
                                  "why": f1["why"]},
                "acquisition_forgetting": {**{SLOPE_NAMES[k]: v for k, v in f2.items()},
                                           "verdict_step_A": f2["2a"]["verdict"], "verdict_step_F": f2["2b"]["verdict"],
                                           "verdict_A": f2["2c"]["verdict"], "verdict_F": f2["2d"]["verdict"],
                                           "verdict_dP": f2["2e"]["verdict"], "paper": dict(IMPLIED)},
                "resuscitation": f3}
    estimates = pilot_estimates(cfg.pretrain_seeds, {"1": f1, **f2, "3a": f3, "3b": f3},
                                f"kentropy lab --preset {run.preset} (this run's seeds; fill in the run and commit)")
    return {"gates": gates, "findings": findings, "pilot_estimates": estimates}, can_test(gates, verdicts)


def write_report(run: LabRun, sections: list[Section], timings: dict[str, dict]) -> dict:
    """report.md, figures/ and results.json in the lab directory; returns the results.
    timings: wall time per stage that ran (the cache's), as of the end of the run."""
    cfg = run.cfg
    fig_dir = run.dir.figures
    fig_dir.mkdir(parents=True, exist_ok=True)
    seeds = [seed_record(run.seeds[s], cfg) for s in cfg.pretrain_seeds]
    cont, resus = across(seeds)
    judged, table = judge_core(run, seeds)
    measured = [(x, paired) for s in seeds for r in s["continual"] for x, paired in zip(r["F_se_seeds"], r["F_se_paired_seeds"])
                if x is not None]
    ses = [x for x, _ in measured]
    f_se = {"mean": sum(ses) / len(ses) if ses else None, "max": max(ses, default=None), "runs": len(ses),
            "tasks_per_kind": cfg.tasks_per_kind, "rows": sum(m["rows"] for m in run.world["task_metadata"].values()),
            **analysis.forgetting_se_method([paired for _, paired in measured])}
    figs = figures(fig_dir, seeds, resus)

    d_before = [x for s in seeds for r in s["continual"] for x in r["D_before_seeds"] if x is not None]
    floor = downstream_floor(run.world["task_metadata"])
    knowledge = analysis.against_floor(d_before, floor["prior_guess_D"]) if d_before else None
    deviations = list(RULES) + (list(cfg.decay.deviations) if cfg.decay else [])
    results = {
        "preset": run.preset, "config": config_json(cfg), "timings": timings, "world": run.world.get("world"),
        "testable": table, "gates": judged["gates"], "deviations": deviations, "regime": run.regime,
        "plan": core_plan(cfg.decay_sesoi).to_json(), "pilot": cfg.pilot, "pilot_estimates": judged["pilot_estimates"],
        "paper_reference": dict(PAPER_REFERENCE),
        "lr": {"pretraining_peak": cfg.lr, "continual": run.continual_config["lr"], "paper_continual": PAPER_CONTINUAL_LR},
        "seeds": seeds, "continual": cont, "resuscitation": resus, "forgetting_se": f_se,
        "downstream_floor": floor, "downstream_knowledge": knowledge, "findings": judged["findings"],
    }
    for section in sections:
        results[section.key] = section.results
    write_json(run.dir.results, run.dir.stored(results))  # paths in the lab relative to it

    md = _markdown(run, seeds, cont, resus, results, figs, sections, timings)
    write_atomic(run.dir.report, lambda tmp: tmp.write_text(md))
    return results


def schedule_text(lr: float, warmup: float, schedule: str, min_lr_ratio: float, weight_decay: float, steps: int,
                  decay_fraction: float | None = None) -> str:
    """The learning-rate schedule and weight decay of a `kentropy train` config, in words."""
    warm = round(warmup * steps)
    after = {"cosine": f"cosine decay to {min_lr_ratio:g} × lr = {lr * min_lr_ratio:.3g}",
             "constant": "constant",
             "wsd": f"constant, then linear decay to {min_lr_ratio:g} × lr = {lr * min_lr_ratio:.3g} over the last "
                    f"{decay_fraction if decay_fraction is not None else '-'} of the steps"}[schedule]
    warm_text = f"linear warmup from 0.1 × lr over the first {warm} of {steps} steps" if warm else f"no warmup step (of {steps})"
    return (f"AdamW at peak lr {lr:g}, {warm_text}, then {after}; "
            f"weight decay {weight_decay:g} on weight matrices (not embeddings, norms or biases)")


def _paper_slope(key: str) -> str:
    """The paper's direction and its implied size in words (Table 2 and the Fig. 7 fall)."""
    what = {"2a": f"negative; A {IMPLIED['A_per_fraction']:+.1f} points per fraction of training",
            "2b": f"positive; F {IMPLIED['F_per_fraction']:+.1f} points per fraction of training",
            "2c": f"positive (r = 0.94); A {-IMPLIED['A_per_kl']:+.0f} points per nat of H per layer, at least",
            "2d": f"negative (r = −0.96); F {-IMPLIED['F_per_kl']:+.0f} points per nat of H per layer, at least",
            "2e": "positive; no size given"}
    return what[key]


def _final_kl(seeds: list[dict], cfg) -> float:
    """KL to uniform per layer at the final checkpoint, ln m − H / L, the mean over seeds."""
    return math.log(cfg.ffn) - sum(s["knowledge_entropy"][-1] for s in seeds) / len(seeds) / cfg.layers


def _ci(c: dict | None, digits: int = 3) -> str:
    """mean [lo, hi] of a {"mean", "ci"} record (ci None: one seed)."""
    if c is None or c.get("mean") is None:
        return "-"
    ci = c.get("ci")
    return f"{c['mean']:.{digits}g}" + (f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]" if ci else "")


def _slope_cell(s: dict) -> str:
    if s["per_seed"] is None:
        return "-"
    per = ", ".join(f"{x:.3g}" for x in s["per_seed"])
    paper = "no paper-implied size" if s["paper_effect"] is None else f"paper-implied at least {s['paper_effect']:+.3g}"
    return f"mean slope {_ci(s)} {s['units']}, p = {fmt(s['p'])} over {s['seeds']} seed(s) (per seed: {per}); {paper}"


def _verdict(v: str, why: str | None) -> str:
    return f"**{v}**" + (f" ({why})" if why else "")


def _resuscitation_cell(f3: dict, key: str) -> str:
    """Per p: the seeds where H rose, the effect over them with its interval, and the absolute effect beside it."""
    name, absolute = ("A", "P_after") if key == "3a" else ("F", "D_after")
    cells = []
    for e in f3["by_amplify"]:
        part = e[key]
        counted = ", ".join(map(str, e["counted_seeds"])) or "none"
        rel, ab = part.get(name), part.get(absolute)
        paper = "-" if part["paper_effect"] is None else f"{part['paper_effect']:+.3g}"
        nums = (f"Δ{name} {_ci(rel)}, p = {fmt(rel['p'])}; Δ{absolute} {_ci(ab)}, p = {fmt(ab['p'])}" if rel and ab else "-")
        cells.append(f"p = {e['amplify']:g}: H rose in seed(s) {counted}; {nums}; paper-implied Δ{name} at least {paper}: "
                     f"{part['verdict']}")
    return "<br>".join(cells)


def _markdown(run: LabRun, seeds, cont, resus, results, figs, sections, timings) -> str:
    cfg, pre, cc = run.cfg, run.pretraining, run.continual_config
    f = results["findings"]
    decay, corr, helps, f_se, knowledge = (f["entropy_decay"], f["acquisition_forgetting"], f["resuscitation"],
                                           results["forgetting_se"], results["downstream_knowledge"])
    L = []
    add = L.append
    total = sum(t["seconds"] for t in timings.values())
    interval = cfg.continual_steps // cfg.injection_rounds
    n = len(seeds)
    demo = run.preset == DEMO
    add(f"# kentropy lab report (preset `{run.preset}`)\n")
    add("## What this design can test\n")
    add("Each finding's gates (below) were computed before any verdict: where one failed, the finding is not judged. "
        + ("The demo is sized for ten minutes; the findings it cannot test are tested by `make decay`, the lab's design for "
           "them (as far as its own gates pass).\n" if demo else "\n"))
    study = next((x.results for x in sections if x.key == "decay_study"), None)
    if study is not None:  # the study this lab runs for the findings comes first; the core study is its scaffolding
        add("The decay study (its gates and numbers in its section below):\n")
        L.extend(testable_markdown(study["testable"], False))
        add(f"\nThe core study ({n} pretraining seed(s), the decay study's scaffolding):\n")
    L.extend(testable_markdown(results["testable"], demo))
    add("")
    add(f"{n} pretraining seed(s) ({', '.join(str(s) for s in cfg.pretrain_seeds)}), the study's unit: each a "
        f"{cfg.layers}-layer, width-{cfg.hidden} Llama-style (SwiGLU) model from its own initialization, pretrained on a "
        f"generated world of {cfg.entities} entities, read in its own order, for {pre.steps} steps of {cfg.batch_size} × "
        f"{cfg.seq_len} tokens ({pre.steps * cfg.batch_size * cfg.seq_len:,} tokens, "
        f"{run.regime['tokens_per_parameter']:.3g} per non-embedding parameter, Σ lr·wd {run.regime['cumulative_weight_decay']:.3g}; "
        f"{'a single pass over fresh text' if cfg.repeat == 1 else f'{cfg.repeat} passes over the same text'}): "
        f"{schedule_text(cfg.lr, cfg.warmup, cfg.schedule, cfg.min_lr_ratio, cfg.weight_decay, pre.steps)}.\n")
    add(f"Continual learning from {len(cont)} checkpoints of each seed, {len(cfg.seeds)} continual seed(s) each, on the "
        f"{'new-domain' if cfg.continual_domain == 'new' else 'near-domain'} corpus: {cc['steps']} steps of "
        f"{cc['batch_size']} × {cc['seq_len']} tokens (no longer than the {cfg.seq_len}-token rows of pretraining: every "
        f"position was trained), "
        f"{schedule_text(cc['lr'], cc['warmup'], cc['schedule'], cc['min_lr_ratio'], cc['weight_decay'], cc['steps'], cc.get('decay_fraction'))}. "
        f"Continual peak lr {cc['lr']:g} against the pretraining peak lr {cfg.lr:g} (the paper continued OLMo-1B at "
        f"{PAPER_CONTINUAL_LR:g}, its own pretraining peak). "
        f"Fictional knowledge ({cfg.knowledge_paraphrase} paraphrase + {cfg.knowledge_once} once entries, "
        f"{'every fact' if cfg.knowledge_facts is None else f'{cfg.knowledge_facts} facts'} per passage) is injected in "
        f"{cfg.injection_rounds} rounds, round r in step {interval} × r − 1 (the last on the final step), each passage + eos "
        f"prepended to its own row: a round fills up to {cfg.injected_rows} of {cc['batch_size']} rows "
        f"({cfg.injected_rows / cc['batch_size']:.0%}; the paper: 76 of 128, 59%).\n")
    add(f"Recorded stage wall time in this lab directory: {total:.0f} s (table at the end). "
        "Every number below was measured in this lab directory's runs.\n")

    add("## Gates\n")
    L.extend(gates_markdown(results["gates"]))
    add("")
    add("**Changed after a run was seen** (rules added after results were seen, listed so that a reader can tell them "
        "from those fixed before):\n")
    L.extend(f"- {d}" for d in results["deviations"])
    add("")

    add("## Findings\n")
    add("The unit is the pretraining seed: each finding is computed per seed, then tested across seeds. A trend over the "
        "checkpoints of one run is not a replication: with one seed a verdict is at best **inconclusive**.\n")
    add("| Finding (paper) | Paper | Here | Verdict |")
    add("|---|---|---|---|")
    a = decay["across_seeds"]
    ref = PAPER_REFERENCE
    per_seed = "; ".join(f"seed {s['seed']}: ρ = {fmt(d['spearman']['rho'], 2)}" for s, d in zip(seeds, decay["per_seed"]))
    last = a["last_layer"]
    add(f"| 1. {FINDINGS['1']} | OLMo-1B: a whole-run fall of at most {ref['whole_run_fall_nats']} nats, ≤ "
        f"{ref['delta_kl_per_layer']:.3f} KL nats per layer (Fig. 7 axis); the second-half share not given; largest in the last "
        f"layer (Fig. 8) | "
        f"ΔKL per layer, H at step {a['from_step']} − H at step {a['to_step']} over L: {_ci(a)} over {n} seed(s); "
        f"p (direction) = {fmt(a['p_direction'])}, p (≥ SESOI {cfg.decay_sesoi:g}) = {fmt(a['p_minimum_effect'])}, "
        f"p (within ±{cfg.decay_sesoi:g}) = {fmt(a['p_equivalence'])}; {a['paper']['text']}. "
        + (f"Last layer alone: ΔKL {_ci(last)}; {last_layer_text(cfg.layers)}. " if last else "")
        + f"Spearman ρ over each seed's checkpoints (description, not a test): {per_seed} | {_verdict(decay['verdict'], decay['why'])} |")
    for key, name in SLOPE_NAMES.items():
        add(f"| {key}. {FINDINGS[key]} | {_paper_slope(key)} | {_slope_cell(corr[name])} | "
            f"{_verdict(corr[name]['verdict'], corr[name]['why'])} |")
    for key, v, why in (("3a", helps["verdict_A"], helps["why_A"]), ("3b", helps["verdict_F"], helps["why_F"])):
        paper = "ΔA > 0" if key == "3a" else "ΔF < 0"
        add(f"| {key}. {FINDINGS[key]} (and {'P' if key == '3a' else 'D'} after continual learning not lower) | {paper} | "
            f"{_resuscitation_cell(helps, key)} | {_verdict(v, why)} |")
    add("\nVerdicts (one ladder for the whole lab): **decayed** / **rose** = a significant direction (two-sided, Holm across "
        "the family); **decayed, at least the SESOI** = also significantly above the SESOI (minimum-effect test); **no decay** "
        "= equivalent to 0 within ±SESOI (TOST); **held** = significant in the paper's direction; **direction only** = so, "
        "but its interval lies wholly short of the paper-implied effect; **did not hold** = significant the other way, or an "
        "interval that excludes the paper-implied effect; **inconclusive** = neither (an underpowered null, or one seed); "
        "**not measurable** / **not tested** = a gate failed (the reason beside it); **not measured** = not measured in this "
        "run. A gain from an edit needs both its relative (A, F) and its absolute (P, D after continual learning) effect.\n")
    add(f"Paper-implied effects (lower bounds, {'; '.join(IMPLIED['assumptions'])}).\n")

    add("## 1. Entropy over pretraining\n")
    add(f"![knowledge entropy]({figs['entropy']})\n")
    add(f"![attention and next-token entropy]({figs['attention']})\n")
    add("| step | " + " | ".join(f"H seed {s['seed']}" for s in seeds) + " | attention H (mean) | next-token H (mean) |")
    add("|---" * (len(seeds) + 3) + "|")
    for i, step in enumerate(seeds[0]["steps"]):
        hs = " | ".join(fmt(s["knowledge_entropy"][i], 4) for s in seeds)
        att = sum(s["attention_entropy"][i] for s in seeds) / n
        nxt = sum(s["next_token_entropy"][i] for s in seeds) / n
        add(f"| {step} | {hs} | {fmt(att, 4)} | {fmt(nxt, 4)} |")
    add(f"\nMaximum possible knowledge entropy: L ln m = {cfg.layers} × ln {cfg.ffn} = {cfg.layers * math.log(cfg.ffn):.4f}. "
        f"Measured on {seeds[0]['instances']} held-out world documents ({seeds[0]['tokens']} tokens). "
        f"Finding 1's plan, fixed by the config: ΔKL per layer between {a['from_step']} and {a['to_step']} "
        f"(50% and 100% of pretraining), unit the pretraining seed, SESOI {cfg.decay_sesoi:g}, α {results['plan']['alpha']:g}. "
        f"KL to uniform at the final checkpoint, mean over seeds: {scale_text(_final_kl(seeds, cfg))}.\n")

    add("## 2. Continual knowledge learning from each checkpoint\n")
    add(f"![entropy vs A and F]({figs['scatter']})\n")
    add("| start step | knowledge H | A (%) | F (%) | se of F (%) | P before → after | D before → after |")
    add("|---|---|---|---|---|---|---|")
    for r in cont:
        m = lambda k: r[k]["mean"] if r[k] else None  # noqa: E731
        add(f"| {r['step']} | {fmt_ci(r['knowledge_entropy'], 4)} | {fmt_ci(r['A'])} | {fmt_ci(r['F']) if r['F'] else '-'} | "
            f"{fmt(m('F_se'), 1)} | {fmt(m('P_before'))} → {fmt(m('P_after'))} | {fmt(m('D_before'))} → {fmt(m('D_after'))} |")
    metrics = ", ".join(f"{t} ({METRICS.get(t.removeprefix('lab_'), 'acc')})" for t in run.world["tasks"])
    if knowledge:
        add("\n" + floor_text(knowledge))
    add("\nA = (P_after − P_before) / |P_before| × 100 with P the mean log-probability per target token of the "
        "mem/gen/hard_gen probes; F = (D_before − D_after) / D_before × 100 with D the mean over the lab's downstream "
        f"tasks of each task's metric: {metrics}, run through lm-evaluation-harness. Intervals are 95% t-intervals over "
        "pretraining seeds.\n")
    below = f_se["mean"] is not None and f_se["max"] < 2
    add(f"Standard error of F from the downstream rows ({f_se['tasks_per_kind']} rows per task, {f_se['rows']} in all): "
        f"{fmt(f_se['mean'], 2)} points on average over {f_se['runs']} runs, at most {fmt(f_se['max'], 2)} "
        f"({'below' if below else 'not below'} 2 points), the **{f_se['estimate']}** estimate. Each task's score is a mean of "
        "0/1 outcomes over its rows and D the mean over tasks; F's standard error follows by the "
        f"{f_se['method']}.\n")

    add("## 3. Resuscitation of the final checkpoint\n")
    if "resuscitation" in figs:
        add(f"![resuscitation]({figs['resuscitation']})\n")
    add(f"Neurons at or below the {cfg.resuscitate_ratio} quantile of each layer's Cbar scaled by mean/Cbar × P (up-projection "
        f"rows), over the grid of p {', '.join(f'{p:g}' for p in helps['grid'])} (the paper's grid "
        f"{', '.join(f'{p:g}' for p in helps['paper_grid'])} {'covered' if helps['covers_paper_grid'] else 'NOT covered'}). "
        "A p counts only in the seeds where the knowledge entropy measured after it (held-out text) is higher than before. "
        "Where Cbar is near uniform (low KL to uniform), doubling the bottom half can push it past the rest and lower H.\n")
    add("| seed | P | H before → after | H rose | A (%) | F (%) | P after | D after | ΔA | ΔF | ΔP after | ΔD after |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in seeds:
        add(f"| {s['seed']} | none | - | - | {fmt(s['base_A'], 2)} | {fmt(s['base_F'], 2)} | {fmt(s['base_P_after'])} | "
            f"{fmt(s['base_D_after'])} | - | - | - | - |")
        for r in s["resuscitation"]:
            add(f"| {s['seed']} | {r['amplify']:g} | {fmt(r['H_before'], 4)} → {fmt(r['H_after'], 4)} | "
                f"{'yes' if r['H_after'] > r['H_before'] else 'no'} | {fmt(r['A'], 2)} | {fmt(r['F'], 2)} | {fmt(r['P_after'])} | "
                f"{fmt(r['D_after'])} | {fmt(r['delta_A'], 2)} | {fmt(r['delta_F'], 2)} | {fmt(r['delta_P_after'])} | "
                f"{fmt(r['delta_D_after'])} |")
    add("")
    estimates = results["pilot_estimates"]
    add("Between-seed spread this run measured, in the shape of a preset's `pilot` (for the pilot of another run; a run's own "
        f"spread is no pilot of itself): " + ("; ".join(f"{k}: sd {v:.4g}" for k, v in estimates["sd"].items()) or "none") + ".\n")

    for section in sections:
        add(section.markdown)

    add("## Stage timings\n")
    add("| stage | seconds |")
    add("|---|---|")
    for name, t in timings.items():
        add(f"| {name} | {t['seconds']:.1f} |")
    add("\nConfig: `lab_config.json`; all numbers: `results.json`.\n")
    return "\n".join(L) + "\n"
