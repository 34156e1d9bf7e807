"""The `kentropy` command: a thin typer layer over the Python API, one function per command.

Progress goes to stderr, results to `--out` (atomically), a one-screen summary to stdout;
bad input exits 2 with a one-line `error:` naming the file, field or flag.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import typer

from kentropy.runtime import distributed
from kentropy.runtime.options import flag, option, typer_command
from kentropy.runtime.console import line, quiet, track_stderr
from kentropy.errors import KentropyError
from kentropy.io import check_name_fits, check_out_file, check_paths_apart
from kentropy.runtime.locks import locked
from kentropy.runtime.series import partial_path, run_series
from kentropy.models.loading import parse_checkpoints

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Knowledge entropy of language models, and how it governs what they can still learn.")


@app.callback()
def _global_options(verbose: bool = typer.Option(False, "--verbose", help="Show the libraries' own progress bars and "
                                                 "logs (lm-eval, datasets, transformers); taken anywhere on the line.")) -> None:
    """Options of every command (read in `main`)."""


OUTPUT_FIELDS = ("out", "coefficients_out", "plot")  # what a command writes
INPUT_FIELDS = ("data", "knowledge", "plan", "task", "coefficients", "result", "avoid", "task_dir", "model", "models",
                "replay", "decay_lab")  # what it reads: files, directories, or names that are not on disk


def _input_path(value: str) -> str:
    """The path of an input: a checkpoint `DIR@rev1,rev2` is its directory."""
    return value if os.path.exists(value) or "@" not in value else value.rsplit("@", 1)[0]


def check_output_paths(cfg, series: bool = False) -> list[tuple[str, str]]:
    """The (flag, path) outputs of `cfg` (for a checkpoint series, `OUT.partial` too), refused up front when a
    name is too long for the file system, or two of them, or an output and an input, are one path or nest."""
    outputs = [(flag(f), str(getattr(cfg, f))) for f in OUTPUT_FIELDS if getattr(cfg, f, None)]
    inputs = []
    for f in INPUT_FIELDS:
        v = getattr(cfg, f, None)
        inputs += [(flag(f), _input_path(str(x))) for x in (v if isinstance(v, list) else [v]) if x]
    for fa, a in outputs:
        check_name_fits(a, fa)
    if series:
        check_name_fits(cfg.out, "--out", suffix=".partial", what="its partial file")
        outputs.append(("--out", str(partial_path(cfg.out))))
    check_paths_apart(outputs, inputs)
    return outputs


def command(name: str, cfg_cls: type, app=app, series: bool = False):
    """Register `run(cfg)` as command `name`, with its parameters taken from `cfg_cls`. Before it runs,
    its outputs are checked against each other and its inputs, and locked for as long as it runs
    (`series`: a checkpoint series, whose `OUT.partial` is one of its outputs)."""

    def register(run):
        def guarded(cfg) -> None:
            outputs = check_output_paths(cfg, series)
            with locked(outputs if distributed.rank_world()[0] == 0 else []):  # under torchrun, rank 0 writes
                run(cfg)

        app.command(name, help=cfg_cls.__doc__)(typer_command(cfg_cls, guarded))
        return run

    return register


# ---- measure -----------------------------------------------------------------------------
from kentropy.measurement.workflow import MeasureConfig, measure_file  # noqa: E402


@command("measure", MeasureConfig, series=True)
def measure_cmd(cfg: MeasureConfig) -> None:
    payload = measure_file(cfg)
    if distributed.rank_world()[0] != 0:
        return  # under torchrun, rank 0 writes
    print(f"{'checkpoint':<40} {'knowledge H':>12} {'max sum ln m':>12} {'attention H':>12} {'next-token H':>12} {'docs':>6} {'tokens':>8}")
    for r in payload["results"]:
        label = f"{r['model']}@{r['revision']}" if r["revision"] else r["model"]
        fmt = lambda x: f"{x:12.4f}" if x is not None else f"{'-':>12}"  # noqa: E731
        top = sum(math.log(m) for m in (r.get("ffn_dim_per_layer") or [r["ffn_dim"]] * r["layers"]))  # sum_l ln m_l
        print(f"{label[-40:]:<40} {r['knowledge_entropy']:12.4f} {top:12.2f} "
              f"{fmt(r['attention_entropy'])} {fmt(r['next_token_entropy'])} {r['instances']:6d} {r['tokens']:8d}")
    print(f"wrote {cfg.out}")


# ---- plot --------------------------------------------------------------------------------
@dataclass
class PlotConfig:
    """Plot a measure result: total entropy per checkpoint and a per-layer panel."""

    result: str = option(help="A JSON file written by `kentropy measure`.", argument=True)
    out: str = option(help="Figure to write: .png, .pdf or .svg (the suffix sets the format).")

    def __post_init__(self) -> None:
        from kentropy.measurement.plot import figure_format  # matplotlib: loaded only by the plot command

        check_out_file(self.out)
        figure_format(self.out)


@command("plot", PlotConfig)
def plot_cmd(cfg: PlotConfig) -> None:
    from kentropy.measurement.plot import plot_file  # matplotlib: loaded only by the plot command

    print(f"wrote {plot_file(cfg.result, cfg.out)}")


# ---- evaluate ----------------------------------------------------------------------------
from kentropy.evaluation.downstream import EvaluateConfig, evaluate_series  # noqa: E402


@command("evaluate", EvaluateConfig, series=True)
def evaluate_cmd(cfg: EvaluateConfig) -> None:
    results = run_series(cfg, parse_checkpoints(cfg.models), lambda series: evaluate_series(cfg, series=series))["results"]
    names = cfg.task_list
    print(f"{'checkpoint':<40} " + " ".join(f"{n[:12]:>12}" for n in names) + f" {'D':>8}")
    for r in results:
        label = f"{r['model']}@{r['revision']}" if r["revision"] else r["model"]
        print(f"{label[-40:]:<40} " + " ".join(f"{r['tasks'][n]['acc']:12.4f}" for n in names) + f" {r['D']:8.4f}")
    print(f"wrote {cfg.out}")


# ---- resuscitate ------------------------------------------------------------------------
from kentropy.edits.resuscitate import ResuscitateConfig, run_resuscitate  # noqa: E402


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


# ---- intervene ---------------------------------------------------------------------------
from kentropy.edits.intervene import InterveneConfig, run_intervene  # noqa: E402


@command("intervene", InterveneConfig)
def intervene_cmd(cfg: InterveneConfig) -> None:
    r = run_intervene(cfg)
    params = ", ".join(f"{k} {v}" for k, v in r["params"].items() if k != "note")
    print(f"{r['method']} on {r['model']}: {params}")
    for x in r["layers"]:
        if x.get("neurons"):
            print(f"  layer {x['layer']:>3}: {len(x['neurons']):>6} neurons")
        elif "norm_before" in x:
            print(f"  {x['block']}: {len(x['matrices'])} matrices, norm {x['norm_before']:.4f} -> {x['norm_after']:.4f}")
    if r["knowledge_entropy_before"] is not None:
        print(f"knowledge entropy {r['knowledge_entropy_before']:.4f} -> {r['knowledge_entropy_after']:.4f} (measured on {r['measured_on']})")
    print(f"wrote {cfg.out}")


# ---- probe, knowledge generate|plan ------------------------------------------------------
from kentropy.knowledge.commands import GenerateConfig, PlanConfig, ProbeConfig, generate_file, plan_file, probe_series  # noqa: E402


@command("probe", ProbeConfig, series=True)
def probe_cmd(cfg: ProbeConfig) -> None:
    payload = run_series(cfg, parse_checkpoints(cfg.models), lambda series: probe_series(cfg, series=series)["results"])
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


command("generate", GenerateConfig, knowledge_app)(knowledge_generate_cmd)
command("plan", PlanConfig, knowledge_app)(knowledge_plan_cmd)


# ---- circuits ----------------------------------------------------------------------------
from kentropy.circuits.series import CircuitsConfig, circuits_series  # noqa: E402


@command("circuits", CircuitsConfig, series=True)
def circuits_cmd(cfg: CircuitsConfig) -> None:
    results = run_series(cfg, parse_checkpoints(cfg.models), lambda series: circuits_series(cfg, series=series))["results"]
    if cfg.plot:
        from kentropy.circuits.plot import plot_circuits  # matplotlib: loaded only with --plot

        plot_circuits(results, cfg.plot)
    print(f"{'checkpoint':<28} {'task':<24} {'faith':>7} {'hit@10':>7} {'nodeJ':>6} {'edgeJ':>6} {'edges':>6} {'mov/rel/mix':>12}")
    for r in results:
        label = (f"{r['model']}@{r['revision']}" if r["revision"] else r["model"])[-28:]
        for t in r["tasks"]:
            c = t["role_counts"]
            print(f"{label:<28} {t['task'][-24:]:<24} {t['faithfulness']:7.3f} {t['hit_at_10']:7.3f} {t['node_jaccard']:6.3f} "
                  f"{t['edge_jaccard']:6.3f} {t['n_edges']:6d} {c['mover']:>4}/{c['relation']}/{c['mixed']}")
            if t["check_exact"]:
                x = t["check_exact"]
                print(f"  exact check on {x['edges']} of {x['of_edges']} edges: Spearman {x['spearman']:.3f}, "
                      f"top-{x['top_n']} overlap {x['top_overlap']:.3f}")
    print(f"wrote {cfg.out}" + (f" and {cfg.plot}" if cfg.plot else ""))

# ---- train --------------------------------------------------------------------------------
from kentropy.training.config import TrainConfig  # noqa: E402
from kentropy.training.loop import train  # noqa: E402


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
from kentropy.lab.report.gates import DEMO, testable_lines  # noqa: E402


def lab_summary(r: dict, out: str, preset: str) -> str:
    """The lines `kentropy lab` prints at the end, from its results: what the design could test, with each finding's
    verdict (the demo names `make decay` for what it cannot test); with a decay study, its table and arms first."""
    lines = [f"lab {out} (preset {preset}): what this design could test, and the verdicts"]
    if "decay_study" in r:  # the study for the findings first; the core study is its scaffolding
        lines += ["  decay study:", *testable_lines(r["decay_study"]["testable"], False, prefix="    ")]
        for a in r["decay_study"]["arms"]:
            lines.append(f"    arm {a['name']:<28} {a['tokens_per_parameter']:6.0f} tokens/param: {a['verdict']} "
                         f"({a['effect']['text']})")
        lines.append("  core study (the decay study's scaffolding):")
    lines += testable_lines(r["testable"], preset == DEMO, prefix="  ")
    lines.append(f"  total stage time {sum(t['seconds'] for t in r['timings'].values()):.0f} s; report: {out}/report.md")
    return "\n".join(lines)


@command("lab", LabRunConfig)
def lab_cmd(cfg: LabRunConfig) -> None:
    print(lab_summary(run_lab_command(cfg), cfg.out, cfg.preset))


RESUME_HINT = {"train": "resume with --resume", "lab": "rerun the same command to resume (finished stages are kept)"}


def _series_hint(argv: list[str]) -> str | None:
    """For a series command stopped with checkpoints saved in OUT.partial: how to continue it."""
    out = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"), None)
    if out is None or not partial_path(out).is_file():
        return None
    return f"{partial_path(out)} keeps the finished checkpoints; rerun with --resume to continue"


def _interrupted(argv: list[str], terminated: bool) -> None:
    command = next((a for a in argv if not a.startswith("-")), "")
    hint = RESUME_HINT.get(command) or _series_hint(argv)
    print(f"\n{'terminated' if terminated else 'interrupted'}" + (f"; {hint}" if hint else ""), file=sys.stderr)
    sys.exit(143 if terminated else 130)


def _is_click(e: BaseException, name: str) -> bool:
    """Whether `e` is click's exception class `name`, or a copy of it (typer vendors its own click).

    Matched by class name along the MRO, so either package's classes are recognised.
    """
    return any(c.__name__ == name for c in type(e).__mro__)


def _usage_message(e: BaseException) -> str | None:
    """One line for a usage error (unknown flag or command, missing or malformed value), else None."""
    if _is_click(e, "NoArgsIsHelpError"):  # bare `kentropy` or a bare command group
        ctx = getattr(e, "ctx", None)
        path = ctx.command_path if ctx is not None else "kentropy"
        return f"{path}: missing command (see `{path} --help`)"
    if not _is_click(e, "ClickException") or not callable(getattr(e, "format_message", None)):
        return None
    text = " ".join(e.format_message().split())
    ctx = getattr(e, "ctx", None)
    if ctx is not None:
        return f"{ctx.command_path}: {text} (see `{ctx.command_path} --help`)"
    return text


def main(argv: list[str] | None = None) -> None:
    import signal
    import threading

    from transformers.utils import logging as hf_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    if verbose:  # a global flag, taken anywhere on the line
        argv = ["--verbose"] + [a for a in argv if a != "--verbose"]
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
        with track_stderr():
            try:
                distributed.init()
                with quiet(verbose):
                    rc = app(args=argv, prog_name="kentropy", standalone_mode=False)
            except KentropyError as e:
                line(f"error: {e}")
                sys.exit(2)
            except KeyboardInterrupt:  # typer turns most into Exit(130), returned below
                _interrupted(argv, terminated.is_set())
            except (typer.Exit, SystemExit) as e:
                sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
            except Exception as e:  # usage errors arrive here with standalone_mode=False
                usage = _usage_message(e)
                if usage is not None:
                    line(f"error: {usage}")
                    sys.exit(2)
                if _is_click(e, "Abort"):
                    _interrupted(argv, False)
                raise
    finally:
        for sig, h in saved.items():
            signal.signal(sig, h)
    if rc == 130:  # typer's code for a KeyboardInterrupt
        _interrupted(argv, terminated.is_set())
    if isinstance(rc, int) and rc:
        sys.exit(rc)
