"""The trainer as a search worker (``tb-retune worker EXP -- COMMAND``).

When the environment holds a :class:`~tb_retune.experiment.worker.WorkerSpec`,
the controller runs this way instead of training the experiment's branch:

- its own files (state, status ``worker-status.json``, lock) live in the
  worker's folder ``<experiment>/searches/workers/<host>-<pid>/``; it reads
  no ``retune.json`` and writes no ``retune-status.json`` (the trainer is the
  one writer of those);
- what it trains is written into the experiment like the trainer's trials:
  each trial a branch (its event files, node records, HParams session), its
  checkpoints in ``<experiment>/checkpoints/<trial branch>/`` through a
  :class:`WorkerStore`, which removes or renames only the files of the
  branches this process made;
- at each batch boundary :func:`boundary` gives the
  :class:`~tb_retune.trainer.search.SearchWorker` its turn; until its first
  trial starts it is on no branch, and nothing is recorded;
- when the search has nothing left for it, ``fit`` stops; at the end it
  writes a :class:`~tb_retune.experiment.worker.WorkerReport` for the
  command line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from tb_retune.experiment import worker as spec_mod
from tb_retune.trainer import external
from tb_retune.trainer.checkpointing import build_optimizer_if_possible
from tb_retune.trainer.checkpoints import CheckpointInfo, CheckpointStore, Snapshot
from tb_retune.trainer.options import ControllerOptions
from tb_retune.trainer.session import Session

logger = logging.getLogger("tb_retune")

#: Seconds between two looks for a search to join.
WAIT_POLL_S = 0.5

#: The worker's own status file in its folder (not ``retune-status.json``:
#: nothing takes a worker's folder for an experiment).
STATUS_FILENAME = "worker-status.json"


class WorkerStore(CheckpointStore):
    """The experiment's checkpoint store as a worker shares it with the
    trainer and the other workers: it reads every branch (a rescan finds what
    others wrote since) and writes, prunes, promotes and sets aside only in
    the branches it made itself (its trials')."""

    def __init__(self, folder: str, keep_last: int | None = 5) -> None:
        self._own: set[str] = set()
        super().__init__(folder, keep_last)

    def _mine(self, path: str) -> bool:
        return os.path.basename(os.path.dirname(path)) in self._own

    def _remove(self, path: str) -> None:
        if self._mine(path):  # never another process's file (nor its temporary files)
            super()._remove(path)

    def _rename(self, source: str, target: str) -> None:
        if self._mine(source):
            super()._rename(source, target)

    def _set_aside(self, info: CheckpointInfo, f: BinaryIO) -> str | None:
        return super()._set_aside(info, f) if info.branch in self._own else None

    def write(self, snap: Snapshot) -> CheckpointInfo:
        self._own.add(snap.branch)
        return super().write(snap)

    def fork(self, source: CheckpointInfo, *, branch: str, node: str) -> CheckpointInfo:
        self._own.add(branch)
        return super().fork(source, branch=branch, node=node)

    def promote(self, branch: str, step: int, kind: str) -> None:
        if branch in self._own:  # the trainer keeps its source itself
            super().promote(branch, step, kind)


def own_folder(spec: spec_mod.WorkerSpec, cluster: Any) -> str:
    """Where a worker keeps its own files (its lock, state and status)."""
    if cluster is not None:
        raise ValueError("tb-retune worker runs one training process per worker; a multi-process JAX job "
                         "cannot be a search worker (start one `tb-retune worker` per process instead)")
    os.makedirs(spec.folder, exist_ok=True)
    return spec.folder


def open_session(options: ControllerOptions, model: Any, optimizer: Any, params: Mapping[str, Any] | None,
                 spec: spec_mod.WorkerSpec, *, tick: Callable[[], None], mailbox: Any, evaluation: Any) -> Session:
    """A search worker's session: the experiment of ``spec`` (whatever logdir
    the script names), no control file, its own status in its own folder,
    the running search joined (waiting for one to start)."""
    if os.path.realpath(spec.experiment) != os.path.realpath(options.logdir):
        logger.info("retune: worker: training script names %s; joining %s as `tb-retune worker` says",
                    options.logdir, spec.experiment)
    options = dataclasses.replace(options, logdir=spec.experiment)
    s = Session(options, model, optimizer, params, tick=tick, own_folder=spec.folder, status_name=STATUS_FILENAME)
    s.mailbox = mailbox
    build_optimizer_if_possible(model, optimizer)
    start(s, spec, evaluation)
    s.started = True
    s.publish_known()
    s.start_status_later()
    return s


def start(s: Session, spec: spec_mod.WorkerSpec, evaluation: Any) -> None:
    """Begins a worker's run: its own store, no branch, the search joined."""
    from tb_retune.trainer import search_host
    from tb_retune.trainer.checkpoint_writer import make_writer
    from tb_retune.trainer.search import NoSearchRunning, SearchWorker

    store = WorkerStore(s.store.folder, s.options.keep_checkpoints)
    s.checkpoints.writer.stop()
    s.store = s.checkpoints.store = store
    s.checkpoints.writer = make_writer(s.options.background_checkpoints, store, s.on_checkpoint_written,
                                       s.report_error)
    with s.state.lock:
        s.state.branch, s.state.node, s.state.branches = "", "", {}
    s.worker_spec = spec
    s.search_host = host = search_host.SessionTrialHost(s, evaluation)
    s.search_worker = worker = SearchWorker(s.logdir, host, storage_url=spec.storage, search_id=spec.search)
    said = False
    while True:
        try:
            worker.join()
            return
        except NoSearchRunning as e:
            left = None if spec.wait_until is None else spec.wait_until - time.time()
            if left is not None and left <= 0:  # nothing to do: fit ends at once
                s.worker_leave = (spec_mod.REASON_NO_SEARCH, str(e))
                s.log(f"retune: {e}")
                return
            if not said:
                which = f"search {spec.search}" if spec.search else "a search"
                limit = "" if left is None else f" (up to {left:.0f}s)"
                s.log(f"retune: worker: no search is running in {s.logdir}; waiting for {which} to start{limit}: "
                      "`tb-retune search`, or Search from here in the tab")
                said = True
            time.sleep(WAIT_POLL_S if left is None else max(0.0, min(WAIT_POLL_S, left)))


def boundary(s: Session) -> tuple[bool, bool]:
    """A worker's batch boundary: returns ``(retrace, stop)``. As the
    trainer's (``boundary.run``): the status shows the boundary's work once
    it is recorded whole, and its checkpoint writes start when it is done."""
    with s.state.commit_lock, s.checkpoints.writer.held():
        return _boundary(s)


def _boundary(s: Session) -> tuple[bool, bool]:
    worker, host = s.search_worker, s.search_host
    if s.worker_leave is not None or worker is None or host is None:
        return False, True
    if not s.on_branch and not s.checkpoints.ready():
        return False, False  # the first batch builds the model; the first trial starts after it
    step = s.steps.sync()
    s.steps.calls = 1
    retrace = False
    if s.on_branch:
        s.checkpoints.take_deferred(s.state.branch, step, s.state.node)
        retrace |= external.record(s, None, step)
    host.restored = False
    try:
        action = worker.on_boundary(step, host.take_logs())
    except Exception as e:  # the trial is queued again (SearchWorker); this process leaves
        message = f"worker: search {worker.joined or '?'}: {type(e).__name__}: {e}"
        s.report_error(message)
        s.worker_leave = (spec_mod.REASON_FAILED, message)
        _leave_branch(s)
        return host.take_retrace(), True
    if host.restored:
        s.steps.calls = 1
        step = s.steps.known
        s.status.poke()  # a worker is never resumed: its status shows the new trial soon
    if action.leave is not None:
        s.worker_leave = (action.leave.reason, action.leave.message)
        s.log(f"retune: {action.leave.message}; this worker ends fit")
        _leave_branch(s)
        return host.take_retrace(), True
    if s.on_branch:
        s.checkpoints.at_step(s.state.branch, step, s.state.node)
    return host.take_retrace(), False


def _leave_branch(s: Session) -> None:
    """The last trial's branch is done: the batch that runs before ``fit``
    stops records nothing on it (its end state is told already)."""
    if not s.on_branch:
        return
    s.end_hparams_session("left")
    s.records.close()
    with s.state.lock:
        s.state.branch, s.state.node = "", ""


def end(s: Session, state: str, error: str | None) -> None:
    """``fit`` ends: a trial cut short is queued again, the report is written."""
    worker, spec = s.search_worker, s.worker_spec
    search_id = (worker.joined if worker is not None else None) or (spec.search if spec is not None else None)
    if worker is not None:
        worker.close()
    if spec is None:
        return
    message: str | None
    if s.worker_leave is not None:
        reason, message = s.worker_leave
    elif state == "failed":
        reason, message = spec_mod.REASON_FAILED, error
    else:
        reason, message = spec_mod.REASON_FIT_ENDED, None
    report = spec_mod.WorkerReport(search=search_id, reason=reason,
                                   trials=tuple(worker.finished if worker is not None else ()),
                                   error=message if reason == spec_mod.REASON_FAILED else None)
    try:
        report.write(spec.report)
    except OSError as e:
        s.log(f"retune: worker: cannot write {spec.report}: {e}")


def status(s: Session, data: dict[str, Any]) -> None:
    """The worker's part of its own status."""
    worker = s.search_worker
    if worker is not None:
        data["searches"] = worker.searches()
        data["worker"] = {"search": worker.joined, "trials": list(worker.finished),
                          "leave": s.worker_leave[1] if s.worker_leave else None}
