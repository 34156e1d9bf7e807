"""The `kentropy` command: a thin typer layer over the Python API, one function per command.

Progress goes to stderr, results to `--out` (atomically), a one-screen summary to stdout;
bad input exits 2 with a one-line `error:` naming the file, field or flag.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import typer

from kentropy.config import option, to_dict, typer_command
from kentropy.errors import KentropyError
from kentropy.io import write_json

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
    from kentropy.measure import _dist

    results = measure_series(cfg)
    if _dist()[0] != 0:
        return  # under torchrun, rank 0 writes
    payload = {"results": [r.to_json() for r in results], "config": to_dict(cfg)}
    if cfg.coefficients_out:
        payload["coefficients"] = save_coefficients(results, cfg.coefficients_out, cfg.activation)
    write_json(cfg.out, payload)
    print(f"{'checkpoint':<40} {'knowledge H':>12} {'max L ln m':>10} {'attention H':>12} {'next-token H':>12} {'docs':>6} {'tokens':>8}")
    import math

    for r in results:
        label = f"{r.model}@{r.revision}" if r.revision else r.model
        fmt = lambda x: f"{x:12.4f}" if x is not None else f"{'-':>12}"  # noqa: E731
        print(f"{label[-40:]:<40} {r.knowledge_entropy:12.4f} {r.layers * math.log(r.ffn_dim):10.2f} "
              f"{fmt(r.attention_entropy)} {fmt(r.next_token_entropy)} {r.instances:6d} {r.tokens:8d}")
    print(f"wrote {cfg.out}")


# ---- plot --------------------------------------------------------------------------------
@dataclass
class PlotConfig:
    """Plot a measure result: total entropy per checkpoint and a per-layer panel."""

    result: str = option(help="A JSON file written by `kentropy measure`.", argument=True)
    out: str = option(help="PNG file to write.")


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


def main(argv: list[str] | None = None) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars only
    _init_distributed()
    try:
        app(args=argv, prog_name="kentropy", standalone_mode=False)
    except KentropyError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except Exception as e:  # click usage errors arrive here with standalone_mode=False
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            print("aborted", file=sys.stderr)
            sys.exit(130)
        raise


def _init_distributed() -> None:
    """Under torchrun (WORLD_SIZE > 1): one process group for the whole command (gloo on CPU, nccl on CUDA)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch

    if torch.distributed.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend)
