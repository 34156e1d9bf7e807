"""The stage engine: stages cached by the hash of their config and their code, so that an interrupted
lab resumes where it stopped, a rerun costs nothing, and a changed stage runs again.

A stage is a name, the JSON-able config it depends on (including the hashes of the stages
it reads from) and a function `fn(workdir) -> result`. The hash covers the config and the
source of the module that defines `fn` (plus any modules named in `code`). Its result is kept
in `LAB/stages/NAME-HASH/result.json`; the result file is written last (atomically), so a
stage without one is unfinished and runs again (a long stage may resume its own partial
work from `workdir`; the temps of atomic writes that a kill interrupted are removed first,
by `kentropy.io.clean_stale_temps`). Paths into the lab are stored relative to it and hashed
that way (`LabDir.stored`): a moved or copied lab resumes where it is. Wall times go to `LAB/timings.json` (`lab/labdir.py` names every path).

The console gets one line per stage (`[lab] NAME: ran in S s` or `[lab] NAME: cached`) and one progress
bar while a stage runs: the bars of kentropy's commands inside it drive that bar instead of printing
their own, the libraries' bars are off, and what the stage writes to stderr goes to
`NAME-HASH/stderr.log` (all of it reaches the console with `--verbose`).

The stages themselves are in `lab/stages/`; the recipes that call them in `lab/studies/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


from kentropy.runtime.console import is_verbose, line
from kentropy.io import clean_stale_temps, write_json
from kentropy.lab.labdir import LabDir


@dataclass
class Done:
    """A finished stage: its result, directory and hash (for the stages that depend on it)."""

    result: Any
    dir: Path
    hash: str


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def code_hash(modules) -> str:
    """The hash of the source files of `modules` (module objects or names): a stage's code."""
    import importlib

    h = hashlib.sha256()
    for m in modules:
        mod = importlib.import_module(m) if isinstance(m, str) else m
        h.update(Path(inspect.getfile(mod)).read_bytes())
    return h.hexdigest()[:12]


def _made_by_kentropy() -> bool:
    """Whether the progress bar being made comes from kentropy's code (the first frame outside tqdm and this module)."""
    f = sys._getframe(1)
    while f is not None and (f.f_globals.get("__name__", "").split(".")[0] == "tqdm" or f.f_globals.get("__name__") == __name__):
        f = f.f_back
    return f is not None and f.f_globals.get("__name__", "").split(".")[0] == "kentropy"


class _Sink:
    """Where a folded bar draws: nowhere."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class StageBar:
    """The one progress bar of a running stage, on `stream`. Inside `fold()`, every bar kentropy makes draws
    nowhere and the first open one drives this bar (its count, total and postfix); the libraries' bars are off."""

    def __init__(self, name: str, stream) -> None:
        from tqdm.std import tqdm

        self.bar = tqdm(desc=f"[lab] {name}", file=stream, leave=False)
        self.follow = None

    def _sync(self, inner) -> None:
        if inner is self.follow:
            self.bar.total, self.bar.n, self.bar.postfix = inner.total, inner.n, inner.postfix
            self.bar.refresh()

    def _adopt(self, inner) -> None:
        refresh, close = inner.refresh, inner.close

        def inner_refresh(*args, **kw):
            out = refresh(*args, **kw)
            self._sync(inner)
            return out

        def inner_close():
            self._sync(inner)
            if inner is self.follow:
                self.follow = None
            close()

        inner.refresh, inner.close = inner_refresh, inner_close
        if self.follow is None:
            self.follow = inner
            self._sync(inner)

    @contextlib.contextmanager
    def fold(self):
        import tqdm.std

        raw = tqdm.std.tqdm.__dict__["__init__"]  # restored as it was (tqdm wraps it in a descriptor)
        init = tqdm.std.tqdm.__init__

        def folded_init(inner, *args, **kw):
            ours = _made_by_kentropy()
            kw["disable"] = kw.get("disable", False) or not ours
            if ours:
                kw["file"] = _Sink()
            init(inner, *args, **kw)
            if not inner.disable:
                self._adopt(inner)

        tqdm.std.tqdm.__init__ = folded_init
        try:
            yield
        finally:
            tqdm.std.tqdm.__init__ = raw

    def close(self) -> None:
        self.bar.close()


class _Log:
    """A stage's stderr: the file is made at the first write, so a quiet stage leaves none."""

    def __init__(self, path: Path) -> None:
        self.path, self.file = path, None

    def write(self, text: str) -> int:
        if self.file is None and text:
            self.file = open(self.path, "a")
        return self.file.write(text) if self.file is not None else 0

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@contextlib.contextmanager
def _stage_console(name: str, log: Path):
    """While a stage runs: one bar on the console and its stderr in `log` (unless --verbose: all shown)."""
    if is_verbose():
        yield
        return
    console = sys.stderr
    bar = StageBar(name, console)
    out = _Log(log)
    try:
        with bar.fold():
            sys.stderr = out
            try:
                yield
            finally:
                sys.stderr = console
    finally:
        out.close()
        bar.close()
        if console.isatty() and hasattr(console, "at_line_start"):
            console.at_line_start = True  # the cleared bar left the cursor at the start of an empty line


class Stages:
    """The stages of one lab directory. record_timings=False (a worker process's): wall times are kept in
    memory only, so that the parent's `timings.json` has one writer. `report_to`: where the training stages
    also log their curves (`kentropy train --report-to`); not part of any stage's identity."""

    def __init__(self, root: Path, *, record_timings: bool = True, report_to: str = "none") -> None:
        self.dir = LabDir(root)
        self.root = self.dir.root
        self.record_timings = record_timings
        self.report_to = report_to
        path = self.dir.timings
        self.timings: dict[str, dict] = json.loads(path.read_text()) if record_timings and path.is_file() else {}

    @staticmethod
    def hash(config: Any, fn: Callable[[Path], Any], code=()) -> str:
        """A stage's hash: its config and the source of fn's module and of the modules in `code`."""
        return config_hash({"config": config, "code": code_hash([inspect.getmodule(fn), *code])})

    def run(self, name: str, config: Any, fn: Callable[[Path], Any], code=()) -> Done:
        """Run (or find cached) the stage `name`; `code`: modules beyond fn's own whose source the result depends on."""
        config = self.dir.stored(config)  # paths in the lab relative to it: the hash does not depend on where the lab is
        h = self.hash(config, fn, code)
        d = self.dir.stage(name, h)
        result_file = d / "result.json"
        if result_file.is_file():
            line(f"[lab] {name}: cached")
            return Done(self.dir.live(json.loads(result_file.read_text())), d, h)
        notes = []
        if d.is_dir():
            removed = clean_stale_temps(d, legacy=True, recursive=True)
            notes.append("resumed" + (f", {len(removed)} interrupted writes removed" if removed else ""))
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "config.json", config)
        t = time.perf_counter()
        with _stage_console(name, d / "stderr.log"):
            result = self.dir.stored(fn(d))
        seconds = time.perf_counter() - t
        write_json(result_file, result)
        self.record(name, seconds, d.name)
        line(f"[lab] {name}: ran in {seconds:.1f} s" + (f" ({'; '.join(notes)})" if notes else ""))
        return Done(self.dir.live(result), d, h)

    def record(self, name: str, seconds: float, what: str) -> None:
        """A wall time in `timings.json` (`what`: the stage directory, or what the time covers)."""
        self.timings[name] = {"seconds": round(seconds, 2), "stage": what}
        if self.record_timings:
            write_json(self.dir.timings, self.timings)
