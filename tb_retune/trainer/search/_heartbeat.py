"""Optuna's heartbeat for a search's trials, in every storage we use.

Optuna judges a trial whose process died by its heartbeat: the process
records one every ``heartbeat_interval`` seconds while the trial runs, and
``optuna.storages.fail_stale_trials`` fails a running trial whose heartbeat
is older than ``grace_period``, then calls the storage's stale-trial
callback, which queues the trial again (:func:`retry_lost`). Optuna's RDB
storage has the heartbeat built in; its journal storage has not, so
:class:`HeartbeatJournalStorage` adds it: the heartbeat is a trial system
attribute, and a trial is stale when this process has seen that attribute
unchanged for ``grace_period`` seconds of its own clock (so the machines'
clocks need not agree). :class:`TrialHeartbeat` is the thread that beats
for the trial in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import BaseJournalBackend, JournalStorage
from optuna.trial import TrialState

from tb_retune.trainer.search._allot import ATTR_RETRY_OF
from tb_retune.trainer.search._heartbeat_defaults import DEFAULT_HEARTBEAT

logger = logging.getLogger("tb_retune")

#: The trial system attribute that carries a journal trial's heartbeat.
HEARTBEAT_ATTR = "tb_retune:heartbeat"
#: Seconds between two heartbeats, and how long one may be late, by default.
HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S = DEFAULT_HEARTBEAT


def retry_lost(study: Any, trial: Any) -> None:
    """Optuna's stale-trial callback: queues a failed trial's settings again
    as a new trial (``retry_of`` names it), like
    ``optuna.storages.RetryHeartbeatStaleTrialCallback`` but with our user
    attributes (the baseline stays the baseline). Two processes that fail
    the same trial at once queue two retries: the first one runs, the other
    is surplus (``_allot``)."""
    study.enqueue_trial(dict(trial.params), user_attrs={
        "baseline": bool(trial.user_attrs.get("baseline")), ATTR_RETRY_OF: trial.number})


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's ``JournalStorage`` with a heartbeat.

    Args:
        backend: The journal backend (a ``JournalFileBackend``).
        heartbeat_interval: Seconds between two heartbeats of a trial.
        grace_period: Seconds a trial's heartbeat may stay unchanged.
        stale_trial_callback: Called for each stale trial that this process failed.
    """

    def __init__(self, backend: BaseJournalBackend, *, heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
                 grace_period: int = GRACE_PERIOD_S,
                 stale_trial_callback: Callable[[Any, Any], None] | None = retry_lost) -> None:
        super().__init__(backend)
        self.heartbeat_interval = int(heartbeat_interval)
        self.grace_period = int(grace_period)
        self._stale_callback = stale_trial_callback
        self._seen: dict[int, tuple[Any, float]] = {}
        self._seen_lock = threading.Lock()

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.monotonic()
        stale = []
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        with self._seen_lock:
            alive = set()
            for trial in running:
                alive.add(trial._trial_id)
                beat = trial.system_attrs.get(HEARTBEAT_ATTR)
                seen = self._seen.get(trial._trial_id)
                if seen is None or seen[0] != beat:
                    self._seen[trial._trial_id] = (beat, now)
                elif now - seen[1] > self.grace_period:
                    stale.append(trial._trial_id)
            for trial_id in set(self._seen) - alive:
                del self._seen[trial_id]
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[Any, Any], None] | None:
        return self._stale_callback


def supports_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None


class TrialHeartbeat:
    """The heartbeat of this process's trial in progress, on a thread of its own.

    ``start(trial_id)`` when a trial starts, ``stop()`` before it is told its
    result. The thread only calls ``storage.record_heartbeat``; a failed beat
    is logged and tried again at the next interval.
    """

    def __init__(self, storage: BaseStorage) -> None:
        self.storage = storage
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, trial_id: int) -> None:
        self.stop()
        if not supports_heartbeat(self.storage):
            return
        interval = float(self.storage.get_heartbeat_interval() or HEARTBEAT_INTERVAL_S)  # type: ignore[attr-defined]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(trial_id, interval, self._stop),
                                        name="tb-retune-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, trial_id: int, interval: float, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
            except Exception as e:  # a finished trial, a storage hiccup: try again later
                logger.debug("retune: heartbeat of trial %s: %s", trial_id, e)
            if stop.wait(interval):
                return

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
