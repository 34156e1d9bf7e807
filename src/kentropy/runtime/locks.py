"""One writer per output: a command holds a lock on each output it writes for as long as it runs.

    with locked(["runs/x", "r.json"]):   # a second command on runs/x fails at once, in one line
        ...

The locks are `flock`s on files in the temp directory (`kentropy-locks-UID/`), named by a hash of
each output's absolute path: nothing is left beside the outputs, and a killed holder releases its
lock with its process. They serialize commands of one user on one machine (not across machines).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from kentropy.errors import KentropyError


def _lock_file(path: str | os.PathLike) -> Path:
    key = os.path.realpath(os.path.abspath(path))  # the same output however it is named (links in its parents)
    d = Path(tempfile.gettempdir()) / f"kentropy-locks-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")


@contextlib.contextmanager
def locked(outputs: list[tuple[str, str]]):
    """Hold the lock of every (flag, path) in `outputs` inside; one held by another command is a one-line error."""
    fds = []
    try:
        for flag, path in outputs:
            fd = os.open(_lock_file(path), os.O_RDWR | os.O_CREAT, 0o600)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise KentropyError(f"{flag} {path}: another kentropy command (pid {holder}) is writing it; "
                                    f"wait for it to finish") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # releases the flock
