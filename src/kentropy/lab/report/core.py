"""The lab report: `report.md`, PNG figures and `results.json`, every number from this run's stages.

`write_report(run, sections, timings)` reads the typed results of the core stages (`LabRun`: one
`SeedRun` per pretraining seed, the study's unit) and appends each optional study's `Section` (its
markdown before the timings, its results under its key).
"""

from __future__ import annotations

import math
from pathlib import Path

from kentropy.io import write_atomic, write_json
from kentropy.lab.config import config_json
from kentropy.lab.judge import stats as analysis
from kentropy.lab.judge.seeds import PAPER_REFERENCE
from kentropy.lab.judge.verdicts import DID_NOT_HOLD
from kentropy.lab.report.figures import cmap, save, subplots
from kentropy.lab.report.loop import floor_text
from kentropy.lab.report.fmt import fmt, fmt_ci
from kentropy.lab.results import LabRun, Section, SeedRun
from kentropy.lab.text.tasks import METRICS, downstream_floor

PAPER_CONTINUAL_LR = 4e-4  # the paper continued OLMo-1B at 4e-4, OLMo-1B's own pretraining peak


def _mean(xs: list) -> float | None:
    return None if any(x is None for x in xs) else sum(xs) / len(xs)


def seed_record(sr: SeedRun, cfg) -> dict:
    """One pretraining seed's entropy trajectory, its continual rows (per starting checkpoint, means over the
    continual seeds, with the standard error of F from the downstream rows) and its resuscitations."""
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
    base_A = _mean([sr.continual[(final, s)].A for s in cfg.seeds])
    base_F = _mean([sr.continual[(final, s)].F for s in cfg.seeds])
    resus = []
    for p, r in sorted(sr.resuscitated.items()):
        A, F = _mean([r.runs[s].A for s in cfg.seeds]), _mean([r.runs[s].F for s in cfg.seeds])
        resus.append({"seed": sr.seed, "amplify": p, "H_before": r.report["knowledge_entropy_before"],
                      "H_after": r.report["knowledge_entropy_after"], "A": A, "F": F, "delta_A": A - base_A,
                      "delta_F": None if F is None or base_F is None else F - base_F})
    return {"seed": sr.seed, "steps": [r["step"] for r in res],
            "knowledge_entropy": [r["knowledge_entropy"] for r in res],
            "knowledge_entropy_per_layer": [r["knowledge_entropy_per_layer"] for r in res],
            "attention_entropy": [r["attention_entropy"] for r in res], "next_token_entropy": [r["next_token_entropy"] for r in res],
            "instances": res[0]["instances"], "tokens": res[0]["tokens"], "loss": sr.pretraining.loss,
            "entropy_decay": analysis.entropy_decay([r["step"] for r in res], [r["knowledge_entropy"] for r in res]),
            "continual": rows, "base_A": base_A, "base_F": base_F, "resuscitation": resus}


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
        for key in ("H_before", "H_after", "A", "F"):
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


def write_report(run: LabRun, sections: list[Section], timings: dict[str, dict]) -> dict:
    """report.md, figures/ and results.json in the lab directory; returns the results.
    timings: wall time per stage that ran (the cache's), as of the end of the run."""
    cfg = run.cfg
    fig_dir = run.dir.figures
    fig_dir.mkdir(parents=True, exist_ok=True)
    seeds = [seed_record(run.seeds[s], cfg) for s in cfg.pretrain_seeds]
    cont, resus = across(seeds)
    plan = analysis.core_plan(cfg)
    decay = {"per_seed": [s["entropy_decay"] for s in seeds],
             "across_seeds": analysis.decay_across_seeds(seeds, cfg.layers, cfg.ffn, run.pretraining.steps, plan)}
    decay["verdict"] = decay["across_seeds"]["verdict"]
    corr = analysis.findings_2([{k: [r[k] for r in s["continual"]] for k in ("step", "knowledge_entropy", "A", "F", "dP")}
                                for s in seeds])
    helps = analysis.resuscitation_findings([{k: r[k] for k in ("seed", "amplify", "H_before", "H_after", "delta_A", "delta_F")}
                                             for s in seeds for r in s["resuscitation"]])
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
    results = {
        "preset": run.preset, "config": config_json(cfg), "timings": timings, "world": run.world.get("world"),
        "plan": plan.to_json(), "lr": {"pretraining_peak": cfg.lr, "continual": run.continual_config["lr"],
                                       "paper_continual": PAPER_CONTINUAL_LR},
        "seeds": seeds, "continual": cont, "resuscitation": resus, "forgetting_se": f_se,
        "downstream_floor": floor, "downstream_knowledge": knowledge,
        "findings": {"entropy_decay": decay, "acquisition_forgetting": corr, "resuscitation": helps},
    }
    for section in sections:
        results[section.key] = section.results
    write_json(run.dir.results, run.dir.stored(results))  # paths in the lab relative to it

    md = _markdown(run, seeds, cont, resus, decay, corr, helps, f_se, knowledge, figs, sections, timings)
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


def _ci(c: dict | None, digits: int = 3) -> str:
    """mean [lo, hi] of a {"mean", "ci"} record (ci None: one seed)."""
    if c is None or c.get("mean") is None:
        return "-"
    ci = c.get("ci")
    return f"{c['mean']:.{digits}g}" + (f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]" if ci else "")


def _slope_cell(s: dict, unit: str) -> str:
    if s["per_seed"] is None:
        return "-"
    per = ", ".join(f"{x:.3g}" for x in s["per_seed"])
    return f"mean slope {_ci(s)} {unit}, p = {fmt(s['p'])} over {s['seeds']} seed(s) (per seed: {per})"


def _markdown(run: LabRun, seeds, cont, resus, decay, corr, helps, f_se, knowledge, figs, sections, timings) -> str:
    cfg, pre, cc = run.cfg, run.pretraining, run.continual_config
    L = []
    add = L.append
    total = sum(t["seconds"] for t in timings.values())
    interval = cfg.continual_steps // cfg.injection_rounds
    n = len(seeds)
    add(f"# kentropy lab report (preset `{run.preset}`)\n")
    add(f"{n} pretraining seed(s) ({', '.join(str(s) for s in cfg.pretrain_seeds)}), the study's unit: each a "
        f"{cfg.layers}-layer, width-{cfg.hidden} Llama-style (SwiGLU) model from its own initialization, pretrained on a "
        f"generated world of {cfg.entities} entities, read in its own order, for {pre.steps} steps of {cfg.batch_size} × "
        f"{cfg.seq_len} tokens ({pre.steps * cfg.batch_size * cfg.seq_len:,} tokens, "
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

    add("## Findings\n")
    add("The unit is the pretraining seed: each finding is computed per seed, then tested across seeds. A trend over the "
        "checkpoints of one run is not a replication: with one seed a verdict is at best **inconclusive**.\n")
    add("| Finding (paper) | Paper | Here | Verdict |")
    add("|---|---|---|---|")
    a = decay["across_seeds"]
    per_seed = "; ".join(f"seed {s['seed']}: {d['verdict']} (ρ = {fmt(d['spearman']['rho'], 2)})"
                         for s, d in zip(seeds, decay["per_seed"]))
    add(f"| 1. Knowledge entropy decays during pretraining | OLMo-1B: ΔKL ≤ {PAPER_REFERENCE['delta_kl_per_layer']:.3f} nats per layer | "
        f"ΔKL per layer, H at step {a['from_step']} − H at step {a['to_step']} over L: {_ci(a)} over {n} seed(s); "
        f"p(decay) = {fmt(a['p_decay'])}, p(within ±{cfg.decay_sesoi:g}) = {fmt(a['p_equivalence'])}; {a['paper']['text']}. "
        f"Per seed (Spearman ρ over checkpoints): {per_seed} | **{decay['verdict']}** |")
    rows2 = (("2a. Later checkpoints acquire less: slope of A on step", "negative", "slope_A_on_step", "%/step"),
             ("2b. Later checkpoints forget more: slope of F on step", "positive", "slope_F_on_step", "%/step"),
             ("2c. Acquisition follows knowledge entropy: slope of A on H", f"positive (r = {analysis.PAPER['r_entropy_A']})",
              "slope_A_on_H", "%/nat"),
             ("2d. Forgetting follows it inversely: slope of F on H", f"negative (r = {analysis.PAPER['r_entropy_F']})",
              "slope_F_on_H", "%/nat"),
             ("2e. Raw probe gain ΔP = P_after − P_before on H", "positive", "slope_dP_on_H", "per nat"))
    for title, paper, key, unit in rows2:
        add(f"| {title} | {paper} | {_slope_cell(corr[key], unit)} | **{corr[key]['verdict']}** |")
    for key, title, paper in (("A", "3a. Resuscitation of the final checkpoint raises acquisition A", "ΔA > 0"),
                              ("F", "3b. Resuscitation of the final checkpoint lowers forgetting F", "ΔF < 0")):
        cells = []
        for e in helps["by_amplify"]:
            hs = [r for r in helps["resuscitation"] if r["amplify"] == e["amplify"]]
            h = "; ".join(f"seed {r['seed']} H {fmt(r['H_before'], 4)} → {fmt(r['H_after'], 4)}" for r in hs)
            if e[f"verdict_{key}"] == "not tested":
                cells.append(f"P={e['amplify']:g}: not tested, H did not rise in seed(s) "
                             f"{', '.join(str(s) for s in e['untested_seeds'])} ({h}); Δ{key} per seed "
                             + ", ".join(fmt(r[f'delta_{key}'], 2) for r in hs))
            else:
                d = e[f"delta_{key}"]
                cells.append(f"P={e['amplify']:g} ({h}): Δ{key} {_ci(d)}" + (f", p = {fmt(d['p'])}" if d else ""))
        add(f"| {title} | {paper} | {'<br>'.join(cells)} | **{helps['verdict_' + key]}** |")
    add("\nVerdicts: **held** = the paper's direction across pretraining seeds, significant at 0.05; **direction only** = "
        "the direction, not significant; **did not hold** = the other direction or no change; **inconclusive** = one seed, or neither "
        "decay nor equivalence shown; **decayed** / **no decay** / **rose** = finding 1's one-sided t-test, TOST against "
        f"±{cfg.decay_sesoi:g} KL nats per layer, and an interval wholly below 0; **not tested** = resuscitation did not "
        "raise the measured knowledge entropy, so its effect on A and F says nothing about the paper's claim.\n")
    for name, v in (("Finding 2a", corr["slope_A_on_step"]["verdict"]), ("Finding 2b", corr["slope_F_on_step"]["verdict"]),
                    ("Finding 2c", corr["slope_A_on_H"]["verdict"]), ("Finding 2d", corr["slope_F_on_H"]["verdict"]),
                    ("Finding 3a", helps["verdict_A"]), ("Finding 3b", helps["verdict_F"])):
        if v == DID_NOT_HOLD:
            add(f"- {name} did not reproduce in this lab run; the numbers are in the table above and the sections below.")
    add("")

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
        f"(50% and 100% of pretraining), unit the pretraining seed, SESOI {cfg.decay_sesoi:g}, α {analysis.ALPHA}.\n")

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
        "rows). Its outcome is judged only where the knowledge entropy measured after it (held-out text) is higher than before.\n")
    add("| seed | P | H before → after | H rose | A (%) | F (%) | ΔA | ΔF |")
    add("|---|---|---|---|---|---|---|---|")
    for s in seeds:
        add(f"| {s['seed']} | none | - | - | {fmt(s['base_A'], 2)} | {fmt(s['base_F'], 2)} | - | - |")
        for r in s["resuscitation"]:
            t = next(x for x in helps["resuscitation"] if x["seed"] == r["seed"] and x["amplify"] == r["amplify"])
            add(f"| {s['seed']} | {r['amplify']:g} | {fmt(r['H_before'], 4)} → {fmt(r['H_after'], 4)} | "
                f"{'yes' if t['tested'] else 'no'} | {fmt(r['A'], 2)} | {fmt(r['F'], 2)} | {fmt(r['delta_A'], 2)} | {fmt(r['delta_F'], 2)} |")
    add("")

    for section in sections:
        add(section.markdown)

    add("## Stage timings\n")
    add("| stage | seconds |")
    add("|---|---|")
    for name, t in timings.items():
        add(f"| {name} | {t['seconds']:.1f} |")
    add("\nConfig: `lab_config.json`; all numbers: `results.json`.\n")
    return "\n".join(L) + "\n"
