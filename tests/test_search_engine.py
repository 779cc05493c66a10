"""The search engine with real Optuna, real journal files and a real (small)
training loop (``tests/search_loop.py``): trials as branches from one state,
the baseline first, pruning, every sampler and pruner, resume after a kill."""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import optuna
import pytest

from tb_retune.experiment.search import parse_search
from tb_retune.trainer.search import SearchEngine, journal_path
from tests.search_loop import LoopHost

SOURCE_STEP = 30

SPACE = {"learning_rate": {"low": 1e-3, "high": 1.5, "log": True},
         "momentum": {"low": 0.0, "high": 0.95},
         "nesterov": {"choices": [True, False]}}


def request(**changes: Any) -> Any:
    doc: dict[str, Any] = {"id": "s-1", "from": {"branch": "main", "step": SOURCE_STEP}, "space": SPACE,
                           "trials": 5, "steps_per_trial": 40, "objective": {"metric": "val_loss"}}
    doc.update(changes)
    return parse_search({k: v for k, v in doc.items() if v is not None})


def started_host(**kw: Any) -> LoopHost:
    host = LoopHost(**kw)
    for _ in range(SOURCE_STEP):
        host.train_step()
    host.pending_logs = {}
    host.save()
    return host


def run_search(tmp_path: Any, req: Any, host: LoopHost | None = None, max_steps: int = 5000) -> tuple[LoopHost, SearchEngine, list[Any]]:
    host = host or started_host()
    engine = SearchEngine(str(tmp_path), host)
    engine.submit(req)
    actions = host.drive(engine, max_steps, stop=lambda a: a.kind == "done")
    assert actions and actions[-1].kind == "done", (host.errors, host.lines[-5:])
    return host, engine, actions


def counted(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in entry["trials"] if not t.get("interrupted")]


def test_a_search_runs_its_trials_as_branches_from_one_state_and_goes_on_with_the_best(tmp_path: Any) -> None:
    host, engine, actions = run_search(tmp_path, request(trials=5))
    assert host.errors == []
    assert ("main", SOURCE_STEP) in host.kept  # the source is out of the retention policy's reach
    source = host.checkpoints[("main", SOURCE_STEP)]
    entry = engine.searches()["s-1"]
    # The contract's keys.
    assert {"state", "source", "trials", "best"} <= set(entry)
    assert entry["state"] == "done" and entry["source"] == {"branch": "main", "step": SOURCE_STEP}
    trials = entry["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4]
    for t in trials:
        assert {"number", "branch", "hyperparameters", "value", "state", "worker"} <= set(t)
        assert t["worker"] == {"host": os.uname().nodename, "pid": os.getpid()}
        assert t["state"] in ("complete", "pruned")
        # Every trial starts from the identical state: weights, slots, step.
        branch = host.branches[t["branch"]]
        assert branch.parent == ("main", SOURCE_STEP) and branch.start_step == SOURCE_STEP
        assert np.array_equal(branch.start_w, source.w) and np.array_equal(branch.start_v, source.v)
        # Its node record names the search, the trial, the sampled values; then its value.
        first, last = branch.records[0]["search"], branch.records[-1]["search"]
        assert first["id"] == "s-1" and first["trial"] == t["number"]
        assert first["hyperparameters"] == t["hyperparameters"]
        assert last["state"] == t["state"] and last["value"] == t["value"]
    assert len({t["branch"] for t in trials}) == 5
    # The first trial is the baseline: the source's own settings.
    assert trials[0]["baseline"] and trials[0]["hyperparameters"] == source.hyperparameters
    assert not any(t["baseline"] for t in trials[1:])
    # Each complete trial ran exactly steps_per_trial steps; its value is measured at its end.
    for t in trials:
        if t["state"] == "complete":
            assert t["step"] == SOURCE_STEP + 40
            assert (t["branch"], SOURCE_STEP + 40, "val_loss") in host.evaluations
    best = min((t for t in trials if t["state"] == "complete"), key=lambda t: t["value"])
    assert entry["best"] == {"number": best["number"], "branch": best["branch"], "value": best["value"],
                             "hyperparameters": best["hyperparameters"]}
    # then=best: training goes on from the best trial's end state, with its settings.
    done = actions[-1].done
    assert (done.from_branch, done.from_step) == (best["branch"], SOURCE_STEP + 40)
    assert host.branch == done.branch == "main-s-1-best"
    assert {k: host.hps[k] for k in SPACE} == best["hyperparameters"]
    end = host.checkpoints[(best["branch"], SOURCE_STEP + 40)]
    assert np.array_equal(host.w, end.w) and host.step == SOURCE_STEP + 40
    # An ordinary Optuna study in the journal: what optuna-dashboard opens.
    study = optuna.load_study(study_name="s-1", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal_path(str(tmp_path)))))
    assert len(study.trials) == 5
    assert study.best_trial.number == best["number"]


def test_a_request_is_carried_out_once_per_id_and_another_search_with_its_id_is_refused(tmp_path: Any) -> None:
    host, engine, _ = run_search(tmp_path, request(trials=2))
    engine.submit(request(trials=2))  # the same request again (a rewrite, a restart)
    assert host.drive(engine, 100) == [] and host.errors == []
    host.logged = {"loss"}  # a later run without validation data: a done search is not checked again
    SearchEngine(str(tmp_path), host).submit(request(trials=2))
    assert host.errors == []
    engine.submit(request(trials=3))
    assert len(host.errors) == 1
    assert host.errors[0].startswith("search.id: 's-1' already names another search")


def test_then_source_goes_back_to_the_source_with_its_settings(tmp_path: Any) -> None:
    host, engine, actions = run_search(tmp_path, request(trials=2, then="source"))
    done = actions[-1].done
    assert (done.from_branch, done.from_step) == ("main", SOURCE_STEP)
    assert host.step == SOURCE_STEP and host.hps == host.checkpoints[("main", SOURCE_STEP)].hyperparameters
    assert host.branch == "main-s-1-source"


def test_from_the_current_state_by_default(tmp_path: Any) -> None:
    host = started_host()
    for _ in range(7):
        host.train_step()
    host, engine, _ = run_search(tmp_path, request(trials=2, **{"from": None}), host=host)
    assert engine.searches()["s-1"]["source"] == {"branch": "main", "step": SOURCE_STEP + 7}


def test_pruned_trials_stop_early_and_free_their_steps(tmp_path: Any) -> None:
    # Learning rates up to 40 diverge: the median pruner stops those at a logged point.
    space = {"learning_rate": {"low": 1e-2, "high": 40.0, "log": True}}
    host, engine, actions = run_search(tmp_path, request(id="s-prune", trials=10, steps_per_trial=60,
                                                         pruner="median", sampler="random", space=space,
                                                         objective={"metric": "loss"}))
    trials = engine.searches()["s-prune"]["trials"]
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned, [(t["hyperparameters"], t["state"], t["value"]) for t in trials]
    assert len(counted(engine.searches()["s-prune"])) == 10
    assert trials[0]["state"] == "complete"  # the baseline is never pruned
    for t in pruned:
        assert SOURCE_STEP < t["step"] < SOURCE_STEP + 60
        assert host.branches[t["branch"]].records[-1]["search"] == {
            "id": "s-prune", "trial": t["number"], "baseline": False, "state": "pruned", "value": None,
            "step": t["step"]}
        # The next trial (or the end of the search) came at the pruned one's boundary: its steps were freed.
        ends = [a for a in actions if a.ended is not None and a.ended.number == t["number"]]
        assert len(ends) == 1 and (ends[0].started is not None or ends[0].done is not None)


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "qmc"])
def test_each_sampler(tmp_path: Any, sampler: str) -> None:
    space: dict[str, Any] = copy.deepcopy(SPACE)
    trials = 5
    if sampler == "grid":
        space = {"momentum": {"low": 0.0, "high": 0.9, "step": 0.45}, "nesterov": {"choices": [True, False]}}
        trials = 7  # the baseline and all 6 points
    host, engine, _ = run_search(tmp_path, request(sampler=sampler, space=space, trials=trials, steps_per_trial=20))
    entry = engine.searches()["s-1"]
    assert len(counted(entry)) == trials and entry["state"] == "done"
    assert entry["trials"][0]["baseline"]
    sampled = [t["hyperparameters"] for t in entry["trials"][1:]]
    for hps in sampled:
        assert hps["nesterov"] in (True, False)
        if sampler == "grid":
            assert hps["momentum"] in (0.0, 0.45, 0.9)
        else:
            assert 1e-3 <= hps["learning_rate"] <= 1.5 and 0.0 <= hps["momentum"] <= 0.95
    if sampler == "grid":  # every grid point exactly once
        assert sorted((h["momentum"], h["nesterov"]) for h in sampled) == sorted(
            (m, n) for m in (0.0, 0.45, 0.9) for n in (True, False))


@pytest.mark.parametrize("pruner", ["none", "median", "successive_halving", "hyperband"])
def test_each_pruner(tmp_path: Any, pruner: str) -> None:
    space = {"learning_rate": {"low": 1e-2, "high": 40.0, "log": True}}
    host, engine, _ = run_search(tmp_path, request(pruner=pruner, sampler="random", space=space, trials=8,
                                                   steps_per_trial=54, objective={"metric": "loss"}))
    entry = engine.searches()["s-1"]
    assert len(counted(entry)) == 8 and entry["state"] == "done" and entry["pruner"] == pruner
    states = [t["state"] for t in entry["trials"]]
    if pruner == "none":
        assert "pruned" not in states
    else:
        assert "pruned" in states, states
    study = optuna.load_study(study_name="s-1", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal_path(str(tmp_path)))))
    # Intermediate values at each logged point, as offsets from the source step.
    steps = sorted(study.trials[0].intermediate_values)
    assert steps[0] == 2 and steps[-1] == 54 and all(s % 2 == 0 for s in steps)


def test_resume_after_the_engine_is_dropped_mid_trial(tmp_path: Any) -> None:
    req = request(trials=5, steps_per_trial=40)
    host = started_host()
    engine = SearchEngine(str(tmp_path), host)
    engine.submit(req)
    # Trials 0 and 1 finish, trial 2 is 15 steps in: then the trainer is killed.
    host.drive(engine, 40 * 2 + 15)
    before = engine.searches()["s-1"]["trials"]
    assert [t["state"] for t in before] == ["complete", "complete", "running"]
    interrupted = before[2]
    del engine
    # A new trainer: the same folder and checkpoints, a new loop and engine (no request handed in).
    again = LoopHost(checkpoints=host.checkpoints, branches=host.branches)
    for _ in range(SOURCE_STEP):
        again.train_step()
    engine = SearchEngine(str(tmp_path), again)
    assert engine.busy
    actions = again.drive(engine, 5000, stop=lambda a: a.kind == "done")
    assert actions[-1].kind == "done" and again.errors == []
    entry = engine.searches()["s-1"]
    kept = counted(entry)
    assert len(kept) == 5 and all(t["state"] in ("complete", "pruned") for t in kept)
    assert kept[:2] == before[:2]  # finished trials are kept as they were
    gone = [t for t in entry["trials"] if t.get("interrupted")]
    assert [(t["number"], t["state"]) for t in gone] == [(2, "failed")]
    retry = [t for t in kept if t.get("retry_of") == 2]
    assert len(retry) == 1 and retry[0]["hyperparameters"] == interrupted["hyperparameters"]
    assert retry[0]["number"] == 3  # queued again at once, so run next
    assert any("search s-1 resumes" in line for line in again.lines)


def test_resume_when_the_baseline_was_interrupted(tmp_path: Any) -> None:
    host = started_host()
    engine = SearchEngine(str(tmp_path), host)
    engine.submit(request(trials=3, steps_per_trial=20))
    host.drive(engine, 5)
    engine.close()
    again = started_host(checkpoints=host.checkpoints, branches=host.branches)
    engine = SearchEngine(str(tmp_path), again)
    again.drive(engine, 5000, stop=lambda a: a.kind == "done")
    entry = engine.searches()["s-1"]
    kept = counted(entry)
    assert len(kept) == 3 and kept[0]["baseline"] and kept[0]["retry_of"] == 0
    assert kept[0]["hyperparameters"] == host.checkpoints[("main", SOURCE_STEP)].hyperparameters


def test_a_second_search_waits_for_the_first(tmp_path: Any) -> None:
    host = started_host()
    engine = SearchEngine(str(tmp_path), host)
    engine.submit(request(trials=2, steps_per_trial=10))
    host.drive(engine, 3)
    engine.submit(request(id="s-2", trials=2, steps_per_trial=10, **{"from": None}))
    done = []
    host.drive(engine, 500, stop=lambda a: (a.kind == "done" and done.append(a.done.search_id)  # type: ignore[func-returns-value]
                                            and False) or len(done) == 2)
    assert done == ["s-1", "s-2"]
    assert set(engine.searches()) == {"s-1", "s-2"}
    assert any("search s-2 waits for search s-1" in line for line in host.lines)


def test_a_bad_request_changes_nothing(tmp_path: Any) -> None:
    host = started_host()
    engine = SearchEngine(str(tmp_path), host)
    engine.submit(request(objective={"metric": "val_accuracy"}))  # the loop logs loss and val_loss
    engine.submit(request(id="s-2", **{"from": {"branch": "main", "step": 31}}))
    engine.submit(request(id="s-3", space={"beta_1": {"low": 0.8, "high": 0.99}}))
    assert [e.split(":")[0] for e in host.errors] == [
        "search.objective.metric", "search.from.step", "search.space.beta_1"]
    assert "fit does not log \"val_accuracy\"; it logs: loss, val_loss" in host.errors[0]
    assert host.drive(engine, 50) == [] and engine.searches() == {}
    assert not os.path.exists(journal_path(str(tmp_path)))


def test_without_an_evaluation_the_value_is_the_last_logged_point(tmp_path: Any) -> None:
    host = started_host(evaluate=False)
    host, engine, _ = run_search(tmp_path, request(trials=2, steps_per_trial=20, objective={"metric": "loss"}),
                                 host=host)
    trials = engine.searches()["s-1"]["trials"]
    study = optuna.load_study(study_name="s-1", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal_path(str(tmp_path)))))
    for t, frozen in zip(trials, study.trials, strict=True):
        assert t["value"] == frozen.intermediate_values[20]


def test_a_metric_never_logged_fails_the_search_with_one_error(tmp_path: Any) -> None:
    host = started_host(evaluate=False)
    host.logged = set()  # metrics not known yet: the request cannot be checked up front
    engine = SearchEngine(str(tmp_path), host)
    engine.submit(request(trials=3, steps_per_trial=5, objective={"metric": "val_accuracy"}))
    host.drive(engine, 100)
    assert len(host.errors) == 1 and host.errors[0].startswith("search.objective.metric: search s-1")
    entry = engine.searches()["s-1"]
    assert entry["state"] == "failed" and [t["state"] for t in entry["trials"]] == ["failed"]
    assert not engine.busy


def test_a_study_half_made_by_a_killed_trainer_is_started_afresh(tmp_path: Any) -> None:
    from tb_retune.trainer.search._study import open_storage

    req = request(trials=2, steps_per_trial=10)
    study = optuna.create_study(study_name="s-1", storage=open_storage(str(tmp_path)))
    study.set_user_attr("request", dict(req.raw))  # killed before the rest was written
    study.set_user_attr("fingerprint", req.fingerprint())
    host, engine, _ = run_search(tmp_path, req)
    entry = engine.searches()["s-1"]
    assert entry["state"] == "done" and len(entry["trials"]) == 2 and host.errors == []


def test_an_unreadable_journal_is_reported_and_training_goes_on(tmp_path: Any) -> None:
    host, engine, _ = run_search(tmp_path, request(trials=1, steps_per_trial=5))
    path = journal_path(str(tmp_path))
    with open(path, "r+b") as f:  # a line in the middle overwritten
        f.seek(10)
        f.write(b"\x00garbage\x00")
    again = started_host()
    engine = SearchEngine(str(tmp_path), again)
    assert again.drive(engine, 20) == [] and again.step == SOURCE_STEP + 20
    assert len(again.errors) == 1 and again.errors[0].startswith(f"search: cannot read {path}: ")
    engine.submit(request(id="s-2", trials=1, steps_per_trial=5))
    assert again.errors[1].startswith("search: the study storage")
    assert again.drive(engine, 5) == []


def test_a_failing_restore_fails_the_search_not_training(tmp_path: Any) -> None:
    host = started_host()
    calls = []
    real_restore = host.restore

    def restore(*args: Any) -> str:
        calls.append(args)
        if len(calls) == 2:
            raise OSError("checkpoint file vanished")
        return real_restore(*args)

    host.restore = restore  # type: ignore[method-assign]
    engine = SearchEngine(str(tmp_path), host)
    engine.submit(request(trials=3, steps_per_trial=10))
    host.drive(engine, 60)
    assert host.errors == ["search s-1: OSError: checkpoint file vanished; training goes on from where it is"]
    entry = engine.searches()["s-1"]
    assert entry["state"] == "failed" and [t["state"] for t in entry["trials"]] == ["complete", "failed"]
    assert not engine.busy and host.step == SOURCE_STEP + 10 + 50  # trained on, on trial 0's branch


def test_trials_of_another_process_are_left_to_it_and_waited_for(tmp_path: Any) -> None:
    from tb_retune.trainer.search._heartbeat import TrialHeartbeat
    from tb_retune.trainer.search._study import open_storage

    host = started_host()
    engine = SearchEngine(str(tmp_path), host)
    engine.submit(request(trials=3, steps_per_trial=10))
    host.drive(engine, 1)  # the study exists, the baseline runs
    # Another process (a worker) takes a trial of the same study, and beats for it.
    other = optuna.load_study(study_name="s-1", storage=open_storage(str(tmp_path), heartbeat=(1, 30)))
    theirs = other.ask()
    theirs.suggest_float("learning_rate", 1e-3, 1.5, log=True)
    theirs.set_user_attr("role", "worker")
    theirs.set_user_attr("worker", {"host": "elsewhere", "pid": 1})
    beat = TrialHeartbeat(other._storage)
    beat.start(theirs._trial_id)
    # A restart now leaves the worker's running trial alone (only the trainer's own are taken over),
    # runs the others, then waits at a batch boundary for the worker's trial.
    engine = SearchEngine(str(tmp_path), host)
    seen: list[Any] = []

    def worker_finishes() -> bool:
        seen.append(copy.deepcopy(engine.searches()["s-1"]))
        beat.stop()
        other.tell(theirs, 0.001)
        return True

    host.on_wait = worker_finishes
    host.drive(engine, 5000, stop=lambda a: a.kind == "done")
    assert len(seen) == 1, "the engine waited once, for the worker's trial"
    assert [(t["number"], t["state"]) for t in seen[0]["trials"]] == [
        (0, "failed"), (1, "running"), (2, "complete"), (3, "complete")]
    assert seen[0]["state"] == "running"
    assert any("waiting for trials running in other processes: 1 (elsewhere:1)" in line for line in host.lines)
    entry = engine.searches()["s-1"]
    assert entry["state"] == "done" and entry["best"]["number"] == 1 and entry["trials"][1]["worker"]["pid"] == 1
    # That worker recorded no end state: training goes on from the source, with the best settings.
    assert entry["outcome"]["from"] == {"branch": "main", "step": SOURCE_STEP} and host.errors == []
    assert host.hps["learning_rate"] == entry["best"]["hyperparameters"]["learning_rate"]


def test_a_best_trial_whose_end_state_is_lost_goes_on_from_the_source_with_its_settings(tmp_path: Any) -> None:
    from tb_retune._errors import CheckpointError

    host = started_host()
    restore = host.restore

    def unreadable_trial_ends(branch: str, step: int, *args: Any) -> str:
        if branch != "main":  # another process's write of it never reached the disk
            raise CheckpointError(f"checkpoint of {branch}@{step} is unreadable")
        return restore(branch, step, *args)

    host.restore = unreadable_trial_ends  # type: ignore[method-assign]
    _, engine, actions = run_search(tmp_path, request(trials=3, steps_per_trial=10), host=host)
    entry = engine.searches()["s-1"]
    assert entry["state"] == "done" and entry["best"] is not None
    assert entry["outcome"]["from"] == {"branch": "main", "step": SOURCE_STEP}
    assert any("cannot be restored" in e and "going on from the source" in e for e in host.errors), host.errors
    assert host.hps["learning_rate"] == entry["best"]["hyperparameters"]["learning_rate"]
    assert actions[-1].done is not None and actions[-1].done.branch == entry["outcome"]["branch"]
