"""Runs side by side in worker processes, stopped at once by an interrupt.

    with worker_pool(2) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        for f in concurrent.futures.as_completed(futures): ...

`concurrent.futures.ProcessPoolExecutor` leaves its `with` block only when every submitted run has
finished, so an interrupted parent would wait while its workers compute and take up the pending runs.
Here an exception that leaves the block (KeyboardInterrupt from Ctrl-C or SIGTERM included) cancels
the pending runs and terminates the running workers before it goes on: what they were writing is left
as temps of atomic writes, which the next run removes (`kentropy.io.clean_stale_temps`). Workers ignore
SIGINT (Ctrl-C in a terminal reaches the whole process group: the parent alone decides), and hold no
semaphore of their own (tqdm's bars take a thread lock), so that a terminated one leaves nothing for
the resource tracker to warn about. They are spawned (fresh interpreters: no inherited threads, locks
or CUDA state).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import signal
import threading

from tqdm.std import tqdm

STOP_SECONDS = 5.0  # a worker that has not exited this long after SIGTERM gets SIGKILL


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.set_lock(threading.RLock())  # instead of a multiprocessing lock, which a terminated worker would leak


def stop(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel the pending runs of `pool` and terminate its workers, now."""
    # the executor has no public handle on its processes before Python 3.14 (`terminate_workers`)
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in workers:
        if p.is_alive():
            p.terminate()
    for p in workers:
        p.join(STOP_SECONDS)
        if p.is_alive():
            p.kill()
            p.join()


@contextlib.contextmanager
def worker_pool(workers: int):
    """A process pool of `workers` spawned processes that an exception (an interrupt) stops at once."""
    pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    try:
        yield pool
    except BaseException:
        stop(pool)
        raise
    pool.shutdown(wait=True)
