"""Dataclass configs are the CLI: each field's `help` is its `--help` text.

`option(...)` declares a field; `typer_command(cls, run)` turns a config dataclass into a
typer command whose parameters are exactly the fields (dashes for underscores), so the CLI
and the Python API cannot drift apart. An `ArgumentError` naming a field (`batch_size=0: ...`,
raised by the config or by any function the command calls) reaches the user as that field's flag
(`--batch-size 0: ...`): errors are raised in the caller's terms and shown in the user's.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable

import typer

from kentropy.errors import UNSET, ArgumentError, KentropyError
from kentropy.runtime.arguments import number

REQUIRED = dataclasses.MISSING


def option(default: Any = REQUIRED, help: str = "", *, argument: bool = False, short: str | None = None,
           section: str | None = None) -> Any:
    """A config field. `argument=True` makes it positional; list defaults are copied per instance;
    `section` groups it under that heading in `--help`."""
    meta = {"help": help, "argument": argument, "short": short, "section": section}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# Options that many commands share, declared once (one help text each). Each call makes a fresh field.
def models_option() -> Any:
    return option(help="Model dirs, hub ids or GGUF files (DIR/FILE.gguf, dequantized); NAME@rev1,rev2 is a checkpoint "
                       "series, in training order (one result each, in order).", argument=True)


def device_option(section: str | None = None) -> Any:
    return option("auto", "auto (cuda if available; under torchrun the local rank's GPU), cpu, cuda, cuda:N.", section=section)


def dtype_option() -> Any:
    return option("float32", "float32, or bfloat16 (CUDA) to halve memory.")


def trust_remote_code_option() -> Any:
    return option(False, "Allow model code from the hub (off unless you ask: it runs code from the model's repository).")


def series_resume_option() -> Any:
    return option(False, "Continue an interrupted series from OUT.partial (its finished checkpoints are kept).")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def require(cfg, *names: str, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> None:
    """Each named field (None is skipped: an unset option) is a finite number within the bounds.

    `low=0, low_open=True` is "positive"; `low=0` alone is "non-negative". The error names the field
    (the CLI shows it as the flag).
    """
    for name in names:
        if getattr(cfg, name) is not None:
            number(name, getattr(cfg, name), low=low, high=high, low_open=low_open, high_open=high_open)


def as_flag(e: ArgumentError, cls: type, given: dict) -> KentropyError:
    """`e` as the CLI user sees it: the field `e.name` of `cls` as its flag (or its positional name), with
    the value the error names, else the value given on the command line. A name that is no field of `cls`
    (an argument the command set itself) stays as it is."""
    field = next((f for f in dataclasses.fields(cls) if f.name == e.name), None)
    if field is None:
        return e
    label = e.name.upper() if field.metadata.get("argument") else flag(e.name)
    value = e.value if e.value is not UNSET else given.get(e.name)
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return KentropyError(f"{label} {value}: {e.why}" if value not in (None, "") else f"{label}: {e.why}")


def to_dict(cfg) -> dict:
    """The resolved config as JSON-ready data (saved next to every output)."""
    return {k: (str(v) if not isinstance(v, (int, float, str, bool, list, type(None))) else v) for k, v in dataclasses.asdict(cfg).items()}


def typer_command(cls: type, run: Callable[[Any], None]) -> Callable[..., None]:
    """A function typer can register: parameters from the fields of `cls`, body `run(cls(**kw))`."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.default is not REQUIRED:
            default = f.default
        elif f.default_factory is not REQUIRED:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = ...
        if meta.get("argument"):
            info = typer.Argument(default, help=meta.get("help", ""), show_default=default is not ..., rich_help_panel=meta.get("section"))
        else:
            decls = [flag(f.name)] + ([meta["short"]] if meta.get("short") else [])
            typ = hints[f.name]
            if typ is bool:
                decls = [f"{flag(f.name)}/--no-{f.name.replace('_', '-')}"]
            info = typer.Option(default, *decls, help=meta.get("help", ""), rich_help_panel=meta.get("section"))
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=hints[f.name]))

    def command(**kwargs):
        try:
            run(cls(**kwargs))
        except ArgumentError as e:
            raise as_flag(e, cls, kwargs) from None

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = inspect.getdoc(cls)
    return command
