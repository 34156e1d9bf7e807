"""The one exception type for bad input: the CLI prints its message on one line and exits 2.

`ArgumentError` is the `KentropyError` of one named argument. Its message names the argument as the
caller wrote it (`batch_size=0: must be positive`); the CLI, which knows the flag that set the
argument, shows the same error as that flag (`--batch-size 0: must be positive`: see
`kentropy.runtime.options.typer_command`). So a Python caller is never told about a flag it never
typed, and the CLI never about a Python name.
"""

from __future__ import annotations

UNSET = object()  # an ArgumentError that shows no value (a tensor, a model: too big for one line)


class KentropyError(Exception):
    """Bad input from the user (a file, field, flag or model): the message names it."""


class ArgumentError(KentropyError):
    """Bad value `value` of argument `name`: `why` says what is wrong (one line, without the name)."""

    def __init__(self, name: str, why: str, value=UNSET) -> None:
        self.name, self.why, self.value = name, why, value
        super().__init__(f"{name}={shown(value)}: {why}" if value is not UNSET else f"{name}: {why}")


def shown(value, limit: int = 60) -> str:
    """A value as a Python caller would write it, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def reason(e: BaseException) -> str:
    """A library exception's whole message on one line (its type's name when it has none): what a
    one-line error keeps of a failure it reports, never cut after the first line."""
    text = " ".join(str(e).split())
    return text or type(e).__name__
