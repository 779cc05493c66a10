"""A search worker: a process that joins the running search of an experiment.

``tb-retune worker EXP -- COMMAND`` runs the user's training command as a
worker (``tb_retune.experiment.worker``); its ``RetuneCallback`` drives a
:class:`SearchWorker` at each batch boundary, through the same
:class:`~tb_retune.trainer.search.TrialHost` as the trainer's engine. The
worker finds the running search in the study storage, asks the shared study
for trials and runs them as the trainer does (``SearchRun`` with role
``worker``): restore the source checkpoint, train ``steps_per_trial``, report,
evaluate, keep the end state, tell. It never creates, finishes or fails a
search: when no trial is left for it, it leaves (``Action.leave``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from tb_retune._errors import ControlError
from tb_retune.experiment.search import parse_search
from tb_retune.trainer.search import _status
from tb_retune.trainer.search._host import NOTHING, Action, TrialHost
from tb_retune.trainer.search._study import make_pruner, make_sampler, open_storage, study_heartbeat
from tb_retune.trainer.search._trials import SearchRun

logger = logging.getLogger("tb_retune")


class NoSearchRunning(ControlError):
    """There is no running search to join (it may have ended meanwhile)."""


def running_searches(logdir: str, storage_url: str | None = None, storage: Any = None) -> list[dict[str, Any]]:
    """The searches of an experiment that are running, oldest first:
    ``[{"id", "source", "trials", "heartbeat"}]`` (an empty list when the
    experiment has no study storage yet). Reads the storage only."""
    import optuna

    from tb_retune.trainer.search._study import has_journal

    if storage is None:
        if storage_url is None and not has_journal(logdir):
            return []
        storage = open_storage(logdir, storage_url)
    out = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = summary.user_attrs
        if _status.ATTR_REQUEST not in attrs or attrs.get(_status.ATTR_STATE) != "running":
            continue
        out.append({"id": summary.study_name, "source": attrs.get(_status.ATTR_SOURCE) or {},
                    "trials": (attrs.get(_status.ATTR_REQUEST) or {}).get("trials"),
                    "heartbeat": study_heartbeat(attrs), "started": summary.datetime_start})
    out.sort(key=lambda e: (e["started"] is None, e["started"] or 0))
    return out


class SearchWorker:
    """Runs trials of one running search through a :class:`TrialHost`.

    Example (what the worker's controller does):

    ```python
    worker = SearchWorker(logdir, host, storage_url=None)
    worker.join()                                # raises ControlError when no search runs
    action = worker.on_boundary(step, logs)      # at every batch boundary
    if action.kind == "leave": ...               # end fit: nothing left for this process
    worker.close()                               # fit ended: a trial cut short is queued again
    ```

    Args:
        logdir: The experiment folder.
        host: The trainer's side.
        storage_url: Any Optuna storage URL, or None for the experiment's journal.
        search_id: The search to join, or None for the running one.
    """

    def __init__(self, logdir: str, host: TrialHost, *, storage_url: str | None = None,
                 search_id: str | None = None) -> None:
        self.logdir = logdir
        self.host = host
        self.storage_url = storage_url
        self.search_id = search_id
        self.run: SearchRun | None = None
        #: The trials this process finished (complete, pruned, or failed by their own result).
        self.finished: list[int] = []
        #: The id of the search joined (kept after this process leaves it).
        self.joined: str | None = None
        self._searches: dict[str, dict[str, Any]] = {}


    def join(self) -> str:
        """Finds the search to join and loads its study with its heartbeat.

        Raises:
            ControlError: no such search runs (the message says what does).
        """
        import optuna

        found = running_searches(self.logdir, self.storage_url)
        if self.search_id is not None:
            found = [e for e in found if e["id"] == self.search_id]
        if not found:
            which = f"search {self.search_id!r}" if self.search_id else "no search"
            raise NoSearchRunning(f"worker: {which} is running in {self.logdir} "
                               f"({self.storage_url or 'its journal'}); start one with `tb-retune search`")
        entry = found[-1]
        heartbeat = entry["heartbeat"]
        storage = open_storage(self.logdir, self.storage_url, heartbeat=heartbeat)
        attrs = optuna.load_study(study_name=entry["id"], storage=storage).user_attrs
        request = parse_search(attrs[_status.ATTR_REQUEST], dict(self.host.hyperparameters()))
        salt = f"{socket.gethostname()}:{os.getpid()}"  # two workers must not draw the same settings
        study = optuna.load_study(study_name=request.id, storage=storage,
                                  sampler=make_sampler(request, salt), pruner=make_pruner(request))
        src = attrs[_status.ATTR_SOURCE]
        source = (str(src["branch"]), int(src["step"]))
        if self.host.checkpoint_hyperparameters(*source) is None:
            raise ControlError(f"worker: the source checkpoint of search {request.id}, {source[0]}@{source[1]}, "
                               f"is not in {self.logdir}/checkpoints; every machine must share the experiment "
                               "folder (see the README's two-machine layout)")
        self.run = SearchRun(request, study, source, src.get("hyperparameters") or {}, self.host,
                             self._publish, role="worker")
        self.joined = request.id
        self._publish(study)
        self.host.log(f"retune: worker {salt} joins search {request.id}: {request.trials} trials of "
                      f"{request.steps_per_trial} steps from {source[0]}@{source[1]}")
        return request.id

    def on_boundary(self, step: int, logs: Mapping[str, Any] | None = None) -> Action:
        run = self.run
        if run is None:
            return NOTHING
        try:
            action = run.advance(step, logs)
        except Exception:
            # A worker's failure is its own: the trial it ran is queued again for
            # another process, and the search goes on without this one.
            run.abandon()
            self.run = None
            raise
        if action.ended is not None:
            self.finished.append(action.ended.number)
        if action.leave is not None:
            self.run = None
        return action

    def searches(self) -> dict[str, dict[str, Any]]:
        return dict(self._searches)

    def close(self) -> None:
        if self.run is not None:
            self.run.abandon()
            self.run = None

    def _publish(self, study: Any) -> dict[str, Any]:
        entry = _status.search_entry(study.user_attrs, study.get_trials(deepcopy=False))
        self._searches = {study.study_name: entry}
        return entry
