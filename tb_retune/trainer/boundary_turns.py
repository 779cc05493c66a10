"""The batch boundary of a run: one comparison on a quiet batch, the full
look where something may be due, and what the training thread counts there.

:class:`BoundaryTurns` owns the counters that the callback, custom loops and
the demos read through the controller (``turns``, ``trace_version``,
``state_version``, ``stop_requested``) and the first step at which anything
but a new control-file revision can be due (``due.quiet_until``). What it
works on (the session, the cluster, the mailboxes) stays the controller's:
it reads them from its owner at each turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tb_retune.trainer import boundary, due, revisions, search_host, worker

if TYPE_CHECKING:
    from tb_retune.trainer.controller import RetuneController
    from tb_retune.trainer.session import Session


class BoundaryTurns:
    def __init__(self, owner: RetuneController) -> None:
        self._owner = owner
        #: A stop was asked for (the control file, the tab, the CLI; demo/run.py sets it too).
        self.stop_requested = False
        #: Changes when the train function must be traced again.
        self.trace_version = 0
        #: Counts the batch boundaries that took the full look (``before_step``'s slow path).
        self.turns = 0
        #: Changes when a due step may have assigned variables (JAX custom loops read the state back).
        self.state_version = 0
        #: Before this step only a new revision can be due (``due.quiet_until``).
        self.quiet_until: float = due.ALWAYS
        #: The branch in force when the last full look began (a restore changes it).
        self.branch_before = ""

    def before_step(self) -> bool:
        """Call before each train step. O(1) unless something is due.

        Returns True when the train function must be traced again.
        """
        owner = self._owner
        s = owner.session
        if s is None:
            return False
        steps = s.steps
        step = steps.known + steps.calls * steps.steps_per_call  # steps.current(), inline: every batch
        steps.calls += 1
        s.boundaries += 1
        if step < self.quiet_until and not owner.mailbox.due():
            return False
        self.turns += 1
        self.branch_before = s.state.branch
        try:
            with s.handle.steady():
                return self._turn(s, step)
        finally:
            self.plan()

    def _turn(self, s: Session, step: int) -> bool:
        """The full look at a boundary where something may be due."""
        owner = self._owner
        if s.worker_spec is not None:
            return self.due()  # a worker's turn at every boundary (its trial's steps)
        if owner.cluster is not None and owner.cluster.due(step):
            self._agree()
        if (not owner.mailbox.due() and not s.schedule.due(step) and not s.checkpoints.steps_due(step)
                and s.checkpoints.deferred is None and not s.resume_pending and not search_host.busy(s)):
            return False
        return self.due()

    def plan(self) -> None:
        """When the next boundary can have work; after anything that may change it."""
        owner = self._owner
        s = owner.session
        self.quiet_until = due.quiet_until(s, owner.cluster) if s is not None and owner.begun else due.ALWAYS

    def quiet_never(self) -> None:
        """Every boundary takes the full look (the run is ending)."""
        self.quiet_until = due.ALWAYS

    def _agree(self) -> None:
        """Every process, at the same step: the leader's newest control-file
        revision (if a new one came) reaches every process's mailbox now."""
        owner = self._owner
        s, cluster = owner.session, owner.cluster
        assert s is not None and cluster is not None
        data = cluster.broadcast_bytes(owner.inbox.take() if cluster.leader else None)
        if data is not None:
            revisions.receive(s, owner.mailbox, data)

    def due(self) -> bool:
        """Applies what is due, at the step read from the optimizer; the batch
        about to run is counted (``calls = 1``) once the step is re-read."""
        owner = self._owner
        s = owner.session
        assert s is not None
        owner.sync_state()
        self.state_version += 1
        retrace, stop = worker.boundary(s) if s.worker_spec is not None else boundary.run(s, owner.mailbox)
        if stop and not self.stop_requested:
            self.stop_requested = True
        if retrace:
            self.trace_version += 1
        return retrace

    def retraced(self) -> None:
        """Someone else's change needs the train function traced again."""
        self.trace_version += 1
