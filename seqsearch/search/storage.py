"""Optuna storage for probe and tuning work, shared by any number of worker processes.

Default: a journal file in the study folder (one machine, many processes). `--storage` takes an
RDB URL (`sqlite:///…`, `postgresql://…`: many machines) or a path to a journal file. A worker
killed mid-trial leaves a RUNNING trial: on RDB storage Optuna's heartbeat fails it; on any
storage a trial whose recorded process (same host) is gone is failed by `reap_dead_trials`,
and its unit of work is queued again, so nothing completed is lost and nothing is duplicated.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from seqsearch.errors import SeqsearchError, first_line

HOST = socket.gethostname()


def open_storage(spec: str | None, study_dir: Path) -> BaseStorage:
    """Journal file by default; an RDB URL or a journal path when given."""
    if spec is None:
        return _journal(study_dir / "optuna.journal")
    if "://" in spec:
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(spec, heartbeat_interval=30, grace_period=120,
                                  engine_kwargs={"pool_pre_ping": True}
                                  if not spec.startswith("sqlite") else {})
        except Exception as exc:  # noqa: BLE001 - any driver/connection error is a user error
            first = first_line(exc, 1000)
            raise SeqsearchError(f"--storage {spec}: cannot open it ({first})") from None
    return _journal(Path(spec))


def _journal(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = JournalFileOpenLock(str(path))
    return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))


def claim(trial: optuna.Trial) -> None:
    """Record which process runs a trial, so a dead worker's trial can be recognised."""
    trial.set_user_attr("host", HOST)
    trial.set_user_attr("pid", os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A worker whose parent was killed is reparented; where nothing reaps it (a container's
    # init), it stays a zombie that signal 0 still reaches: dead all the same.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def is_dead(t: FrozenTrial) -> bool:
    host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
    return t.state == TrialState.RUNNING and host == HOST and isinstance(pid, int) and \
        pid != os.getpid() and not _alive(pid)


def reap_dead_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials whose worker process (on this host) is gone; returns how many."""
    if isinstance(study._storage, RDBStorage):
        optuna.storages.fail_stale_trials(study)
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_dead(t):
            study._storage.set_trial_user_attr(t._trial_id, "reaped", True)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
    return n
