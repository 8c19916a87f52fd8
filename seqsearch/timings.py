"""timings.json: the wall seconds each step of a study has taken, summed over every invocation
that ran it, whether `seqsearch run` or the training step's own command (`seqsearch probe`,
`tune`, `export`; the probe's insertion, repetition and brute-force runs count as `checks`). A
study resumed over several sessions then states its whole cost: a running step rewrites its
figure every `HEARTBEAT_S`, so a killed invocation's time is kept to within that (a finished
step re-run to resume adds the seconds it takes to find its results). Each write adds the
seconds since the last one to the file's figure under a lock, so commands running at once keep
each other's time: worker processes a command spawns leave the counting to it, while workers
started by hand on one step add up to that step's worker-seconds."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows has no fcntl: writes there stay atomic, but unlocked
    fcntl = None  # type: ignore[assignment]

from seqsearch import atomic

HEARTBEAT_S = 30.0
# set in the environment of the worker processes a command spawns: their parent counts the time
SPAWNED_WORKER_ENV = "SEQSEARCH_SPAWNED_WORKER"


class StepTimes:
    def __init__(self, path: Path, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = path
        self.heartbeat_s = heartbeat_s
        self.times: dict[str, float] = (json.loads(path.read_text()) if path.is_file() else {})
        self._lock = threading.Lock()

    def _add(self, name: str, seconds: float) -> bool:
        """Add `seconds` to the step's figure on disk; False (nothing written) while the study
        folder does not exist yet."""
        folder = self.path.parent
        if not folder.is_dir():
            return False
        with _folder_lock(folder):
            try:
                on_disk: dict[str, Any] = json.loads(self.path.read_text())
            except (OSError, ValueError):
                on_disk = {}
            on_disk[name] = round(float(on_disk.get(name, 0.0)) + seconds, 3)
            atomic.write_json(self.path, on_disk)
            self.times = on_disk
        return True

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        last = time.perf_counter()
        stop = threading.Event()

        def flush() -> None:
            nonlocal last
            with self._lock:
                now = time.perf_counter()
                if self._add(name, now - last):
                    last = now

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                flush()

        thread = threading.Thread(target=beat, name=f"timings-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            flush()


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (no lock file left behind)."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def timed_command(out_dir: Path, name: str) -> Any:
    """A training step command's own clock (`seqsearch probe`, `tune`, `export`), as `run`
    keeps per step; none in a spawned worker."""
    from contextlib import nullcontext

    if os.environ.get(SPAWNED_WORKER_ENV):
        return nullcontext()
    return StepTimes(out_dir / "timings.json").step(name)
