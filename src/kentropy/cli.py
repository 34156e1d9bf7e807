"""The `kentropy` command: a thin typer layer over the Python API, one function per command.

Progress goes to stderr, results to `--out` (atomically), a one-screen summary to stdout;
bad input exits 2 with a one-line `error:` naming the file, field or flag.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import typer

from kentropy import distributed
from kentropy.config import option, to_dict, typer_command
from kentropy.errors import KentropyError
from kentropy.io import check_out_file, json_text, write_json

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Knowledge entropy of language models, and how it governs what they can still learn.")


def command(name: str, cfg_cls: type):
    """Register `run(cfg)` as command `name`, with its parameters taken from `cfg_cls`."""

    def register(run):
        app.command(name, help=cfg_cls.__doc__)(typer_command(cfg_cls, run))
        return run

    return register


# ---- measure -----------------------------------------------------------------------------
from kentropy.measure import MeasureConfig, measure_series, save_coefficients  # noqa: E402


@command("measure", MeasureConfig)
def measure_cmd(cfg: MeasureConfig) -> None:
    results = measure_series(cfg)
    if distributed.rank_world()[0] != 0:
        return  # under torchrun, rank 0 writes
    payload = {"results": [r.to_json() for r in results], "config": to_dict(cfg)}
    json_text(payload, cfg.out)  # a non-finite result is refused before anything is written
    if cfg.coefficients_out:
        payload["coefficients"] = save_coefficients(results, cfg.coefficients_out, cfg.activation)
    write_json(cfg.out, payload)
    print(f"{'checkpoint':<40} {'knowledge H':>12} {'max sum ln m':>12} {'attention H':>12} {'next-token H':>12} {'docs':>6} {'tokens':>8}")
    for r in results:
        label = f"{r.model}@{r.revision}" if r.revision else r.model
        fmt = lambda x: f"{x:12.4f}" if x is not None else f"{'-':>12}"  # noqa: E731
        print(f"{label[-40:]:<40} {r.knowledge_entropy:12.4f} {r.max_knowledge_entropy:12.2f} "
              f"{fmt(r.attention_entropy)} {fmt(r.next_token_entropy)} {r.instances:6d} {r.tokens:8d}")
    print(f"wrote {cfg.out}")


# ---- plot --------------------------------------------------------------------------------
@dataclass
class PlotConfig:
    """Plot a measure result: total entropy per checkpoint and a per-layer panel."""

    result: str = option(help="A JSON file written by `kentropy measure`.", argument=True)
    out: str = option(help="PNG file to write.")

    def __post_init__(self) -> None:
        check_out_file(self.out)


@command("plot", PlotConfig)
def plot_cmd(cfg: PlotConfig) -> None:
    from kentropy.plot import plot_file

    print(f"wrote {plot_file(cfg.result, cfg.out)}")


# ---- evaluate ----------------------------------------------------------------------------
from kentropy.evaluate import EvaluateConfig, evaluate_series  # noqa: E402


@command("evaluate", EvaluateConfig)
def evaluate_cmd(cfg: EvaluateConfig) -> None:
    results = evaluate_series(cfg)
    write_json(cfg.out, {"results": results, "config": to_dict(cfg)})
    names = cfg.task_list
    print(f"{'checkpoint':<40} " + " ".join(f"{n[:12]:>12}" for n in names) + f" {'D':>8}")
    for r in results:
        label = f"{r['model']}@{r['revision']}" if r["revision"] else r["model"]
        print(f"{label[-40:]:<40} " + " ".join(f"{r['tasks'][n]['acc']:12.4f}" for n in names) + f" {r['D']:8.4f}")
    print(f"wrote {cfg.out}")


# ---- resuscitate ------------------------------------------------------------------------
from kentropy.resuscitate import ResuscitateConfig, run_resuscitate  # noqa: E402


@command("resuscitate", ResuscitateConfig)
def resuscitate_cmd(cfg: ResuscitateConfig) -> None:
    r = run_resuscitate(cfg)
    scaled = sum(x["neurons_scaled"] for x in r["layers"])
    print(f"resuscitated {r['model']}: ratio {r['ratio']}, amplify {r['amplify']}, {scaled} neurons over {len(r['layers'])} layers"
          f" ({'exact' if r['exact'] else 'approximate'}: {r['note']})")
    for x in r["layers"]:
        if x["neurons_scaled"]:
            print(f"  layer {x['layer']:>3}: {x['neurons_scaled']:>6} neurons, multiplier {x['min_multiplier']:.3f} .. {x['max_multiplier']:.3f}")
    if r["knowledge_entropy_before"] is not None:
        print(f"knowledge entropy {r['knowledge_entropy_before']:.4f} -> {r['knowledge_entropy_after']:.4f} (measured on {r['measured_on']})")
    print(f"wrote {cfg.out}")


# ---- probe, knowledge generate|plan ------------------------------------------------------
from kentropy.knowledge.commands import GenerateConfig, PlanConfig, ProbeConfig, generate_file, plan_file, probe_series  # noqa: E402


@command("probe", ProbeConfig)
def probe_cmd(cfg: ProbeConfig) -> None:
    payload = probe_series(cfg)
    write_json(cfg.out, payload)
    groups = [g for g in ("paraphrase", "once") if any(g in r.get("groups", {}) for r in payload["results"])]
    print(f"{'checkpoint':<40} {'mem':>9} {'gen':>9} {'hard_gen':>9} {'overall':>9}" + "".join(f" {g + ' P':>12}" for g in groups))
    for r in payload["results"]:
        label = f"{r['model']}@{r['revision']}" if r["revision"] else r["model"]
        per_group = "".join(f" {r['groups'][g]['overall']:12.4f}" if g in r.get("groups", {}) else f" {'-':>12}" for g in groups)
        print(f"{label[-40:]:<40} {r['mem']:9.4f} {r['gen']:9.4f} {r['hard_gen']:9.4f} {r['overall']:9.4f}" + per_group)
    print(f"mean log-prob per target token over {len(payload['results'][0]['entries'])} entries; wrote {cfg.out}")


knowledge_app = typer.Typer(no_args_is_help=True, help="Fictional knowledge: generate entries, plan their injection.")
app.add_typer(knowledge_app, name="knowledge")


def knowledge_generate_cmd(cfg: GenerateConfig) -> None:
    entries = generate_file(cfg)
    kinds = sorted({e["kind"] for e in entries})
    words = [len(e["train_context"].split()) for e in entries]
    print(f"{len(entries)} entries ({', '.join(kinds)}), {cfg.paraphrases} paraphrases each, "
          f"{min(words)}-{max(words)} words per paragraph; wrote {cfg.out}")


def knowledge_plan_cmd(cfg: PlanConfig) -> None:
    plan = plan_file(cfg)
    g = plan["groups"]
    print(f"paraphrase group {len(g['paraphrase'])} entries, once group {len(g['once'])} entries; "
          f"{plan['rounds']} rounds every {plan['interval']} steps (last at step {plan['schedule'][-1]['step']}); wrote {cfg.out}")


knowledge_app.command("generate", help=GenerateConfig.__doc__)(typer_command(GenerateConfig, knowledge_generate_cmd))
knowledge_app.command("plan", help=PlanConfig.__doc__)(typer_command(PlanConfig, knowledge_plan_cmd))


# ---- circuits ----------------------------------------------------------------------------
from kentropy.circuits.series import CircuitsConfig, circuits_series  # noqa: E402


@command("circuits", CircuitsConfig)
def circuits_cmd(cfg: CircuitsConfig) -> None:
    results = circuits_series(cfg)
    write_json(cfg.out, {"results": results, "config": to_dict(cfg)})
    if cfg.plot:
        from kentropy.circuits.plot import plot_circuits

        plot_circuits(results, cfg.plot)
    print(f"{'checkpoint':<28} {'task':<24} {'faith':>7} {'hit@10':>7} {'nodeJ':>6} {'edgeJ':>6} {'edges':>6} {'mov/rel/mix':>12}")
    for r in results:
        label = (f"{r['model']}@{r['revision']}" if r["revision"] else r["model"])[-28:]
        for t in r["tasks"]:
            c = t["role_counts"]
            print(f"{label:<28} {t['task'][-24:]:<24} {t['faithfulness']:7.3f} {t['hit_at_10']:7.3f} {t['node_jaccard']:6.3f} "
                  f"{t['edge_jaccard']:6.3f} {t['n_edges']:6d} {c['mover']:>4}/{c['relation']}/{c['mixed']}")
    print(f"wrote {cfg.out}" + (f" and {cfg.plot}" if cfg.plot else ""))

# ---- train --------------------------------------------------------------------------------
from kentropy.train import TrainConfig, train  # noqa: E402


@command("train", TrainConfig)
def train_cmd(cfg: TrainConfig) -> None:
    s = train(cfg)
    if s is None:
        return  # not rank 0
    fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    print(f"run {cfg.out}: {cfg.steps} steps from {cfg.model}")
    print(f"  P (mean log-prob of probes)  before {fmt(s['P_before'])}  after {fmt(s['P_after'])}   A = {fmt(s['A'])} %")
    print(f"  D (mean downstream accuracy) before {fmt(s['D_before'])}  after {fmt(s['D_after'])}   F = {fmt(s['F'])} %")
    print(f"wrote {cfg.out}/summary.json")


# ---- lab ----------------------------------------------------------------------------------
from kentropy.lab.pipeline import LabRunConfig, run_lab_command  # noqa: E402


@command("lab", LabRunConfig)
def lab_cmd(cfg: LabRunConfig) -> None:
    r = run_lab_command(cfg)
    f = r["findings"]
    print(f"lab {cfg.out} (preset {cfg.preset}):")
    print(f"  1. knowledge entropy decays:                    {f['entropy_decay']['verdict']}")
    af = f["acquisition_forgetting"]
    print(f"  2. later checkpoints acquire less / forget more: {af['verdict_step_A']} / {af['verdict_step_F']}")
    print(f"     A and F follow knowledge entropy:            {af['verdict_A']} / {af['verdict_F']}")
    print(f"  3. resuscitation (P >= 1) raises A / lowers F:  {f['resuscitation']['verdict_A']} / {f['resuscitation']['verdict_F']}")
    if "decay_study" in r:
        for a in r["decay_study"]["arms"]:
            print(f"     decay study, {a['name']:<28} {a['tokens_per_parameter']:6.0f} tokens/param: {a['verdict']} (peak at step {a['peak_step']})")
    print(f"  total stage time {sum(t['seconds'] for t in r['timings'].values()):.0f} s; report: {cfg.out}/report.md")


RESUME_HINT = {"train": "resume with --resume", "lab": "rerun the same command to resume (finished stages are kept)"}


def _interrupted(argv: list[str], terminated: bool) -> None:
    command = next((a for a in argv if not a.startswith("-")), "")
    hint = RESUME_HINT.get(command)
    print(f"\n{'terminated' if terminated else 'interrupted'}" + (f"; {hint}" if hint else ""), file=sys.stderr)
    sys.exit(143 if terminated else 130)


def main(argv: list[str] | None = None) -> None:
    import signal
    import threading

    from transformers.utils import logging as hf_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    hf_logging.disable_progress_bar()  # our own progress bars only
    terminated = threading.Event()  # set by SIGTERM: typer reports it as a KeyboardInterrupt (exit 130)

    def on_sigterm(signum, frame):
        terminated.set()
        raise KeyboardInterrupt  # unwinds like Ctrl-C, so atomic writes clean up their temps

    # a background job of a non-interactive shell starts with SIGINT ignored: make it interrupt
    handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: on_sigterm}
    main_thread = threading.current_thread() is threading.main_thread()  # signals can be set only there
    saved = {sig: signal.signal(sig, h) for sig, h in handlers.items()} if main_thread else {}
    try:
        distributed.init()
        rc = app(args=argv, prog_name="kentropy", standalone_mode=False)
    except KentropyError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # typer turns most into Exit(130), returned below
        _interrupted(argv, terminated.is_set())
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except Exception as e:  # click usage errors arrive here with standalone_mode=False
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            _interrupted(argv, False)
        raise
    finally:
        for sig, h in saved.items():
            signal.signal(sig, h)
    if rc == 130:  # typer's code for a KeyboardInterrupt
        _interrupted(argv, terminated.is_set())
    if isinstance(rc, int) and rc:
        sys.exit(rc)
