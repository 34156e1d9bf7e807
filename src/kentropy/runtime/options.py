"""Dataclass configs are the CLI: each field's `help` is its `--help` text.

`option(...)` declares a field; `typer_command(cls, run)` turns a config dataclass into a
typer command whose parameters are exactly the fields (dashes for underscores), so the CLI
and the Python API cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from typing import Any, Callable

import typer

REQUIRED = dataclasses.MISSING


def option(default: Any = REQUIRED, help: str = "", *, argument: bool = False, short: str | None = None,
           section: str | None = None) -> Any:
    """A config field. `argument=True` makes it positional; list defaults are copied per instance;
    `section` groups it under that heading in `--help`."""
    meta = {"help": help, "argument": argument, "short": short, "section": section}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number_error(cfg, name: str, why: str):
    from kentropy.errors import KentropyError

    return KentropyError(f"{flag(name)} {getattr(cfg, name)}: {why}")


def require(cfg, *names: str, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> None:
    """Each named field (None is skipped: an unset option) is a finite number within the bounds.

    `low=0, low_open=True` is "positive"; `low=0` alone is "non-negative". The error names the flag.
    """
    for name in names:
        v = getattr(cfg, name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _number_error(cfg, name, "must be a finite number")
        if low is not None and (v <= low if low_open else v < low):
            raise _number_error(cfg, name, f"must be {'>' if low_open else '>='} {low:g}"
                                + (f" and {'<' if high_open else '<='} {high:g}" if high is not None else ""))
        if high is not None and (v >= high if high_open else v > high):
            raise _number_error(cfg, name, f"must be {'<' if high_open else '<='} {high:g}"
                                + (f" and {'>' if low_open else '>='} {low:g}" if low is not None else ""))


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
        run(cls(**kwargs))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = inspect.getdoc(cls)
    return command
