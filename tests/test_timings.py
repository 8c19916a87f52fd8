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


def test_two_clocks_on_one_file_keep_each_others_time(tmp_path):
    """A step command run beside `seqsearch run` (or two commands at once) adds its own
    seconds; neither overwrites the other's figure."""
    path = tmp_path / "timings.json"
    a, b = StepTimes(path, heartbeat_s=0.02), StepTimes(path, heartbeat_s=0.02)
    with a.step("tune"), b.step("checks"):
        time.sleep(0.15)
        with b.step("tune"):
            time.sleep(0.1)
    got = json.loads(path.read_text())
    assert set(got) == {"tune", "checks"}
    assert got["tune"] >= 0.33 and got["checks"] >= 0.24  # tune: 0.25 s of a and 0.1 s of b
    assert got["tune"] < 2 and got["checks"] < 2


def test_nothing_written_before_the_study_folder_exists(tmp_path):
    from seqsearch.timings import timed_command

    with timed_command(tmp_path / "missing", "report"):
        pass
    assert not (tmp_path / "missing").exists()  # a command that failed early leaves no folder


def test_a_spawned_worker_leaves_the_counting_to_its_parent(tmp_path, monkeypatch):
    from seqsearch.timings import SPAWNED_WORKER_ENV, timed_command

    with timed_command(tmp_path, "probe"):
        pass
    assert "probe" in json.loads((tmp_path / "timings.json").read_text())
    (tmp_path / "timings.json").unlink()
    monkeypatch.setenv(SPAWNED_WORKER_ENV, "1")
    with timed_command(tmp_path, "probe"):
        pass
    assert not (tmp_path / "timings.json").exists()
