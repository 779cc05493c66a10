"""Taking a control-file revision: plan, validate, commit.

:func:`plan` works out what a revision asks for that is not in force yet;
:func:`validate` checks all of it (hyperparameters, the restore, every
schedule entry, cumulatively, against the optimizer) and changes nothing;
only :func:`commit` changes the optimizer, the model and the records. A
revision is therefore applied whole or not at all.

Which hyperparameters a revision sets (the request-tracking rule shared with
the plugin and the CLI): (a) every one whose value in the file changed since
the last revision the trainer took, and (b) every one named in the file's
``revision.keys`` whose value differs from the value in force.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from typing import Any

from tb_retune._errors import CheckpointError, ControlError
from tb_retune.experiment.control import (
    ControlRevision,
    RestoreRequest,
    ScheduleEntry,
    decode_control,
    parse_control_object,
    validate_hyperparameters,
)
from tb_retune.trainer import notes, search_revisions
from tb_retune.trainer.changes import apply_change, apply_restore
from tb_retune.trainer.mailbox import RevisionMailbox
from tb_retune.trainer.session import Session

_MISSING = object()


@dataclasses.dataclass(frozen=True)
class Incoming:
    """What the watcher thread hands over: a parsed revision and its bytes' hash."""

    sha256: str
    revision: ControlRevision

    @property
    def revision_id(self) -> str | None:
        """The writer's ``revision.id`` (None for a hand edit)."""
        return self.revision.revision_id

    @property
    def requested_keys(self) -> frozenset[str]:
        """What this write asked for even if the file's value did not change (``revision.keys``)."""
        return frozenset(self.revision.revision_keys)


@dataclasses.dataclass(frozen=True)
class RevisionPlan:
    """What committing a revision will do; nothing is changed yet."""

    hyperparameters: dict[str, Any]
    restore: RestoreRequest | None
    schedule: tuple[ScheduleEntry, ...] | None  # None: the schedule in force stays
    stop: bool  # a stop newly asked for
    stop_seen: bool
    control_seen: dict[str, Any]
    search: search_revisions.SearchPart | None = None

    def empty(self) -> bool:
        return not (self.hyperparameters or self.restore or self.schedule is not None or self.stop
                    or (self.search is not None and not self.search.empty()))


def plan(s: Session, incoming: Incoming) -> RevisionPlan:
    revision = incoming.revision
    in_force = s.handle.get()
    with s.state.lock:
        seen = s.state.control_seen
        stop_was = s.state.stop_seen
    keys = incoming.requested_keys
    wanted = {}
    for k, v in revision.hyperparameters.items():
        if in_force.get(k) == v:
            continue
        if seen is None or seen.get(k, _MISSING) != v or k in keys:
            wanted[k] = v
    restore = revision.restore
    if restore is not None and s.state.restore_done(restore.id):
        _check_not_reused(s, restore)
        restore = None
    schedule = revision.schedule if revision.schedule != s.schedule.entries else None
    p = RevisionPlan(hyperparameters=wanted, restore=restore, schedule=schedule,
                     stop=revision.stop and (not stop_was or "stop" in keys), stop_seen=revision.stop,
                     control_seen=dict(revision.hyperparameters))
    return search_revisions.during_search(s, p, seen, revision.search)


def _check_not_reused(s: Session, restore: RestoreRequest) -> None:
    """A restore id names one restore: the same id for another target is an error."""
    with s.state.lock:
        done = [(name, b) for name, b in s.state.branches.items() if b.get("request_id") == restore.id]
    for name, branch in done:
        source = branch.get("from") or {}
        if (source.get("branch"), source.get("step")) != (restore.branch, restore.step):
            raise ControlError(
                f"restore.id: {restore.id!r} was already carried out ({source.get('branch')}@{source.get('step')} "
                f"as branch {name}); this request for {restore.branch}@{restore.step} is not carried out: "
                "give the restore a new id"
            )


def check_values(s: Session, where: str, values: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    checked = validate_hyperparameters(where, dict(values), dict(base))
    s.handle.check_structural(checked)
    s.handle.check_representable(where, checked)
    return checked


def validate(s: Session, p: RevisionPlan) -> None:
    """Checks everything the plan would do; raises ControlError, changes nothing."""
    search_revisions.validate(s, p)
    base = dict(s.handle.get())
    if p.restore is not None:
        if not s.checkpoints.has(p.restore.branch, p.restore.step):
            steps = s.store.steps().get(p.restore.branch, [])
            raise ControlError(
                f"restore.step: branch {p.restore.branch!r} has no checkpoint at step {p.restore.step}; "
                f"restorable steps: {', '.join(map(str, steps[-20:])) or 'none'}"
            )
        base.update(check_values(s, "restore.hyperparameters", p.restore.hyperparameters, base))
    base.update(check_values(s, "hyperparameters", p.hyperparameters, base))
    # Schedule entries in the order they fire, each on top of what is in
    # force by then: a conflict between two keys is found now, not at its step.
    for entry in p.schedule if p.schedule is not None else ():
        base.update(check_values(s, f"schedule(at_step={entry.at_step}).hyperparameters",
                                  entry.hyperparameters, base))


def commit(s: Session, p: RevisionPlan) -> bool:
    """Applies a validated plan; returns whether to retrace."""
    retrace = False
    if p.restore is not None:
        retrace |= apply_restore(s, p.restore)
    if p.schedule is not None:
        with s.state.lock:
            branch = s.state.branch
        s.schedule.replace(p.schedule, branch)
    retrace |= apply_change(s, p.hyperparameters, reason="control")
    with s.state.lock:
        s.state.control_seen = p.control_seen
        s.state.stop_seen = p.stop_seen
    search_revisions.commit(s, p)
    return retrace


def _record_notes(s: Session, wanted: Mapping[str, str]) -> bool:
    """Writes the notes of a revision that changed into the event files; True if any."""
    with s.state.lock:
        recorded = dict(s.state.notes_recorded)
    after = notes.record_notes(s.records.writer, wanted, recorded, s.steps.known)
    with s.state.lock:
        s.state.notes_recorded = after
    return after != recorded


def take(s: Session, incoming: Incoming) -> tuple[bool, bool]:
    """Takes one revision on the training thread; returns (retrace, stop).

    Records the outcome in the state's ``control`` key (``applied``,
    ``rejected`` or ``unchanged``), and durably when a restore was carried
    out (a restore id is carried out exactly once).
    """
    retrace, stop, restored = False, False, False
    error: str | None = None
    try:
        p = plan(s, incoming)
        validate(s, p)
        retrace = commit(s, p)
        stop, restored = p.stop, p.restore is not None
        noted = _record_notes(s, incoming.revision.notes)
        result = "unchanged" if p.empty() and not noted else "applied"
    except (ControlError, CheckpointError, OSError) as e:
        # An OSError (a checkpoint gone, a full disk) is this revision's
        # failure, never the end of fit.
        error = str(e) if not isinstance(e, OSError) else f"restore: {type(e).__name__}: {e}"
        result = "rejected"
        s.report_error(error)
    with s.state.lock:
        s.state.control_sha256 = incoming.sha256
        s.state.control = {"revision": incoming.revision_id, "sha256": incoming.sha256, "result": result,
                           "error": error, "time": time.time()}
    if stop:
        s.log(f"retune: step {s.steps.known} stop requested; finishing after this batch")
    if restored:
        s.publish(durable=True)  # a restore id is carried out exactly once
    else:
        s.save_state_later()  # the status thread saves the state, then writes the status
    return retrace, stop



def receive(s: Session, mailbox: RevisionMailbox[Incoming], data: bytes) -> None:
    """On the watcher thread: parses and checks a revision (never applies it)
    and posts it for the training thread; a bad one is reported at once."""
    sha = hashlib.sha256(data).hexdigest()
    known, _ = s.known
    doc: Any = None
    try:
        doc = decode_control(data)
        # Whether a restore's checkpoint exists is checked by the training
        # thread (validate), which also sees pending writes.
        revision = parse_control_object(doc, known, None)
    except ControlError as e:
        s.report_error(str(e))
        stamp = doc.get("revision") if isinstance(doc, dict) else None
        rid = stamp.get("id") if isinstance(stamp, dict) else None
        with s.state.lock:
            s.state.control_sha256 = sha
            s.state.control = {"revision": rid if isinstance(rid, str) else None, "sha256": sha,
                               "result": "rejected", "error": str(e), "time": time.time()}
        s.status.poke()
        return
    mailbox.post(Incoming(sha, revision))
