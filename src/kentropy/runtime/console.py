"""What reaches the terminal: kentropy's own lines and bars, the libraries' only with --verbose.

    with quiet(verbose):        # lm-eval, datasets, transformers, accelerate: no bars, warnings only
        ...
    line("measure A (1/3)")     # a stderr line that always starts a line, even after a progress bar

`track_stderr()` wraps stderr so that `line` knows whether a bar left the cursor mid-line
(a file gets the bar's `\\r` updates without a final newline).
"""

from __future__ import annotations

import contextlib
import logging
import sys

LIBRARY_LOGGERS = ("lm_eval", "lm-eval", "datasets", "transformers", "accelerate", "evaluate", "huggingface_hub",
                   "sqlitedict", "filelock", "fsspec", "urllib3", "httpx")


class _LineTracker:
    """A stream proxy that remembers whether the last thing written ended a line."""

    def __init__(self, stream):
        self._stream = stream
        self.at_line_start = True

    def write(self, text: str) -> int:
        if text:
            self.at_line_start = text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def track_stderr():
    """Inside: `sys.stderr` remembers whether it is at the start of a line (for `line`)."""
    saved = sys.stderr
    sys.stderr = _LineTracker(saved)
    try:
        yield
    finally:
        sys.stderr = saved


def line(text: str) -> None:
    """Print `text` on stderr at the start of a line of its own (after a bar's unfinished line, on the next)."""
    if not getattr(sys.stderr, "at_line_start", True):
        sys.stderr.write("\n")
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


_verbose: list[bool] = [False]


def is_verbose() -> bool:
    """Whether the running command was given `--verbose` (the libraries' own output is then shown)."""
    return _verbose[0]


def _from_kentropy() -> bool:
    """Whether the progress bar being made is kentropy's own (its maker's module, past tqdm's own frames)."""
    f = sys._getframe(2)
    while f is not None and f.f_globals.get("__name__", "").split(".")[0] == "tqdm":
        f = f.f_back
    return f is not None and f.f_globals.get("__name__", "").split(".")[0] == "kentropy"


@contextlib.contextmanager
def quiet(verbose: bool = False):
    """The libraries' progress bars off and their logs at warnings, unless `verbose`; kentropy's own bars stay.

    A library's bar is one made by code outside kentropy (lm-eval's "Running loglikelihood requests",
    datasets' "Generating test split", transformers' loading bars).
    """
    _verbose[0] = verbose
    if verbose:
        try:
            yield
        finally:
            _verbose[0] = False
        return
    import tqdm.std

    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [lg.level for lg in loggers]
    raw = tqdm.std.tqdm.__dict__["__init__"]  # restored as it was (tqdm wraps it in a descriptor)
    init = tqdm.std.tqdm.__init__

    def quiet_init(self, *args, **kw):
        if not _from_kentropy():
            kw["disable"] = True
        init(self, *args, **kw)

    try:
        for lg in loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        tqdm.std.tqdm.__init__ = quiet_init
        yield
    finally:
        tqdm.std.tqdm.__init__ = raw
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
