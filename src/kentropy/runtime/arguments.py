"""Checks of the Python API's arguments, done before any work: each returns the value or raises an
`ArgumentError` naming the argument (the CLI shows it as the flag: `kentropy.runtime.options`).

    texts = strings("texts", texts)                  # a list of str; one str is refused, never split
    batch_size = integer("batch_size", batch_size, low=1)
    ratio = number("ratio", ratio, low=0, high=1, low_open=True, high_open=True)
    activation = choice("activation", activation, ("abs", "relu"))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

from kentropy.errors import ArgumentError


def sequence(name: str, value, what: str = "str") -> list:
    """`value` as a list: any iterable but a str, bytes or mapping (one item where a list of them is expected)."""
    if isinstance(value, (str, bytes, Mapping)):  # iterable, but never split into characters or keys
        raise ArgumentError(name, f"one {type(value).__name__} where a list of {what} is expected: wrap it in a list", value)
    if not isinstance(value, Iterable):
        raise ArgumentError(name, f"expected a list of {what}, got {type(value).__name__}", value)
    return list(value)


def strings(name: str, value, *, empty: bool = False) -> list[str]:
    """A list of str (documents, metric names, words); empty only where `empty`."""
    items = sequence(name, value)
    for i, x in enumerate(items):
        if not isinstance(x, str):
            raise ArgumentError(f"{name}[{i}]", f"expected a str, got {type(x).__name__}", x)
    if not items and not empty:
        raise ArgumentError(name, "is empty", items)
    return items


def integer(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """An int (not a bool, not a float with an integral value) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(name, "must be an integer", value)
    value = int(value)
    if low is not None and value < low:
        raise ArgumentError(name, f"must be >= {low}" + (f" and <= {high}" if high is not None else ""), value)
    if high is not None and value > high:
        raise ArgumentError(name, f"must be <= {high}" + (f" and >= {low}" if low is not None else ""), value)
    return value


def number(name: str, value, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number within the bounds: `low=0, low_open=True` is "positive", `low=0` alone "non-negative"."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ArgumentError(name, "must be a finite number", value)
    if low is not None and (value <= low if low_open else value < low):
        raise ArgumentError(name, f"must be {'>' if low_open else '>='} {low:g}"
                            + (f" and {'<' if high_open else '<='} {high:g}" if high is not None else ""), value)
    if high is not None and (value >= high if high_open else value > high):
        raise ArgumentError(name, f"must be {'<' if high_open else '<='} {high:g}"
                            + (f" and {'>' if low_open else '>='} {low:g}" if low is not None else ""), value)
    return value


def choice(name: str, value, choices: Iterable[str]) -> str:
    """One of `choices` (compared as given: no case folding)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ArgumentError(name, f"choose {', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1
                            else f"must be {choices[0]}", value)
    return value



def transformers_model(name: str, value):
    """A transformers model (a module with a `config`), e.g. not its tokenizer passed in its place."""
    if not callable(getattr(value, "parameters", None)) or getattr(value, "config", None) is None:
        raise ArgumentError(name, f"expected a transformers model, got {type(value).__name__}")
    return value


def transformers_tokenizer(name: str, value):
    """A transformers tokenizer (callable, with special tokens), e.g. not the model passed in its place."""
    if not callable(value) or not callable(getattr(value, "num_special_tokens_to_add", None)):
        raise ArgumentError(name, f"expected a transformers tokenizer, got {type(value).__name__}")
    return value
