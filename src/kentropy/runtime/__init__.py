"""What every command's run stands on: nothing here knows about models or entropy.

    options.py      config dataclass fields -> CLI flags and their checks (`option`, `require`, `typer_command`)
    console.py      what reaches the terminal: kentropy's lines and bars, the libraries' only with --verbose
    locks.py        one writer per output: a lock held on each output while a command runs
    series.py       a checkpoint series that survives a crash (`OUT.partial`, `--resume`)
    distributed.py  rank, world size, barrier and device under torchrun
    rng.py          random states: saved, restored, and kept around code that must not disturb a caller
"""
