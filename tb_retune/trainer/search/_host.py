"""What the search engine needs from the trainer, and what it reports back.

The engine never touches Keras: the trainer (the controller, or a test's
small loop) implements :class:`TrialHost`, and calls
:meth:`~tb_retune.trainer.search.SearchEngine.on_boundary` at each batch
boundary on the training thread. The engine answers with an :class:`Action`
that says what it did through the host (a trial started, a trial ended, the
search finished) so that the caller can log it or retrace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any, Protocol


class TrialHost(Protocol):
    """The trainer's side of a search. Every method runs on the training
    thread, at a batch boundary, between two train steps."""

    def hyperparameters(self) -> Mapping[str, Any]:
        """The optimizer's hyperparameters in force now (name -> value)."""
        ...

    def metrics(self) -> Collection[str] | None:
        """The names of the metrics that ``fit`` logs (``loss``, ``val_loss``,
        ...), or None while they are not known yet (before the first log)."""
        ...

    def checkpoint_hyperparameters(self, branch: str, step: int) -> Mapping[str, Any] | None:
        """The hyperparameters saved with the checkpoint at ``step`` of
        ``branch``; None when there is no such checkpoint."""
        ...

    def keep_checkpoint(self, branch: str, step: int) -> None:
        """Keeps the checkpoint at ``step`` of ``branch`` (a search's source)
        out of the retention policy's reach: every trial restores it."""
        ...

    def keep_checkpoint_now(self) -> tuple[str, int]:
        """Takes (or keeps out of the retention policy) a checkpoint of the
        state now and returns its ``(branch, step)``; it stays restorable."""
        ...

    def restore(self, branch: str, step: int, hyperparameters: Mapping[str, Any],
                new_branch_name: str, node_record_extra: Mapping[str, Any]) -> str:
        """Loads the checkpoint at ``step`` of ``branch`` (weights, optimizer
        slots, step), sets ``hyperparameters`` (all of them, not a diff), and
        trains on as a new branch named ``new_branch_name`` (or a free name
        close to it). The new branch's first node record gets
        ``node_record_extra`` merged in (key ``search``). Returns the name of
        the new branch. A change that needs a retrace is the host's to do
        before the next train step."""
        ...

    def update_node_record(self, node_record_extra: Mapping[str, Any]) -> None:
        """Merges ``node_record_extra`` into the record of the node in force
        and writes the record again (a trial's value, or its pruned step)."""
        ...

    def evaluate(self, metric: str) -> float | None:
        """The objective ``metric`` measured on the state now (a trial's end):
        ``val_<m>`` over the validation data that ``fit`` was given, one full
        pass; a training metric over the training data. None when the host
        cannot measure it: then the trial's value is its last logged point."""
        ...

    def report_error(self, message: str) -> None:
        """Shows ``message`` in the status's ``errors``, the log and the tab."""
        ...

    def wait(self, seconds: float) -> bool:
        """Blocks up to ``seconds`` while other processes run the search's
        last trials. Returns False at once when the trainer has something
        else to do at this boundary (a new revision of the control file),
        True after the time is up."""
        ...

    def steps_left(self) -> int | None:
        """How many train steps this ``fit`` has left (a worker starts no
        trial that it cannot finish), or None when unknown."""
        ...

    def log(self, message: str) -> None:
        """One line for the trainer's console."""
        ...


@dataclasses.dataclass(frozen=True)
class TrialStart:
    search_id: str
    number: int
    branch: str
    hyperparameters: Mapping[str, Any]
    baseline: bool


@dataclasses.dataclass(frozen=True)
class TrialEnd:
    search_id: str
    number: int
    branch: str
    state: str  # "complete", "pruned" or "failed"
    value: float | None
    step: int


@dataclasses.dataclass(frozen=True)
class SearchDone:
    search_id: str
    then: str  # "best" or "source"
    branch: str  # the branch that training goes on with
    from_branch: str
    from_step: int
    hyperparameters: Mapping[str, Any]
    best_number: int | None


@dataclasses.dataclass(frozen=True)
class Leave:
    """Why a worker leaves a search: ``reason`` is ``"done"`` (no trial is
    left for it) or ``"no_steps"`` (its ``fit`` has fewer steps left than a
    trial takes); ``message`` says it to a person."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Action:
    """What one :meth:`SearchEngine.on_boundary` call did, through the host.

    ``kind`` is ``"nothing"``, ``"start_trial"`` (a trial began: the host
    restored the source as ``started.branch``), ``"end_trial"`` (a trial
    ended and no other began), ``"done"`` (the search is over; the host
    restored what ``then`` asked for) or ``"leave"`` (a worker has nothing
    left to do in it). One call can end a trial and start
    the next: then ``ended`` and ``started`` are both set.
    """

    ended: TrialEnd | None = None
    started: TrialStart | None = None
    done: SearchDone | None = None
    #: A worker leaves the search: it has no trial left to run, or too few steps.
    leave: Leave | None = None

    @property
    def kind(self) -> str:
        if self.done is not None:
            return "done"
        if self.leave is not None:
            return "leave"
        if self.started is not None:
            return "start_trial"
        if self.ended is not None:
            return "end_trial"
        return "nothing"


NOTHING = Action()
