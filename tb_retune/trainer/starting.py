"""The start of a run (``RetuneController.begin``): the session, the
experiment started, resumed or continued in it, the control-file watcher,
and what the control file holds at the start put in force before the
first step. The controller keeps its own parts (lock, watcher, cluster,
mailbox) and calls these; ``ending`` is the other end of the run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from tb_retune.trainer import continuation, revisions, search_host, startup
from tb_retune.trainer.checkpointing import build_optimizer_if_possible
from tb_retune.trainer.distributed import Cluster
from tb_retune.trainer.mailbox import RevisionMailbox
from tb_retune.trainer.options import ControllerOptions
from tb_retune.trainer.revisions import Incoming
from tb_retune.trainer.session import Session
from tb_retune.trainer.watcher import ControlWatcher


def new_session(options: ControllerOptions, model: Any, optimizer: Any, params: Mapping[str, Any] | None, *,
                cluster: Cluster | None, tick: Callable[[], None],
                mailbox: RevisionMailbox[Incoming]) -> Session:
    """What one run works with; a follower of several processes keeps its files in a scratch folder."""
    if cluster is not None:
        cluster.seed_state(options.logdir)
        options = dataclasses.replace(options, logdir=cluster.folder(options.logdir))
    s = Session(options, model, optimizer, params, tick=tick)
    s.mailbox = mailbox
    return s


def start(s: Session, previous: Session | None, *, cluster: Cluster | None, logdir: str,
          evaluation: search_host.EvaluationData | None) -> bool:
    """Starts, resumes or (a second ``fit`` in this process) continues the
    experiment; returns whether the train function must be traced again."""
    if cluster is not None:
        cluster.join(s, logdir)
    build_optimizer_if_possible(s.model, s.optimizer)
    if continuation.continues(previous, s.model, s.optimizer):
        retrace = continuation.continue_run(s)
    else:
        retrace = startup.start(s)
    search_host.attach(s, evaluation)
    s.started = True
    s.publish_known()
    return retrace


def watch(s: Session, control_path: str, options: ControllerOptions,
          on_revision: Callable[[bytes | None], None]) -> tuple[ControlWatcher, bytes | None]:
    """The control-file watcher, started, and what the file holds now.

    What the file holds at the start is in force from the first step: it is
    read here, once; the watcher sets up its observer on its own thread,
    reads again, and reports what differs and later saves."""
    watcher = ControlWatcher(control_path, on_revision, debounce_s=options.debounce_s, polling=options.polling,
                             on_kind=lambda kind: setattr(s, "watcher_kind", kind))
    initial = watcher.read_now()
    watcher.start(background=True)
    s.watcher_kind = watcher.kind
    return watcher, initial


def take_initial(s: Session, mailbox: RevisionMailbox[Incoming], initial: bytes,
                 due: Callable[[], bool]) -> bool:
    """Puts the control file's content at the start in force before the first
    step (``due``: the controller's turn); a resume waiting for its model's
    first step takes it there instead. Returns whether to retrace."""
    revisions.receive(s, mailbox, initial)
    if s.resume_pending:
        return False
    retrace = due()
    s.steps.calls = 0  # no batch is about to run yet
    # fit has not counted an epoch yet: a restore carried out now gives its
    # branch all the epochs it has left.
    s.initial_epoch = s.fit_epoch = s.state.epoch
    s.plan_epochs(s.state.branch, s.state.epoch)
    return retrace


def run_start(s: Session, previous: Session | None, *, cluster: Cluster | None, logdir: str, control_path: str,
              evaluation: search_host.EvaluationData | None, on_revision: Callable[[bytes | None], None],
              due: Callable[[], bool], look: Callable[[], bool] | None) -> tuple[bool, ControlWatcher | None]:
    """The whole start of a run in ``s``: started, resumed or continued, the
    watcher (the leader's only), the control file's content put in force and
    ``look`` (what others set before the start). Returns whether to retrace,
    and the watcher.

    No other code runs until ``begin()`` returns, so the optimizer is read
    once (``steady``); the writer's jobs (the root node's record, the state)
    wait for the end of the start, so that its thread does not take the GIL
    from the step-0 snapshot's reads."""
    assert s.mailbox is not None
    watcher = None
    try:
        with s.handle.steady(), s.checkpoints.writer.held():
            retrace = start(s, previous, cluster=cluster, logdir=logdir, evaluation=evaluation)
            initial = None
            if cluster is None or cluster.leader:
                watcher, initial = watch(s, control_path, s.options, on_revision)
            if cluster is not None:
                initial = cluster.broadcast_bytes(initial)
            if initial is not None:
                retrace |= take_initial(s, s.mailbox, initial, due)
            if look is not None:
                retrace |= look()
    except BaseException:
        if watcher is not None:  # the caller closes the rest of the session
            watcher.stop()
        raise
    s.start_status_later()  # if the start has not (a fresh start does, before its first checkpoint)
    return retrace, watcher
