"""Was my request applied? The one rule, pure, for the CLI, the plugin and the tab.

Every write of our control-file writer stamps ``retune.json`` with
``"revision": {"id": "w-<12 hex>", "keys": [...]}``. When the trainer takes a
revision (applies it, refuses it, or finds nothing to do) it records in
``retune-status.json``::

    "control": {"revision": "w-…" | null, "sha256": "<hex of the bytes>",
                "result": "applied" | "rejected" | "unchanged",
                "error": "<message>" | null, "time": <unix time>}

:func:`request_state` reads a request's fate from that record alone, so
``tb-retune set --wait``, the plugin's ``status`` route and the Retune tab
give the same answer. :func:`pending_restore` says whether a restore in the
file is still to be carried out (a second one would replace it unseen).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Mapping
from typing import Any

#: The states of a request.
PENDING = "pending"
APPLIED = "applied"
REJECTED = "rejected"
UNCHANGED = "unchanged"
NO_TRAINER = "no_trainer"
#: The results a trainer records in the status' ``control``.
RESULTS = (APPLIED, REJECTED, UNCHANGED)
#: States after which a request changes no more.
FINAL = (APPLIED, REJECTED, UNCHANGED)
#: Without a ``host`` in the status, a dead pid counts only once the
#: heartbeat (refreshed every 2 s) is older than this: the trainer may run on
#: another machine that shares the folder.
PID_CHECK_AFTER_S = 5.0


def control_record(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The status' ``control`` record when it is one, else None."""
    record = status.get("control") if isinstance(status, Mapping) else None
    if not isinstance(record, Mapping) or record.get("result") not in RESULTS:
        return None
    return dict(record)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read(512).rsplit(b")", 1)[-1].split()[:1]
        return state != [b"Z"]
    except OSError:
        return True  # no /proc: kill(0) said it exists


def trainer_gone(status: Mapping[str, Any] | None, now: float) -> bool:
    """Whether no trainer lives: no status, a state other than ``training``,
    or the trainer's pid dead on this machine."""
    if not isinstance(status, Mapping) or status.get("state") != "training":
        return True
    pid = status.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    host = status.get("host")
    if host is not None and host != socket.gethostname():
        return False
    if host is None:
        heartbeat = status.get("heartbeat")
        if not isinstance(heartbeat, (int, float)) or now - float(heartbeat) <= PID_CHECK_AFTER_S:
            return False
    return not pid_alive(pid)


def request_state(status: Mapping[str, Any] | None, revision_id: str, now: float,
                  *, later: Collection[str] = ()) -> str:
    """The state of the write stamped ``revision_id``.

    Args:
        status: The decoded ``retune-status.json`` (None when absent).
        revision_id: The ``revision.id`` our writer stamped.
        now: The current Unix time (for the trainer's liveness).
        later: Revisions written after this one that carry it too (our writer
            merges, so the trainer's answer to one is the answer to this).

    Returns:
        ``"applied"``, ``"rejected"`` or ``"unchanged"`` when the trainer took
        the revision (or a later one), ``"no_trainer"`` when no trainer lives
        to take it, else ``"pending"``.
    """
    record = control_record(status)
    if record is not None and record.get("revision") in {revision_id, *later}:
        return str(record["result"])
    if trainer_gone(status, now):
        return NO_TRAINER
    return PENDING


def restores_done(status: Mapping[str, Any] | None) -> set[str]:
    done = status.get("restores_done") if isinstance(status, Mapping) else None
    return {str(d) for d in done} if isinstance(done, list) else set()


def pending_restore(control: Mapping[str, Any] | None, status: Mapping[str, Any] | None,
                    control_sha256: str | None) -> dict[str, Any] | None:
    """The restore in the control file that the trainer has still to carry out, or None.

    A restore is pending while its id is not among the status'
    ``restores_done``, whether a trainer runs or not, unless the trainer
    refused the very revision that holds it (``control.result`` is
    ``"rejected"`` for these bytes, ``control_sha256``): then it will never
    be carried out as it stands.
    """
    restore = control.get("restore") if isinstance(control, Mapping) else None
    if not isinstance(restore, Mapping) or not isinstance(restore.get("id"), str):
        return None
    if restore["id"] in restores_done(status):
        return None
    record = control_record(status)
    if record is not None and record.get("result") == REJECTED and control_sha256 is not None \
            and record.get("sha256") == control_sha256:
        return None
    return dict(restore)


def describe_pending(restore: Mapping[str, Any]) -> str:
    """The sentence that refuses a restore while ``restore`` is pending."""
    return (
        f"restore: an earlier restore {restore.get('id')} ({restore.get('branch')}@{restore.get('step')}) "
        "is still pending: the trainer has not carried it out yet, and a new one would replace it "
        "unseen; wait until the trainer has carried it out (tb-retune status shows it), or remove "
        "\"restore\" from retune.json to cancel it"
    )
