"""The measuring stage: knowledge, attention and next-token entropy of every checkpoint of a pretraining
run, on one or two series of documents, in one forward per checkpoint and series.

Series: `held_out` (world documents outside the pretraining text, the corpora stage's
`measure.jsonl`, truncated to `seq_len` tokens) and, where the pretraining stage kept them, `seen`
(the rows of the run's first batches, which every trained checkpoint has seen: the paper's
measuring data). With `bootstrap` > 0 the same forward keeps each document's coefficients, and H
gets a 95% interval from a paired bootstrap over documents (`kentropy.measurement.bootstrap`): the draws of every
checkpoint are saved (`draws-SERIES.safetensors`, [checkpoints, bootstrap]). With `diagnostics`, each
checkpoint also gets the mechanism diagnostics of `kentropy.measurement.diagnostics` on the first series: per layer
KL to uniform, the top-1 and top-5 share of Cbar, the dormant fraction, and the summary of the
per-neuron weight norms ‖w_in,i‖·‖w_out,i‖ (mean, coefficient of variation, min / max), and from the
capture hook the max/median of |c| and the share of Σ|c| at the first position (`CoefficientSums`).
"""

from __future__ import annotations

from pathlib import Path

from kentropy.lab.cache import Done, Stages

SERIES = ("seen", "held_out")
ALL_METRICS = ("knowledge", "attention", "next-token")
# knowledge entropy alone: the fast attention kernel (attention entropy needs the probabilities materialized) and no
# LM head (next-token entropy needs the logits); together more than half of a tiny model's measuring
KNOWLEDGE_ONLY = ("knowledge",)


def measure_stage(stages: Stages, name: str, pre: Done, corpora: Done, device: str, *, seq_len: int, batch_size: int,
                  series: tuple[str, ...] = ("held_out",), bootstrap: int = 0, seed: int = 0, diagnostics: bool = False,
                  metrics: tuple[str, ...] = ALL_METRICS) -> Done:
    """Result: {"steps": [...], "series": {NAME: {"results": [Measurement JSON + step + coefficients file],
    "capture_points": the canonical name of each layer's Cbar, and with bootstrap: "knowledge_entropy_ci":
    [[lo, hi]] per checkpoint, "draws": path}}, and with diagnostics: "diagnostics": [{"kl_to_uniform", "top1_share",
    "top5_share", "dormant_fraction", "max_over_median", "first_position_share", "weight_norm_mean", "weight_norm_cv",
    "weight_norm_min_over_max": [per layer]} per checkpoint], on series[0]}. metrics: `kentropy measure`'s; without
    "attention" the model runs its fast attention (attention entropy needs the probabilities materialized) and
    `attention_entropy` is null."""
    conf = {"pretrain": pre.hash, "corpora": corpora.hash, "seq_len": seq_len, "batch_size": batch_size, "series": list(series),
            "bootstrap": bootstrap, "seed": seed}
    if diagnostics:
        conf["diagnostics"] = True
    if tuple(metrics) != ALL_METRICS:
        conf["metrics"] = list(metrics)

    def fn(d: Path) -> dict:
        from safetensors.torch import load_file, save_file

        from kentropy.measurement.bootstrap import bootstrap_entropy, percentile_interval
        from kentropy.measurement.documents import load_texts
        from kentropy.measurement.diagnostics import cbar_diagnostics, neuron_weight_norms, weight_norm_summary
        from kentropy.io import write_atomic
        from kentropy.measurement.workflow import measure_ids, save_coefficients, tokenize
        from kentropy.models.loading import ModelRef, load_model, load_tokenizer, pick_device

        ckpts = pre.result["checkpoints"]
        tok = load_tokenizer(ModelRef(ckpts[0]["path"]))
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        docs = {"held_out": lambda: tokenize(tok, load_texts(corpora.result["measure"]), seq_len),
                "seen": lambda: load_file(pre.result["first_rows"])["ids"].tolist()}
        ids = {k: docs[k]() for k in series}
        found = {k: [] for k in series}
        diag = []
        for c in ckpts:
            model = load_model(ModelRef(c["path"]), device=pick_device(device), eager_attention="attention" in metrics)
            for k in series:
                found[k].append(measure_ids(model, ids[k], pad_id, metrics=metrics,
                                            batch_size=batch_size, name=stages.dir.stored(c["path"]), progress=False, instances=bootstrap > 0,
                                            positions=diagnostics and k == series[0]))
            if diagnostics:
                norms = weight_norm_summary(neuron_weight_norms(model))
                first = found[series[0]][-1]
                diag.append(cbar_diagnostics(first.coefficients) | first.position_stats
                            | {f"weight_norm_{k}": v for k, v in norms.items()})
            del model
        out = {"steps": [c["step"] for c in ckpts], "series": {}}
        if diagnostics:
            out |= {"diagnostics": diag, "diagnostics_series": series[0]}
        for k, ms in found.items():
            files = save_coefficients(ms, str(d / "coefficients" / k), "abs")
            entry = {"capture_points": ms[0].capture_points,  # the registry's names of the coefficient files' tensors
                     "results": [dict(m.to_json(), step=c["step"], coefficients=f) for m, c, f in zip(ms, ckpts, files)]}
            if bootstrap:
                draws = bootstrap_entropy([m.instance_coefficients for m in ms], n_boot=bootstrap, seed=seed)  # paired
                path = d / f"draws-{k}.safetensors"
                write_atomic(path, lambda tmp, draws=draws: save_file({"draws": draws.contiguous()}, str(tmp)))
                entry |= {"knowledge_entropy_ci": [list(percentile_interval(x)) for x in draws], "draws": str(path)}
            out["series"][k] = entry
        return out

    code = ("kentropy.measurement.workflow", "kentropy.measurement.capture", "kentropy.measurement.bootstrap", "kentropy.measurement.entropy")
    return stages.run(name, conf, fn, code=code + (("kentropy.measurement.diagnostics", "kentropy.models.neurons") if diagnostics else ()))
