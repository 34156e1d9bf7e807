"""A checkpoint series that survives a crash: each finished checkpoint's result is saved at once.

    def compute(series):                            # a Partial
        for i, ckpt in enumerate(ckpts):
            if series.done(i): continue             # finished before the crash (--resume)
            series.add(i, measure(ckpt))            # rewrites OUT.partial atomically
        return series.ordered()
    payload = run_series(cfg, ckpts, compute)      # OUT written ({"results", "config"}), OUT.partial removed

`OUT.partial` (beside `--out`) is strict JSON: {"config": ..., "checkpoints": [...], "results": {index: result}}.
It is kept only while the series is unfinished. `--resume` skips the checkpoints it holds, and refuses a
config that differs from the one that started the series; without `--resume` an unfinished series is
refused rather than silently discarded. `run_series` is the one bookkeeping of measure, probe,
evaluate and circuits; the CLI also locks `OUT.partial` as an output for as long as the series runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from kentropy.runtime.console import line
from kentropy.runtime.distributed import rank_world
from kentropy.runtime.options import to_dict
from kentropy.errors import KentropyError
from kentropy.io import clean_stale_temps, read_json, write_json

NOT_COMPARED = ("resume",)  # flags that may change between the start of a series and its resumption


def partial_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def series_config(config: dict) -> dict:
    """The config a series is identified by (and the one saved in its results): without --resume."""
    return {k: v for k, v in config.items() if k not in NOT_COMPARED}


class Partial:
    """The finished checkpoints of one series (`checkpoints`, in order) and the file that keeps them."""

    def __init__(self, out: str | Path, config: dict, *, resume: bool, checkpoints: list[str]):
        self.out, self.path = Path(out), partial_path(out)
        self.config, self.checkpoints = series_config(config), list(checkpoints)
        self.results: dict[int, Any] = {}
        if not self.path.is_file():
            return
        if not resume:
            raise KentropyError(f"--out {self.out}: an unfinished series is saved in {self.path}; "
                                f"continue it with --resume, or delete {self.path.name} to start over")
        saved = read_json(self.path, "--resume:")
        if not isinstance(saved, dict) or not isinstance(saved.get("results"), dict) or "config" not in saved:
            raise KentropyError(f"--resume: {self.path}: not a kentropy partial series")
        old = series_config(saved["config"])
        diff = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
        if diff or saved.get("checkpoints") != self.checkpoints:
            flags = ", ".join("--" + d.replace("_", "-") for d in diff) or "the checkpoints"
            raise KentropyError(f"--resume: config differs from the unfinished series in {self.path} in {flags}")
        try:
            self.results = {int(k): v for k, v in saved["results"].items()}
        except ValueError:
            raise KentropyError(f"--resume: {self.path}: not a kentropy partial series") from None
        if self.results:
            print(f"resuming: {len(self.results)} of {len(self.checkpoints)} checkpoints finished in {self.path}", file=sys.stderr)

    def done(self, i: int) -> bool:
        return i in self.results

    def add(self, i: int, result: Any) -> None:
        """Keep checkpoint `i`'s result (JSON-ready) and save the series so far (rank 0 writes)."""
        self.results[i] = result
        if rank_world()[0] == 0:
            write_json(self.path, {"config": self.config, "checkpoints": self.checkpoints,
                                   "results": {str(k): v for k, v in sorted(self.results.items())}})

    def ordered(self) -> list[Any]:
        """The results in checkpoint order (all of them: call once the series is complete)."""
        missing = [self.checkpoints[i] for i in range(len(self.checkpoints)) if i not in self.results]
        if missing:
            raise RuntimeError(f"series incomplete: {missing}")
        return [self.results[i] for i in range(len(self.checkpoints))]

    def promote(self, payload: Any) -> Path:
        """Write the complete result to `--out`, then drop the partial file (a kill between the two: rerun with --resume)."""
        if rank_world()[0] == 0:
            write_json(self.out, payload)
            self.path.unlink(missing_ok=True)
            clean_stale_temps(self.path.parent, self.path.name)
        return self.out


def open_series(cfg, checkpoints: list) -> Partial:
    """The `Partial` of a series command's config (its `out` and `resume`) over `checkpoints` (each named by its
    `str`): checked before any work."""
    return Partial(cfg.out, to_dict(cfg), resume=cfg.resume, checkpoints=[str(c) for c in checkpoints])


def run_series(cfg, checkpoints: list, compute: Callable[[Partial], list], **extra: Any) -> dict:
    """A series command from start to end: open its `Partial` over `checkpoints` (parsed by the caller; an
    unfinished series is refused without --resume), `compute(series)` -> the results in checkpoint order
    (it skips `series.done(i)` and keeps each result with `series.add`), then `--out` gets
    {"results", "config", **extra} and `OUT.partial` goes. Returns that payload."""
    series = open_series(cfg, checkpoints)
    payload = {"results": compute(series), "config": series.config, **extra}
    series.promote(payload)
    return payload


def progress_line(command: str, i: int, n: int, checkpoint: str) -> None:
    """One stderr line as each checkpoint of a series starts (rank 0)."""
    if rank_world()[0] == 0:
        line(f"{command} {checkpoint} ({i + 1}/{n})")
