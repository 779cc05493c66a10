"""A search's trials on more processes: the trainer and ``tb-retune worker``
processes, each running the same real training script, sharing one Optuna
study (the experiment's journal, or a real PostgreSQL server); a worker
killed mid-trial has its trial retried by another; every trial counted once."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tb_retune.experiment import worker as spec_mod
from tests.conftest import atomic_save, read_status, wait_for
from tests.test_search_trainer import SCRIPT, ScriptProcess, Trainer, branch_records, done, search_of

pytestmark = pytest.mark.slow

SPACE = {"learning_rate": {"low": 1e-3, "high": 0.3, "log": True}, "momentum": {"low": 0.0, "high": 0.9}}
TRIALS = 12
STEPS = 24


class Worker(ScriptProcess):
    """``tb-retune worker EXP -- python -m tb_retune.testing.search_trainer EXP`` in a process of its own."""

    def __init__(self, logdir: str, name: str, *, sleep: float, storage: str | None = None) -> None:
        self.logdir = logdir
        cli = [sys.executable, "-m", "tb_retune.cli", "worker", logdir, "--wait-for-search", "600"]
        if storage:
            cli += ["--storage", storage]
        super().__init__(cli + ["--", sys.executable, *SCRIPT, logdir, "--sleep", str(sleep)],
                         os.path.join(os.path.dirname(logdir), f"worker-{name}.log"))

    @property
    def folder(self) -> str:
        return os.path.join(spec_mod.workers_folder(self.logdir), f"{os.uname().nodename}-{self.proc.pid}")

    def status(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.folder, "worker-status.json")) as f:
                data: dict[str, Any] = json.load(f)
                return data
        except (OSError, ValueError):
            return {}

    def wait(self) -> int:
        return self.proc.wait(timeout=600)


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for p in started:
        p.close()


def _search(logdir: str, **changes: Any) -> None:
    doc = {"id": "s-1", "space": SPACE, "trials": TRIALS, "steps_per_trial": STEPS,
           "objective": {"metric": "val_loss"}, "sampler": "random"}
    doc.update(changes)
    atomic_save(os.path.join(logdir, "retune.json"), {"search": doc})


def _stop(trainer: Trainer) -> None:
    trainer.stop()


def _check_exactly_once(logdir: str, entry: dict[str, Any], pids: set[int]) -> list[dict[str, Any]]:
    """Every trial number trained once, by one process; ``trials`` of them count."""
    assert entry["state"] == "done", entry
    counted = [t for t in entry["trials"] if not t.get("interrupted")]
    assert len(counted) == TRIALS, [(t["number"], t["state"], t.get("worker")) for t in entry["trials"]]
    assert all(t["state"] in ("complete", "pruned") for t in counted), counted
    assert len({t["number"] for t in counted}) == TRIALS
    assert len({t["branch"] for t in entry["trials"]}) == len(entry["trials"])  # distinct branch names
    ran = {t["worker"]["pid"] for t in counted}
    assert ran == pids, (ran, pids)  # each process ran at least one, and only these ran any
    source = entry["source"]
    for t in counted:
        assert t["worker"]["host"] == os.uname().nodename
        # Its own run in the shared experiment, starting at the source, with its node record.
        records, steps = branch_records(logdir, t["branch"])
        assert steps["loss"] and all(source["step"] < s <= t["step"] for s in steps["loss"]), (t, steps["loss"])
        first = min(records, key=lambda r: r["seq"])
        assert first["search"]["trial"] == t["number"] and first["restore"]["branch"] == source["branch"]
        assert first["step"] == source["step"]
        assert first["search"]["worker"] == t["worker"]  # the tree shows where each trial ran
    return counted


def _run_search_with_workers(tmp_path: Any, procs: list[Any], storage: str | None) -> None:
    logdir = str(tmp_path / "exp")
    args = ["--heartbeat", "1,5"] + (["--storage", storage] if storage else [])
    trainer = Trainer(logdir, sleep=0.05, extra=args)
    procs.append(trainer)
    trainer.wait_metrics()
    # The workers start before the search: they wait for one (the command is ready when it starts).
    workers = [Worker(logdir, f"w{i}", sleep=0.05, storage=storage) for i in range(2)]
    procs.extend(workers)
    for w in workers:
        wait_for(lambda w=w: w.proc.poll() is None and "waiting for a search" in w.output(), timeout=300,
                 what="a worker waiting for a search")
    _search(logdir)
    entry = wait_for(lambda: trainer._alive() and done(logdir, "s-1"), timeout=600, what="the search's end")
    for w in workers:
        assert w.wait() == 0, w.output()[-3000:]
        assert "no trial left" in w.output()
    pids = {trainer.proc.pid} | {w.status()["pid"] for w in workers}
    _check_exactly_once(logdir, entry, pids)
    # The trainer waited for all of them, then went on from the best, wherever it ran.
    best = entry["best"]
    assert entry["outcome"]["branch"] == "main-s-1-best"
    assert entry["outcome"]["from"]["branch"] == best["branch"]
    status = read_status(logdir)
    assert status["branch"] == "main-s-1-best"
    _stop(trainer)


@pytest.mark.backend  # the whole worker path on every Keras backend
def test_a_trainer_and_two_workers_run_twelve_trials_each_exactly_once(tmp_path: Any, procs: list[Any]) -> None:
    _run_search_with_workers(tmp_path, procs, storage=None)


@pytest.mark.postgres
def test_the_same_with_a_postgresql_storage(tmp_path: Any, procs: list[Any], postgres_url: str) -> None:
    _run_search_with_workers(tmp_path, procs, storage=postgres_url)


def test_a_worker_killed_mid_trial_has_its_trial_retried_and_the_total_stays(
        tmp_path: Any, procs: list[Any]) -> None:
    logdir = str(tmp_path / "exp")
    trainer = Trainer(logdir, sleep=0.05, extra=["--heartbeat", "1,5"])
    procs.append(trainer)
    trainer.wait_metrics()
    victim, other = Worker(logdir, "victim", sleep=0.2), Worker(logdir, "other", sleep=0.05)
    procs.extend([victim, other])
    for w in (victim, other):
        wait_for(lambda w=w: w.proc.poll() is None and "waiting for a search" in w.output(), timeout=300,
                 what="a worker waiting for a search")
    _search(logdir)

    def victim_in_a_trial() -> dict[str, Any] | None:
        status = victim.status()  # the worker's own status, written when one of its trials starts
        entry = (status.get("searches") or {}).get("s-1") or {}
        pid = status.get("pid")
        mine = [t for t in entry.get("trials", []) if t["state"] == "running" and (t.get("worker") or {}).get("pid") == pid]
        return mine[0] if mine else None

    killed = wait_for(victim_in_a_trial, timeout=300, what="the victim running a trial")
    os.kill(victim.status()["pid"], signal.SIGKILL)  # the training command, mid-trial
    assert victim.wait() != 0
    entry = wait_for(lambda: trainer._alive() and done(logdir, "s-1"), timeout=600, what="the search's end")
    assert other.wait() == 0, other.output()[-3000:]
    lost = [t for t in entry["trials"] if t["number"] == killed["number"]]
    assert lost and lost[0]["state"] == "failed" and lost[0].get("interrupted"), lost
    retries = [t for t in entry["trials"] if t.get("retry_of") == killed["number"]]
    assert len(retries) == 1 and retries[0]["state"] in ("complete", "pruned"), retries
    assert retries[0]["hyperparameters"] == killed["hyperparameters"]
    assert retries[0]["worker"]["pid"] != victim.status()["pid"]
    counted = [t for t in entry["trials"] if not t.get("interrupted")]
    assert len(counted) == TRIALS and all(t["state"] in ("complete", "pruned") for t in counted)
    assert "queued again" in victim.output() or victim.proc.returncode != 0
    _stop(trainer)


def test_the_trainer_waiting_for_another_process_s_trial_keeps_its_status_alive(
        tmp_path: Any, procs: list[Any]) -> None:
    """The trainer waits at a batch boundary for the last trials that others
    run; meanwhile its status heartbeat goes on (the tab and the command line
    would call it dead otherwise), and a trial told by the other process ends
    the wait."""
    import time

    from tb_retune.trainer.search._heartbeat import TrialHeartbeat

    logdir = str(tmp_path / "exp")
    trainer = Trainer(logdir, sleep=0.05, extra=["--heartbeat", "1,30"])
    procs.append(trainer)
    trainer.wait_metrics()
    _search(logdir, trials=2, steps_per_trial=40)
    # This process is the other worker: it takes the second slot while the trainer runs the baseline.
    study = wait_for(lambda: _load(logdir), timeout=300, what="the search's study")
    theirs = study.ask()
    theirs.suggest_float("learning_rate", 1e-3, 0.3, log=True)
    theirs.suggest_float("momentum", 0.0, 0.9)
    theirs.set_user_attr("role", "worker")
    theirs.set_user_attr("worker", {"host": "elsewhere", "pid": 1})
    beat = TrialHeartbeat(study._storage)
    beat.start(theirs._trial_id)
    try:
        wait_for(lambda: trainer._alive() and "waiting for trials running in other processes" in trainer.output(),
                 timeout=300, what="the trainer waiting for this process's trial")
        first = read_status(logdir)["heartbeat"]
        wait_for(lambda: trainer._alive() and read_status(logdir)["heartbeat"] > first + 1.0, timeout=60,
                 what="the status heartbeat going on while the trainer waits")
        assert search_of(logdir, "s-1")["state"] == "running"
    finally:
        beat.stop()
    study.tell(theirs, 0.001)
    entry = wait_for(lambda: trainer._alive() and done(logdir, "s-1"), timeout=300, what="the search's end")
    assert entry["best"]["number"] == theirs.number and time.time() - entry["outcome"]["time"] < 300
    _stop(trainer)


def _load(logdir: str) -> Any:
    import optuna

    from tb_retune.trainer.search._study import has_journal, open_storage

    if not has_journal(logdir):
        return None
    try:
        return optuna.load_study(study_name="s-1", storage=open_storage(logdir, heartbeat=(1, 30)))
    except KeyError:
        return None
