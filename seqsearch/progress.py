"""A small progress display on stderr: label, epoch, batch, loss and an ETA.

On a terminal the line is redrawn in place (at most a few times a second); elsewhere one line
is written per epoch, so logs stay readable. `SEQSEARCH_QUIET=1` silences it.
"""

from __future__ import annotations

import os
import sys
import time


def clock(seconds: float) -> str:
    """h:mm:ss."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, label: str, epochs: int, steps_per_epoch: int, *, enabled: bool = True):
        self.label = label
        self.epochs = epochs
        self.steps = max(1, steps_per_epoch)
        self.enabled = enabled and os.environ.get("SEQSEARCH_QUIET", "") in ("", "0")
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self._last_draw = 0.0

    def _line(self, epoch: int, step: int, loss: float) -> str:
        done = (epoch - 1) * self.steps + step
        total = self.epochs * self.steps
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (total - done) if done else 0.0
        return (f"[{self.label}] epoch {epoch}/{self.epochs} batch {step}/{self.steps} "
                f"loss {loss:.4f} elapsed {clock(elapsed)} ETA {clock(eta)}")

    def step(self, epoch: int, step: int, loss: float) -> None:
        if not (self.enabled and self.tty):
            return
        now = time.perf_counter()
        if now - self._last_draw < 0.25:
            return
        self._last_draw = now
        sys.stderr.write("\r\033[K" + self._line(epoch, step, loss))
        sys.stderr.flush()

    def epoch_end(self, epoch: int, loss: float, extra: str = "") -> None:
        if not self.enabled:
            return
        line = self._line(epoch, self.steps, loss) + (f" {extra}" if extra else "")
        sys.stderr.write(("\r\033[K" if self.tty else "") + line + "\n")
        sys.stderr.flush()


def note(message: str) -> None:
    """A one-line status message on stderr (respects SEQSEARCH_QUIET)."""
    if os.environ.get("SEQSEARCH_QUIET", "") in ("", "0"):
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
