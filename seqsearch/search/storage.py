"""Optuna storage for probe and tuning work, shared by any number of worker processes.

Default: a journal file in the study folder (one machine, many processes). `--storage` takes an
RDB URL (`sqlite:///…`, `postgresql://…`: many machines) or a path to a journal file. A worker
killed mid-trial leaves a RUNNING trial: on RDB storage Optuna's heartbeat fails it; on any
storage a trial whose recorded process (same host) is gone is failed by `reap_dead_trials`,
and its unit of work is queued again, so nothing completed is lost and nothing is duplicated.
"""

from __future__ import annotations

import datetime
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
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
                if spec.startswith("postgresql"):
                    with _schema_lock(spec):
                        return _rdb(spec)
                return _rdb(spec)
        except Exception as exc:  # noqa: BLE001 - any driver/connection error is a user error
            first = first_line(exc, 1000)
            raise SeqsearchError(f"--storage {spec}: cannot open it ({first})") from None
    return _journal(Path(spec))


def _rdb(url: str) -> RDBStorage:
    return RDBStorage(url, heartbeat_interval=30, grace_period=120,
                      engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else {})


# Any fixed 64-bit key; it only has to be the same in every seqsearch process.
_SCHEMA_LOCK_KEY = 0x5E95EAC4


@contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock while Optuna creates or checks its tables.

    RDBStorage creates its tables, its version row and its alembic stamp with check-then-create
    steps, each in its own transaction; processes opening an empty database at the same instant
    all see "missing" and all create, and the losers fail (UniqueViolation on pg_type). Optuna
    has no option to serialize this, so the opens take turns on a lock that belongs to the
    database. A session-level lock is released when its connection closes, so a process killed
    while holding it cannot block the others.
    """
    # Autocommit: the lock belongs to the session, so no transaction is left open meanwhile.
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                             {"k": _SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


def _journal(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = JournalFileOpenLock(str(path))
    return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))


# A worker claims a trial a few milliseconds after taking it; one killed in between leaves a
# RUNNING trial that names no process. After this long such a trial is taken to be dead.
CLAIM_GRACE_S = 120.0


def claim(trial: optuna.Trial) -> bool:
    """Record which process runs a trial, so a dead worker's trial can be recognised.

    False when the trial was reaped meanwhile (this worker took longer than CLAIM_GRACE_S to
    claim it): the worker drops it, its unit of work has been queued again."""
    try:
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", HOST)
    except RuntimeError:  # Optuna's UpdateFinishedTrialError: already failed by a reaper
        return False
    return True


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
    """A RUNNING trial whose process (on this host) is gone, or that no process claimed within
    CLAIM_GRACE_S of its start (its worker was killed between taking and claiming it)."""
    if t.state != TrialState.RUNNING:
        return False
    host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
    if host is None:
        start = t.datetime_start
        return start is not None and \
            (datetime.datetime.now() - start).total_seconds() > CLAIM_GRACE_S
    return host == HOST and isinstance(pid, int) and pid != os.getpid() and not _alive(pid)


def reap_dead_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Fail RUNNING trials whose worker process (on this host) is gone; returns those this call
    failed (another worker may reap the same trial first: then it is not in the list)."""
    if isinstance(study._storage, RDBStorage):
        optuna.storages.fail_stale_trials(study)
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_dead(t):
            try:
                study._storage.set_trial_user_attr(t._trial_id, "reaped", True)
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except RuntimeError:  # UpdateFinishedTrialError: another worker reaped it
                continue
            reaped.append(t)
    return reaped


def unclaimed(study: optuna.Study) -> bool:
    """Whether a RUNNING trial names no process yet (just taken, or its taker was killed)."""
    return any("host" not in t.user_attrs
               for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
