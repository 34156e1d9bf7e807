"""The lab report: `report.md`, PNG figures and `results.json`, every number from this run's stages.

`write_report(run, sections, timings)` reads the typed results of the core stages (`LabRun`) and appends
each optional study's `Section` (its markdown before the timings, its results under its key).
"""

from __future__ import annotations

import math
from pathlib import Path

from kentropy.io import write_atomic, write_json
from kentropy.lab.config import config_json
from kentropy.lab.judge import stats as analysis
from kentropy.lab.judge.verdicts import DID_NOT_HOLD, NOT_MEASURED
from kentropy.lab.report.figures import cmap, save, subplots
from kentropy.lab.report.fmt import fmt, fmt_ci
from kentropy.lab.results import LabRun, Section
from kentropy.lab.text.tasks import METRICS


def collect(run: LabRun) -> list[dict]:
    """Per continual-learning start checkpoint: its entropy, and A, F, P, D over seeds."""
    by_step = {r["step"]: r for r in run.entropy}
    rows = []
    for c in run.starts:
        runs = [run.continual[(c.step, s)].summary for s in run.cfg.seeds]
        row = {"step": c.step, "knowledge_entropy": by_step[c.step]["knowledge_entropy"]}
        for key in ("A", "F", "P_before", "P_after", "D_before", "D_after"):
            vals = [r[key] for r in runs]
            row[key] = analysis.mean_ci(vals) if all(v is not None for v in vals) else None
            row[key + "_seeds"] = vals
        rows.append(row)
    return rows


def figures(fig_dir: Path, res: list[dict], loss: list, rows: list[dict], resus_rows: dict, base_A: list[float], base_F: list) -> dict:
    steps = [r["step"] for r in res]
    out = {}
    colors = cmap("viridis")

    fig, ax = subplots(1, 2, figsize=(11, 3.8))
    ax[0].plot(steps, [r["knowledge_entropy"] for r in res], marker="o")
    ax[0].set(title="Knowledge entropy (sum over layers)", xlabel="pretraining step", ylabel="H(θ)")
    for i, r in enumerate(res):
        ax[1].plot(r["knowledge_entropy_per_layer"], marker=".", color=colors(i / max(1, len(res) - 1)), label=f"step {r['step']}")
    ax[1].set(title="Knowledge entropy per layer", xlabel="layer", ylabel="H_l(θ)")
    ax[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out["entropy"] = save(fig, fig_dir / "entropy.png")

    fig, ax = subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot(steps, [r["attention_entropy"] for r in res], marker="o", color="tab:orange")
    ax[0].set(title="Attention entropy", xlabel="pretraining step")
    ax[1].plot(steps, [r["next_token_entropy"] for r in res], marker="o", color="tab:red")
    ax[1].set(title="Next-token entropy", xlabel="pretraining step")
    ax[2].plot([s for s, _ in loss], [v for _, v in loss], lw=0.8)
    ax[2].set(title="Pretraining loss", xlabel="step", yscale="log")
    fig.tight_layout()
    out["attention"] = save(fig, fig_dir / "attention_next_token.png")

    labels = [str(r["step"]) for r in rows]
    fig, ax = subplots(1, 2, figsize=(11, 3.6))
    for k, key in enumerate(("A", "F")):
        means = [r[key]["mean"] if r[key] else float("nan") for r in rows]
        err = [[(r[key]["mean"] - r[key]["lo"]) if r[key] and r[key]["lo"] is not None else 0 for r in rows],
               [(r[key]["hi"] - r[key]["mean"]) if r[key] and r[key]["hi"] is not None else 0 for r in rows]]
        ax[k].bar(labels, means, yerr=err, capsize=3, color="tab:blue" if key == "A" else "tab:purple", alpha=0.8)
        for i, r in enumerate(rows):
            ax[k].scatter([i] * len(r[key + "_seeds"]), [v if v is not None else float("nan") for v in r[key + "_seeds"]], color="k", s=10, zorder=3)
        ax[k].set(title=f"{'Acquisition A' if key == 'A' else 'Forgetting F'} (%) by starting checkpoint", xlabel="pretraining step")
    fig.tight_layout()
    out["AF"] = save(fig, fig_dir / "acquisition_forgetting.png")

    fig, ax = subplots(1, 2, figsize=(11, 3.6))
    x = range(len(rows))
    for k, (key, title) in enumerate((("P", "Probe score P (mean log-prob)"), ("D", "Downstream accuracy D"))):
        b = [r[f"{key}_before"]["mean"] if r[f"{key}_before"] else float("nan") for r in rows]
        a = [r[f"{key}_after"]["mean"] if r[f"{key}_after"] else float("nan") for r in rows]
        ax[k].plot(x, b, marker="o", label="before")
        ax[k].plot(x, a, marker="s", label="after")
        ax[k].set_xticks(list(x), labels)
        ax[k].set(title=title, xlabel="pretraining step")
        ax[k].legend()
    fig.tight_layout()
    out["PD"] = save(fig, fig_dir / "probes_downstream.png")

    if resus_rows:
        ps = sorted(resus_rows)
        fig, ax = subplots(1, 2, figsize=(11, 3.6))
        ax[0].bar(["none"] + [f"P={p:g}" for p in ps], [sum(base_A) / len(base_A)] + [resus_rows[p]["A"]["mean"] for p in ps], color="tab:green")
        ax[0].set(title="Acquisition A (%) of the final checkpoint, resuscitated")
        if all(f is not None for f in base_F) and all(resus_rows[p]["F"] for p in ps):
            ax[1].bar(["none"] + [f"P={p:g}" for p in ps], [sum(base_F) / len(base_F)] + [resus_rows[p]["F"]["mean"] for p in ps], color="tab:olive")
        ax[1].set(title="Forgetting F (%) of the final checkpoint, resuscitated")
        fig.tight_layout()
        out["resuscitation"] = save(fig, fig_dir / "resuscitation.png")

    fig, ax = subplots(1, 2, figsize=(11, 3.6))
    h = [r["knowledge_entropy"] for r in rows]
    for k, key in enumerate(("A", "F")):
        ys = [r[key]["mean"] if r[key] else float("nan") for r in rows]
        ax[k].scatter(h, ys)
        for xi, yi, lab in zip(h, ys, labels):
            ax[k].annotate(f"step {lab}", (xi, yi), fontsize=7)
        ax[k].set(xlabel="knowledge entropy of the starting checkpoint", ylabel=f"{key} (%)", title=f"Entropy vs {key}")
    fig.tight_layout()
    out["scatter"] = save(fig, fig_dir / "entropy_vs_AF.png")
    return out


def write_report(run: LabRun, sections: list[Section], timings: dict[str, dict]) -> dict:
    """report.md, figures/ and results.json in the lab directory; returns the results.
    timings: wall time per stage that ran (the cache's), as of the end of the run."""
    cfg = run.cfg
    fig_dir = run.dir.figures
    fig_dir.mkdir(parents=True, exist_ok=True)
    res = sorted(run.entropy, key=lambda r: r["step"])
    rows = collect(run)

    decay = analysis.entropy_decay([r["step"] for r in res], [r["knowledge_entropy"] for r in res])
    corr = analysis.acquisition_forgetting([r["step"] for r in rows], [r["knowledge_entropy"] for r in rows], [r["A"]["mean"] for r in rows],
                                           [r["F"]["mean"] if r["F"] else None for r in rows])
    final = run.pretraining.final.step
    base_A = [run.continual[(final, s)].A for s in cfg.seeds]
    base_F = [run.continual[(final, s)].F for s in cfg.seeds]
    by_A = {p: [r.runs[s].A for s in cfg.seeds] for p, r in run.resuscitated.items()}
    by_F = {p: [r.runs[s].F for s in cfg.seeds] for p, r in run.resuscitated.items()}
    helps = analysis.resuscitation_helps(base_A, by_A, base_F, by_F)
    resus_rows = {}
    for p, r in run.resuscitated.items():
        resus_rows[p] = {"A": analysis.mean_ci(by_A[p]), "F": analysis.mean_ci(by_F[p]) if all(f is not None for f in by_F[p]) else None,
                         "entropy_before": r.report["knowledge_entropy_before"], "entropy_after": r.report["knowledge_entropy_after"]}
    figs = figures(fig_dir, res, run.pretraining.loss, rows, resus_rows, base_A, base_F)

    results = {
        "preset": run.preset, "config": config_json(cfg), "timings": timings, "world": run.world.get("world"),
        "entropy": [{k: r[k] for k in ("step", "knowledge_entropy", "knowledge_entropy_per_layer", "attention_entropy",
                                       "next_token_entropy", "instances", "tokens")} for r in res],
        "continual": rows, "resuscitation": {str(p): v for p, v in resus_rows.items()},
        "findings": {"entropy_decay": decay, "acquisition_forgetting": corr, "resuscitation": helps},
    }
    for section in sections:
        results[section.key] = section.results
    write_json(run.dir.results, results)

    md = _markdown(run, res, rows, decay, corr, helps, resus_rows, figs, sections, timings)
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


def _markdown(run: LabRun, res, rows, decay, corr, helps, resus_rows, figs, sections, timings) -> str:
    cfg, pre, cc = run.cfg, run.pretraining, run.continual_config
    L = []
    add = L.append
    total = sum(t["seconds"] for t in timings.values())
    interval = cfg.continual_steps // cfg.injection_rounds
    add(f"# kentropy lab report (preset `{run.preset}`)\n")
    add(f"A {cfg.layers}-layer, width-{cfg.hidden} Llama-style (SwiGLU) model pretrained on a generated world of "
        f"{cfg.entities} entities for {pre.steps} steps of {cfg.batch_size} × {cfg.seq_len} tokens "
        f"({pre.steps * cfg.batch_size * cfg.seq_len:,} tokens, "
        f"{'a single pass over fresh text' if cfg.repeat == 1 else f'{cfg.repeat} passes over the same text'}): "
        f"{schedule_text(cfg.lr, cfg.warmup, cfg.schedule, cfg.min_lr_ratio, cfg.weight_decay, pre.steps)}.\n")
    add(f"Continual learning from {len(rows)} checkpoints, {len(cfg.seeds)} seed(s) each, on the "
        f"{'new-domain' if cfg.continual_domain == 'new' else 'near-domain'} corpus: {cc['steps']} steps of "
        f"{cc['batch_size']} × {cc['seq_len']} tokens, "
        f"{schedule_text(cc['lr'], cc['warmup'], cc['schedule'], cc['min_lr_ratio'], cc['weight_decay'], cc['steps'], cc.get('decay_fraction'))}. "
        f"Fictional knowledge ({cfg.knowledge_paraphrase} paraphrase + {cfg.knowledge_once} once entries, "
        f"{'every fact' if cfg.knowledge_facts is None else f'{cfg.knowledge_facts} facts'} per passage) is injected in "
        f"{cfg.injection_rounds} rounds, round r in step {interval} × r − 1 (the last on the final step), each passage + eos "
        f"prepended to its own row: a round fills up to {cfg.injected_rows} of {cc['batch_size']} rows "
        f"({cfg.injected_rows / cc['batch_size']:.0%}; the paper: 76 of 128, 59%).\n")
    add(f"Recorded stage wall time in this lab directory: {total:.0f} s (table at the end). "
        "Every number below was measured in this lab directory's runs.\n")

    add("## Findings\n")
    add("| Finding (paper) | Paper | Here | Verdict |")
    add("|---|---|---|---|")
    add(f"| 1. Knowledge entropy decays during pretraining | monotone decay | H {fmt(decay['first'])} (first checkpoint) → "
        f"{fmt(decay['last'])} (last); Spearman ρ(step, H) = {fmt(decay['spearman']['rho'])}, p = {fmt(decay['spearman']['p'])}; "
        f"largest rise between checkpoints {fmt(decay['max_rise'])} | **{decay['verdict']}** |")
    rA = corr["r_entropy_A"]

    def r_cell(r):
        return NOT_MEASURED if r is None else f"r = {fmt(r['r'])}, p = {fmt(r['p'])} (n = {r['n']})"

    add(f"| 2a. Later checkpoints acquire less: r(step, A) | negative | {r_cell(corr['r_step_A'])} | **{corr['verdict_step_A']}** |")
    add(f"| 2b. Later checkpoints forget more: r(step, F) | positive | {r_cell(corr['r_step_F'])} | **{corr['verdict_step_F']}** |")
    add(f"| 2c. Acquisition follows knowledge entropy: r(H, A) | r = {analysis.PAPER['r_entropy_A']} | {r_cell(rA)} | **{corr['verdict_A']}** |")
    add(f"| 2d. Forgetting follows it inversely: r(H, F) | r = {analysis.PAPER['r_entropy_F']} | {r_cell(corr['r_entropy_F'])} | **{corr['verdict_F']}** |")

    def deltas(key, pkey):
        return "; ".join(f"P={p}: Δ{key} {fmt(v[f'delta{pkey}']['mean'], 2)}" + (f" (p = {fmt(v['p' + pkey])})" if v["p" + pkey] is not None else "")
                         for p, v in helps["by_amplify"].items() if v[f"delta{pkey}"] is not None) or NOT_MEASURED

    add(f"| 3a. Resuscitation (P ≥ 1) of the final checkpoint raises acquisition A | improves A | "
        f"A without: {fmt(helps['base_A']['mean'], 2)}; {deltas('A', '')} | **{helps['verdict_A']}** |")
    base_F = helps["base_F"]
    add(f"| 3b. Resuscitation (P ≥ 1) of the final checkpoint lowers forgetting F | improves retention | "
        f"F without: {fmt(base_F['mean'] if base_F else None, 2)}; {deltas('F', '_F')} | **{helps['verdict_F']}** |")
    add("\nVerdicts: **held** = direction as in the paper and significant at 0.05; **direction only** = same direction, "
        "not significant (few checkpoints or seeds); **did not hold** = opposite direction or no change. "
        f"{_critical_r(rA['n'])}\n")
    for name, v in (("Finding 1", decay["verdict"]), ("Finding 2a", corr["verdict_step_A"]), ("Finding 2b", corr["verdict_step_F"]),
                    ("Finding 2c", corr["verdict_A"]), ("Finding 2d", corr["verdict_F"]), ("Finding 3a", helps["verdict_A"]),
                    ("Finding 3b", helps["verdict_F"])):
        if v == DID_NOT_HOLD:
            add(f"- {name} did not reproduce in this lab run; the numbers are in the table above and the sections below.")
    add("")

    add("## 1. Entropy over pretraining\n")
    add(f"![knowledge entropy]({figs['entropy']})\n")
    add(f"![attention and next-token entropy]({figs['attention']})\n")
    add("| step | knowledge H | attention H | next-token H |")
    add("|---|---|---|---|")
    for r in res:
        add(f"| {r['step']} | {fmt(r['knowledge_entropy'], 4)} | {fmt(r['attention_entropy'], 4)} | {fmt(r['next_token_entropy'], 4)} |")
    add(f"\nMaximum possible knowledge entropy: L ln m = {cfg.layers} × ln {cfg.ffn} = {cfg.layers * math.log(cfg.ffn):.4f}. "
        f"Measured on {res[0]['instances']} held-out world documents ({res[0]['tokens']} tokens).\n")

    add("## 2. Continual knowledge learning from each checkpoint\n")
    add(f"![A and F]({figs['AF']})\n\n![P and D]({figs['PD']})\n\n![entropy vs A and F]({figs['scatter']})\n")
    add("| start step | knowledge H | A (%) | F (%) | P before → after | D before → after |")
    add("|---|---|---|---|---|---|")
    for r in rows:
        add(f"| {r['step']} | {fmt(r['knowledge_entropy'], 4)} | {fmt_ci(r['A'])} | {fmt_ci(r['F']) if r['F'] else '-'} | "
            f"{fmt(r['P_before']['mean'])} → {fmt(r['P_after']['mean'])} | "
            f"{fmt(r['D_before']['mean'] if r['D_before'] else None)} → {fmt(r['D_after']['mean'] if r['D_after'] else None)} |")
    metrics = ", ".join(f"{t} ({METRICS.get(t.removeprefix('lab_'), 'acc')})" for t in run.world["tasks"])
    add("\nA = (P_after − P_before) / |P_before| × 100 with P the mean log-probability per target token of the "
        "mem/gen/hard_gen probes; F = (D_before − D_after) / D_before × 100 with D the mean over the lab's downstream "
        f"tasks of each task's metric: {metrics}, run through lm-evaluation-harness. Intervals are 95% t-intervals over seeds.\n")

    add("## 3. Resuscitation of the final checkpoint\n")
    if "resuscitation" in figs:
        add(f"![resuscitation]({figs['resuscitation']})\n")
    add(f"Neurons at or below the {cfg.resuscitate_ratio} quantile of each layer's Cbar scaled by mean/Cbar × P (up-projection rows).\n")
    add("| P | knowledge H before → after | A (%) | F (%) |")
    add("|---|---|---|---|")
    add(f"| none | - | {fmt_ci(helps['base_A'])} | {fmt_ci(base_F) if base_F else '-'} |")
    for p, v in sorted(resus_rows.items()):
        add(f"| {p:g} | {fmt(v['entropy_before'], 4)} → {fmt(v['entropy_after'], 4)} | {fmt_ci(v['A'])} | {fmt_ci(v['F']) if v['F'] else '-'} |")
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


def _critical_r(n: int) -> str:
    """What |r| needs to reach p < 0.05 (two-sided) with n checkpoints, in words."""
    if n < 3:
        return f"With {n} checkpoints no correlation can be computed (3 or more needed)."
    from scipy import stats

    t = stats.t.ppf(0.975, n - 2)
    return f"With {n} checkpoints a correlation needs |r| > {t / math.sqrt(n - 2 + t * t):.2f} to be significant at 0.05."
