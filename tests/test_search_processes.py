"""Two real processes asking one journal study at once get distinct trials:
the groundwork for a search's workers (issue 18)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import optuna
import pytest

from tb_retune.trainer.search import journal_path
from tb_retune.trainer.search._study import open_storage

ASKER = textwrap.dedent("""
    import json, os, sys, time
    import optuna
    from tb_retune.trainer.search._study import open_storage

    logdir, name, count, go, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(logdir))
    deadline = time.monotonic() + 120
    while not os.path.exists(go):  # both start asking together
        if time.monotonic() > deadline:
            sys.exit("no go file")
        time.sleep(0.005)
    got = []
    for _ in range(count):
        trial = study.ask()
        x = trial.suggest_float("x", -1.0, 1.0)
        got.append({"number": trial.number, "x": x, "enqueued": trial.user_attrs.get("enqueued")})
        study.tell(trial, x * x)
    with open(out, "w") as f:
        json.dump({"pid": os.getpid(), "trials": got}, f)
""")


@pytest.mark.slow
def test_two_processes_asking_one_journal_study_get_distinct_trials(tmp_path: Any) -> None:
    logdir = str(tmp_path)
    study = optuna.create_study(study_name="s-par", storage=open_storage(logdir))
    enqueued = 6
    for i in range(enqueued):  # like a baseline and retries: each must be taken by one process only
        study.enqueue_trial({"x": i / 10}, user_attrs={"enqueued": i})
    go = os.path.join(logdir, "go")
    each = 12
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", ASKER, logdir, "s-par", str(each), go,
                               os.path.join(logdir, f"out-{i}.json")], env=env, stderr=subprocess.PIPE)
             for i in range(2)]
    time.sleep(1.0)  # both are up and waiting (the go file is what they wait on, not this sleep)
    open(go, "w").close()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    results = []
    for i in range(2):
        with open(os.path.join(logdir, f"out-{i}.json")) as f:
            results.append(json.load(f))
    assert results[0]["pid"] != results[1]["pid"]
    numbers = [t["number"] for r in results for t in r["trials"]]
    assert len(numbers) == 2 * each
    assert sorted(numbers) == list(range(2 * each)), numbers  # distinct, none lost
    taken = sorted(t["enqueued"] for r in results for t in r["trials"] if t["enqueued"] is not None)
    assert taken == list(range(enqueued))  # every queued trial ran once, in one process
    final = optuna.load_study(study_name="s-par", storage=open_storage(logdir))
    assert len(final.trials) == 2 * each
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in final.trials)
    assert os.path.isfile(journal_path(logdir))
