"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys

# The precision the stage suites train under: the study default (`auto`: bf16 where the CPU
# has it natively, else fp32). CI runs the order suite and the torchvision matrix a second
# time with SEQSEARCH_TEST_PRECISION=bf16, so the bf16 path is tested on every machine.
TEST_PRECISION = os.environ.get("SEQSEARCH_TEST_PRECISION", "auto")
TEST_MEMORY_FORMAT = os.environ.get("SEQSEARCH_TEST_MEMORY_FORMAT", "auto")


# Under pytest-xdist two test workers share the two cores: every process a test starts runs
# one torch thread (conftest.py also sets OMP_NUM_THREADS=1 for them). Two OpenMP threads per
# process on shared cores spin at each barrier for a descheduled partner: the suite ran 2-4x
# slower that way on a 2-core AMD EPYC (test_report's study 144 s under xdist, 38 s alone).
UNDER_XDIST = bool(os.environ.get("PYTEST_XDIST_WORKER"))
THREADS = "1" if UNDER_XDIST else "2"


def capped(args: tuple[str, ...] | list[str]) -> list[str]:
    """`args` with every `--threads N` at most THREADS."""
    out = list(args)
    for i in range(len(out) - 1):
        if out[i] == "--threads" and out[i + 1].isdigit() and int(out[i + 1]) > int(THREADS):
            out[i + 1] = THREADS
    return out


def run_cli(*args: str, cwd: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    """`python -m seqsearch ARGS` quietly in a subprocess; with `check`, it must succeed.
    Under xdist its `--threads` is capped at one (see THREADS)."""
    env = {**os.environ, "SEQSEARCH_QUIET": "1"}
    if UNDER_XDIST:
        env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "seqsearch", *capped(args)], capture_output=True,
                          text=True, env=env, cwd=cwd)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def run_isolated(code: str, cwd: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """`code` in an isolated interpreter (`python -I`, no PYTHONPATH): what a deployment that
    has only the runtime and numpy sees; no seqsearch source or torch import slips in."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                          env=env, cwd=cwd)
