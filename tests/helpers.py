"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, cwd: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    """`python -m seqsearch ARGS` quietly in a subprocess; with `check`, it must succeed."""
    env = {**os.environ, "SEQSEARCH_QUIET": "1"}
    if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers share two cores
        env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "seqsearch", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc
