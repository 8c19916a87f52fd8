"""Local worker processes on one study's storage: how many, how many threads each, and
starting them so that they never outlive the command that started them.

Measured on the quickstart probe (64 stage trainings, 2 cores): one process with 2 threads
128 s, two workers with 1 thread each 89 s. So `seqsearch probe` and `seqsearch run` default
to `--workers auto`: one single-threaded worker per thread this process would use (torch's
thread count, which `--threads K` or OMP_NUM_THREADS set), and no subprocess at all when that
is one thread.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from seqsearch.errors import SeqsearchError

AUTO = "auto"


def workers_arg(text: str) -> int | str:
    """argparse type of --workers: a positive count or 'auto'."""
    if text == AUTO:
        return AUTO
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a count (1, 2, …) or 'auto'") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: must be at least 1 (or 'auto')")
    return n


def cores() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, n or 1)


def thread_budget() -> int:
    """Threads this process may use: torch's count (set by --threads or OMP_NUM_THREADS), never
    more than the cores it may run on."""
    import torch

    return max(1, min(torch.get_num_threads(), cores()))


def resolve_workers(value: int | str) -> int:
    if value == AUTO:
        return thread_budget()
    if not isinstance(value, int) or value < 1:
        raise SeqsearchError(f"--workers {value}: must be at least 1 (or 'auto')")
    return value


def thread_share(workers: int, budget: int | None = None) -> int:
    """Torch threads for each of `workers` local processes: the budget (default: the cores)
    split evenly, so N workers never oversubscribe the machine."""
    return max(1, (budget if budget is not None else cores()) // max(1, workers))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the kernel sends the worker SIGTERM when its parent dies (even by SIGKILL), so
    a killed command leaves no worker training on; the next run re-queues their units."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(args: Sequence[str], n: int, what: str, *, quiet: bool = False,
          per_worker: Sequence[Sequence[str]] | None = None) -> None:
    """Start `n` `python -m seqsearch ARGS` workers and wait for all; one failing is an error
    that says how to resume."""
    from seqsearch.timings import SPAWNED_WORKER_ENV

    base = [sys.executable, "-m", "seqsearch", *args]
    out = subprocess.DEVNULL if quiet else None
    env = {**os.environ, SPAWNED_WORKER_ENV: "1"}
    procs = [subprocess.Popen(base + list(per_worker[i] if per_worker else []), stdout=out,
                              env=env,
                              preexec_fn=_die_with_parent if sys.platform == "linux" else None)
             for i in range(n)]
    _wait_all(procs, what)


def _wait_all(procs: list[Any], what: str) -> None:
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.wait()
        raise
    bad = [c for c in codes if c != 0]
    if bad:
        raise SeqsearchError(f"{len(bad)} of {len(procs)} {what} workers failed (exit {bad[0]}); "
                             "run the same command again to resume")
