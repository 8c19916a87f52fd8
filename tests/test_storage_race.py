"""Many processes opening one empty PostgreSQL storage at the same instant (issue 24, item 3).

Each run gets its own empty schema (the URL's role owns its database but may not create
databases); for Optuna's tables that is the same as a fresh database: they and their row types
are created in it, so concurrent first opens race exactly as on a new database.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from seqsearch.search.storage import open_storage

URL = os.environ.get("SEQSEARCH_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(
    not URL, reason="set SEQSEARCH_TEST_POSTGRES (scripts/dev/postgres-dev.sh prints it)")

N_PROCS = 4  # two `seqsearch probe` x two workers, as on a two-core machine
STUDY = "race"

# Each process: connect once (imports and driver warm-up are done before the start, so all
# reach Optuna's check-then-create at the same moment), say it is ready, wait for the parent to
# release the shared "go" lock (it wakes every waiter at once), then open the storage, create or
# load the one study and add one trial. A failure to open exits 2, like the CLI.
_WORKER = """
import fcntl, sys, warnings
from pathlib import Path
import optuna
import sqlalchemy
from seqsearch.errors import SeqsearchError
from seqsearch.search.storage import open_storage
url, d, i = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.simplefilter("ignore")  # Optuna's heartbeat notes; keep stderr for the failure
sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool).connect().close()
with open(d / "go", "rb") as go:
    (d / f"ready{i}").touch()
    fcntl.flock(go, fcntl.LOCK_SH)
try:
    storage = open_storage(url, d)
except SeqsearchError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
study = optuna.create_study(study_name="race", storage=storage, load_if_exists=True)
study.tell(study.ask(), 1.0)
"""


def _with_search_path(url: str, schema: str) -> str:
    u = sqlalchemy.engine.make_url(url)
    return u.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)


def test_simultaneous_first_opens_on_an_empty_database_all_succeed(tmp_path: Path) -> None:
    assert URL is not None
    schema = f"race_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(URL, poolclass=sqlalchemy.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    url = _with_search_path(URL, schema)
    load: list[subprocess.Popen[bytes]] = []
    workers: list[subprocess.Popen[str]] = []
    go = (tmp_path / "go").open("wb")
    fcntl.flock(go, fcntl.LOCK_EX)
    try:
        # Keep every core busy so the processes interleave the way they do on a loaded machine.
        load = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 1)]
        workers = [subprocess.Popen([sys.executable, "-c", _WORKER, url, str(tmp_path), str(i)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for i in range(N_PROCS)]
        deadline = time.time() + 60
        while len(list(tmp_path.glob("ready*"))) < N_PROCS:
            assert time.time() < deadline, "the worker processes did not start"
            assert all(w.poll() is None for w in workers), "a worker exited before the start"
            time.sleep(0.01)
        time.sleep(0.2)  # from "ready" to waiting on the lock
        fcntl.flock(go, fcntl.LOCK_UN)
        errors = [w.communicate(timeout=60)[1] for w in workers]
        assert [w.returncode for w in workers] == [0] * N_PROCS, [e for e in errors if e]
        study = optuna.load_study(study_name=STUDY, storage=open_storage(url, tmp_path))
        assert len(study.get_trials(deepcopy=False)) == N_PROCS
    finally:
        go.close()
        for p in [*load, *workers]:
            p.kill()
            p.wait()
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
