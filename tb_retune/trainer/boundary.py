"""The work of a batch boundary where something is due, on the training thread.

The controller's batch hook only compares version numbers (O(1)); when one
differs, :func:`run` does the work in one order: a pending resume, a deferred
checkpoint, values someone else set, the newest control-file revision, a
running search, schedule entries, step checkpoints.
"""

from __future__ import annotations

from typing import Any

from tb_retune._errors import ControlError
from tb_retune.trainer import external, revisions, search_host, startup
from tb_retune.trainer.changes import apply_change
from tb_retune.trainer.mailbox import RevisionMailbox
from tb_retune.trainer.session import Session


def run(s: Session, mailbox: RevisionMailbox[Any]) -> tuple[bool, bool]:
    """Applies what is due at the step read from the optimizer; returns
    ``(retrace, stop asked for)``. The batch about to run is counted
    (``calls = 1``) once the step is re-read. The checkpoints taken here are
    copied at once and handed to the writer's thread at the end; the status
    shows the boundary's changes once all of it is recorded."""
    with s.state.commit_lock, s.checkpoints.writer.held():
        return _run(s, mailbox)


def _run(s: Session, mailbox: RevisionMailbox[Any]) -> tuple[bool, bool]:
    step = s.steps.sync()
    s.steps.calls = 1
    retrace, stop = False, False
    if s.resume_pending:
        if not s.checkpoints.ready():
            return False, False  # the first step builds the model; resume after it
        retrace |= startup.finish_resume(s)
        step = s.steps.known
        s.steps.calls = 1
    s.checkpoints.take_deferred(s.state.branch, step, s.state.node)
    retrace |= external.record(s, None, step)  # set by another callback since we last looked
    incoming = mailbox.take()
    if incoming is not None:
        r, stop = revisions.take(s, incoming)
        retrace |= r
        step = s.steps.known
        s.steps.calls = 1  # a restore re-read the step; count the batch about to run
    if search_host.busy(s):
        retrace |= search_host.boundary(s, step)
        step = s.steps.known
    if s.schedule.due(step):
        retrace |= fire_schedule(s, step)
    s.checkpoints.at_step(s.state.branch, step, s.state.node)
    return retrace, stop


def fire_schedule(s: Session, step: int) -> bool:
    """Applies the schedule entries due at ``step`` (each once per branch)."""
    retrace = False
    for entry in s.schedule.take_due(s.state.branch, step):
        where = f"schedule(at_step={entry.at_step}).hyperparameters"
        try:
            values = revisions.check_values(s, where, entry.hyperparameters, s.handle.get())
            retrace |= apply_change(s, values, reason="schedule")
        except ControlError as e:
            s.report_error(str(e))
    s.save_state_later()
    return retrace
