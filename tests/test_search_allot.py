"""The rules that make a search run exactly ``trials`` trials however the
asks of several processes interleave (``tb_retune/trainer/search/_allot.py``),
checked on simulated interleavings of asks, deaths, stale judgements, late
results and duplicate retries, against a real Optuna journal study."""

from __future__ import annotations

import random
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tb_retune.trainer.search import _allot
from tb_retune.trainer.search._heartbeat import retry_lost
from tb_retune.trainer.search._study import open_storage

SLOTS = 6


def _study(tmp_path: Any) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=open_storage(str(tmp_path)))
    study.enqueue_trial({"x": 0.0}, user_attrs={"baseline": True})
    return study


def _take(study: optuna.Study) -> optuna.trial.Trial | None:
    """What a process does before it runs a trial: ask, then admit or mark surplus."""
    trial = study.ask()
    trial.suggest_float("x", -1.0, 1.0)
    if not _allot.admitted(study._storage.get_trial(trial._trial_id), study.get_trials(deepcopy=False), SLOTS):
        trial.set_user_attr(_allot.ATTR_SURPLUS, True)
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def _may_ask(study: optuna.Study) -> bool:
    trials = study.get_trials(deepcopy=False)
    return any(t.state == TrialState.WAITING for t in trials) or not _allot.slots_taken(trials, SLOTS)


def test_two_processes_asking_for_the_last_slot_at_once_run_one_trial(tmp_path: Any) -> None:
    study = _study(tmp_path)
    for _ in range(SLOTS - 1):
        t = _take(study)
        assert t is not None
        study.tell(t, 1.0)
    # Both looked, saw a free slot, and asked: the storage numbers them; the later one is surplus.
    first, second = study.ask(), study.ask()
    trials = study.get_trials(deepcopy=False)
    assert _allot.admitted(study._storage.get_trial(first._trial_id), trials, SLOTS)
    assert not _allot.admitted(study._storage.get_trial(second._trial_id), trials, SLOTS)


def test_a_lost_trial_is_run_again_by_its_first_retry_only(tmp_path: Any) -> None:
    study = _study(tmp_path)
    baseline = _take(study)
    assert baseline is not None and baseline.number == 0
    victim = _take(study)
    assert victim is not None
    # The victim's process dies; two judges fail it at once and each queues a retry.
    study.tell(victim, state=TrialState.FAIL)
    frozen = study._storage.get_trial(victim._trial_id)
    retry_lost(study, frozen)
    retry_lost(study, frozen)
    taken = [_take(study), _take(study)]
    runs = [t for t in taken if t is not None]
    assert len(runs) == 1 and runs[0].user_attrs["retry_of"] == victim.number
    assert runs[0].params == victim.params


def test_a_trial_that_finished_after_it_was_judged_stale_counts_and_its_retry_does_not_run(tmp_path: Any) -> None:
    study = _study(tmp_path)
    slow = _take(study)
    assert slow is not None
    frozen = study._storage.get_trial(slow._trial_id)
    study.tell(slow, 0.5)  # its result arrived first
    retry_lost(study, frozen)  # a judge had seen its heartbeat stale and queued it anyway
    assert _take(study) is None  # the retry is surplus: its trial is not lost
    assert slow.number in _allot.counts(study.get_trials(deepcopy=False), SLOTS)


def test_a_failure_with_a_reason_counts_and_is_not_retried(tmp_path: Any) -> None:
    study = _study(tmp_path)
    t = _take(study)
    assert t is not None
    t.set_user_attr(_allot.ATTR_REASON, "val_loss is nan (the trial diverged)")
    study.tell(t, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    assert not _allot.is_lost(trials[t.number]) and t.number in _allot.counts(trials, SLOTS)
    assert _allot.lost_without_retry(trials, SLOTS) == []


def test_a_lost_trial_whose_retry_was_never_queued_is_found(tmp_path: Any) -> None:
    study = _study(tmp_path)
    t = _take(study)
    assert t is not None
    study.tell(t, state=TrialState.FAIL)  # failed by a judge that died before it queued the retry
    trials = study.get_trials(deepcopy=False)
    assert [x.number for x in _allot.lost_without_retry(trials, SLOTS)] == [t.number]


@pytest.mark.parametrize("seed", range(12))
def test_random_interleavings_of_processes_end_with_exactly_the_slots(tmp_path: Any, seed: int) -> None:
    """Three simulated processes ask, run, die, judge and tell in a random order;
    the trials that count are always exactly SLOTS, each run by one process."""
    rng = random.Random(seed)
    study = _study(tmp_path)
    running: dict[int, tuple[str, Any]] = {}  # number -> (process, trial)
    procs = ["a", "b", "c"]
    ready: set[str] = set()  # looked and saw a trial to ask for; asks later (the race)
    for _ in range(2000):
        trials = study.get_trials(deepcopy=False)
        idle = [p for p in procs if p not in {who for who, _ in running.values()} and p not in ready]
        done = (not ready and not any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials)
                and _allot.slots_taken(trials, SLOTS))
        if done:
            missing = _allot.lost_without_retry(trials, SLOTS)
            if not missing:
                break
            for t in missing:
                retry_lost(study, t)
            continue
        move = rng.random()
        if idle and move < 0.2:
            if _may_ask(study):
                ready.add(rng.choice(idle))
        elif ready and move < 0.45:
            who = rng.choice(sorted(ready))
            ready.discard(who)
            t = _take(study)
            if t is not None:
                running[t.number] = (who, t)
        elif running and move < 0.85:
            number = rng.choice(sorted(running))
            _, t = running.pop(number)
            if rng.random() < 0.1:
                t.set_user_attr(_allot.ATTR_REASON, "diverged")
                study.tell(t, state=TrialState.FAIL)
            else:
                study.tell(t, rng.random())
        elif running:
            # A process dies mid-trial; a judge fails its trial, sometimes queues it twice,
            # sometimes dies before it queues it at all.
            number = rng.choice(sorted(running))
            _, t = running.pop(number)
            frozen = study._storage.get_trial(t._trial_id)
            study.tell(t, state=TrialState.FAIL)
            for _ in range(rng.choice([0, 1, 1, 2])):
                retry_lost(study, frozen)
    else:
        pytest.fail("the simulation did not end")
    trials = study.get_trials(deepcopy=False)
    counted = _allot.counts(trials, SLOTS)
    assert len(counted) == SLOTS
    assert all(trials[n].state in (TrialState.COMPLETE, TrialState.FAIL) for n in counted)
    assert not any(_allot.is_lost(trials[n]) for n in counted)
    # And nothing ran that does not count: every trial trained to its end is a counted one.
    ran = {t.number for t in trials if not _allot.is_lost(t) and not t.user_attrs.get(_allot.ATTR_SURPLUS)}
    assert ran == counted
