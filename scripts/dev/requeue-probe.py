"""Drop a stopped probe's queue so its next resume queues the remaining units afresh.

Units wait in the probe's Optuna study as WAITING trials, in the order the seqsearch that
queued them chose (`pair_units`). After an upgrade that queues differently, a resume would
still take the old queue first. This marks every WAITING trial FAIL with `idle` (as a worker
marks a duplicate it drops); the next `seqsearch run` queues every unit without a result or a
live trial again, in the running version's order. Results, finished units and the journal's
history are kept; no unit is lost, since unqueued units are queued on resume.

Run it only while no worker of the study runs:

    python scripts/dev/requeue-probe.py studies/mobilenetv2-fashionmnist6k.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from seqsearch.config import load_study
from seqsearch.search.storage import open_storage


def main(path: str) -> int:
    study = load_study(Path(path))
    out_dir = study.output_dir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(None, out_dir)
    probe = optuna.load_study(study_name=f"{study.name}-probe", storage=storage)
    waiting = probe.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for t in waiting:
        storage.set_trial_user_attr(t._trial_id, "idle", True)
        storage.set_trial_user_attr(t._trial_id, "requeued", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    print(f"{len(waiting)} waiting unit(s) of {study.name}-probe dropped from the queue; "
          f"`seqsearch run {path}` queues them again")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/dev/requeue-probe.py STUDY.yaml")
    sys.exit(main(sys.argv[1]))
