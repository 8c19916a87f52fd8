"""timings.json: the wall seconds each step of `seqsearch run` has taken, summed over every
invocation that ran it. A study resumed over several sessions then states its whole cost: a
running step rewrites its figure every `HEARTBEAT_S`, so a killed invocation's time is kept
to within that (a finished step re-run to resume adds the seconds it takes to find its
results)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seqsearch import atomic

HEARTBEAT_S = 30.0


class StepTimes:
    def __init__(self, path: Path, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = path
        self.heartbeat_s = heartbeat_s
        self.times: dict[str, float] = (json.loads(path.read_text()) if path.is_file() else {})
        self._lock = threading.Lock()

    def _write(self, name: str, seconds: float) -> None:
        with self._lock:
            self.times[name] = round(seconds, 2)
            atomic.write_json(self.path, self.times)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        prior = float(self.times.get(name, 0.0))
        t0 = time.perf_counter()
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                self._write(name, prior + time.perf_counter() - t0)

        thread = threading.Thread(target=beat, name=f"timings-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self._write(name, prior + time.perf_counter() - t0)
