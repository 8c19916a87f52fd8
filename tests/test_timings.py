"""timings.json sums a step's wall time over invocations, a killed one included."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from seqsearch.timings import StepTimes


def _sleep_in_step(path: str) -> None:
    clock = StepTimes(Path(path), heartbeat_s=0.05)
    with clock.step("probe"):
        time.sleep(60)


def test_a_killed_step_keeps_its_time_and_a_rerun_adds_to_it(tmp_path):
    path = tmp_path / "timings.json"
    path.write_text(json.dumps({"baseline": 5.0}))
    proc = mp.get_context("spawn").Process(target=_sleep_in_step, args=(str(path),))
    proc.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.is_file() and json.loads(path.read_text()).get("probe", 0) >= 0.3:
            break
        time.sleep(0.05)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    killed = json.loads(path.read_text())
    assert killed["baseline"] == 5.0 and killed["probe"] >= 0.3  # the old file is kept whole

    clock = StepTimes(path)
    with clock.step("probe"):
        time.sleep(0.2)
    with pytest.raises(RuntimeError), clock.step("tune"):
        raise RuntimeError("a failing step still counts")
    after = json.loads(path.read_text())
    assert after["probe"] >= killed["probe"] + 0.2
    assert after["probe"] < killed["probe"] + 5
    assert set(after) == {"baseline", "probe", "tune"}
