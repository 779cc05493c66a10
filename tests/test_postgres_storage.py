"""Optuna's RDBStorage on a real PostgreSQL server: what a search's workers (issue 18) rely on.

A worker that dies mid-trial stops beating; ``fail_stale_trials`` fails its
trial once the grace period has passed and the retry callback queues the same
settings again. Two processes asking one study at once get distinct trials.
The server is private to this pytest session (the ``postgres_url`` fixture).
These tests do not depend on the Keras backend: no ``backend`` marker, so
``make test`` runs them once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from tests.conftest import wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),  # the heartbeat API
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),
]

HEARTBEAT_S = 1
GRACE_S = 3


def _storage(url: str) -> RDBStorage:
    return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # one database for the session: a study of its own


def test_server_is_private_on_loopback(postgres_url: str) -> None:
    import sqlalchemy

    assert postgres_url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            settings = dict(conn.execute(sqlalchemy.text(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('listen_addresses', 'fsync', 'unix_socket_directories')")).all())
            user = conn.execute(sqlalchemy.text("SELECT current_user")).scalar()
    finally:
        engine.dispose()
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["fsync"] == "off"
    assert os.path.basename(settings["unix_socket_directories"]).startswith("tbr-pg-")
    assert user == "postgres"


def test_a_trial_whose_heartbeat_stops_is_failed_after_the_grace_period_and_retried(postgres_url: str) -> None:
    storage = _storage(postgres_url)
    try:
        study = optuna.create_study(study_name=_name("stale"), storage=storage)
        space = {"x": FloatDistribution(0.0, 1.0)}
        stale = study.ask(space)
        never_beat = study.ask(space)  # no heartbeat at all: Optuna never calls it stale
        live = study.ask(space)

        before = time.monotonic()
        storage.record_heartbeat(stale._trial_id)  # one beat, then none (its worker died)
        storage.record_heartbeat(live._trial_id)

        def stale_failed() -> bool:
            storage.record_heartbeat(live._trial_id)  # this one's worker is alive
            fail_stale_trials(study)
            return study._storage.get_trial(stale._trial_id).state == TrialState.FAIL

        wait_for(stale_failed, timeout=120, interval=0.25, what="fail_stale_trials to fail the stale trial")
        # The database's clock: failed only once more than the grace period passed since the beat.
        assert time.monotonic() - before > GRACE_S
        assert study._storage.get_trial(live._trial_id).state == TrialState.RUNNING
        assert study._storage.get_trial(never_beat._trial_id).state == TrialState.RUNNING

        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        assert len(waiting) == 1, waiting
        retry = waiting[0]
        assert retry.params == stale.params
        assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == stale.number

        # The next ask hands the retry out (the same settings), before any new sample.
        again = study.ask(space)
        assert again.number == retry.number
        assert again.params == stale.params
        study.tell(again, 0.5)
        assert [t.state for t in study.get_trials(deepcopy=False)] == [
            TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING, TrialState.COMPLETE]
    finally:
        storage.engine.dispose()


ASKER = textwrap.dedent("""
    import json, os, sys, time, warnings
    import optuna

    url, name, count, ready, go, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=3)
    study = optuna.load_study(study_name=name, storage=storage)
    open(ready, "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(go):  # both start asking together
        if time.monotonic() > deadline:
            sys.exit("no go file within 120 s")
        time.sleep(0.005)
    got = []
    for _ in range(count):
        trial = study.ask()
        x = trial.suggest_float("x", -1.0, 1.0)
        trial.report(x, 0)
        got.append({"number": trial.number, "x": x, "enqueued": trial.user_attrs.get("enqueued")})
        study.tell(trial, x * x)
    storage.engine.dispose()
    with open(out, "w") as f:
        json.dump({"pid": os.getpid(), "trials": got}, f)
""")


@pytest.mark.slow
def test_two_processes_asking_one_study_get_distinct_trials(postgres_url: str, tmp_path: Any) -> None:
    name = _name("par")
    storage = _storage(postgres_url)
    try:
        study = optuna.create_study(study_name=name, storage=storage)
        enqueued = 6
        for i in range(enqueued):  # like a baseline and retries: each must be taken by one process only
            study.enqueue_trial({"x": i / 10}, user_attrs={"enqueued": i})
        go = str(tmp_path / "go")
        each = 15
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        procs = [subprocess.Popen([sys.executable, "-c", ASKER, postgres_url, name, str(each),
                                   str(tmp_path / f"ready-{i}"), go, str(tmp_path / f"out-{i}.json")],
                                  env=env, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        try:
            wait_for(lambda: all(os.path.exists(tmp_path / f"ready-{i}") or p.poll() is not None
                                 for i, p in enumerate(procs)), timeout=120, what="both askers connected")
            open(go, "w").close()
            for p in procs:
                _, err = p.communicate(timeout=120)
                assert p.returncode == 0, err
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        outs = [json.loads((tmp_path / f"out-{i}.json").read_text()) for i in range(2)]
        numbers = [t["number"] for o in outs for t in o["trials"]]
        assert len(numbers) == 2 * each
        assert sorted(numbers) == list(range(2 * each)), numbers  # distinct, none skipped
        taken = sorted(t["enqueued"] for o in outs for t in o["trials"] if t["enqueued"] is not None)
        assert taken == list(range(enqueued))  # each enqueued trial ran exactly once
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == 2 * each
        assert all(t.state == TrialState.COMPLETE for t in trials)
        assert all(t.intermediate_values == {0: t.params["x"]} for t in trials)
    finally:
        storage.engine.dispose()
