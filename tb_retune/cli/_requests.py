"""``set``, ``restore``, ``stop`` and ``note``: write the control file, optionally wait for the trainer.

A write goes through :func:`tb_retune.experiment.control_file.write_control`, the same
validated, locked and atomic merge that the Retune tab uses, which stamps the
file with a new ``revision``. Waiting reads only the trainer's status file and
asks the one rule, :func:`tb_retune.experiment.requests.request_state`,
what became of that revision: applied, rejected (with the trainer's error),
unchanged, or no trainer to take it (said at once, not after the timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from tb_retune.cli._experiment import CliError, Experiment
from tb_retune.cli._views import entries
from tb_retune.experiment import control_file, requests
from tb_retune.experiment.control import CONTROL_FILENAME, format_value, validate_hyperparameters
from tb_retune.reader.tree import trainer_liveness

#: Seconds between two reads of the status file while waiting.
POLL_S = 0.05


def parse_value(text: str) -> Any:
    """``3e-4`` -> 0.0003, ``2`` -> 2, ``true``/``false``, ``null``; anything
    else is returned as the string, for the schema to refuse by name."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    try:
        return int(lowered)
    except ValueError:
        pass
    try:
        return float(lowered)
    except ValueError:
        return text


def split_assignment(text: str) -> tuple[str, str]:
    """``learning_rate=3e-4`` -> ``("learning_rate", "3e-4")``; ValueError if malformed."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise ValueError(f"expected NAME=VALUE (e.g. learning_rate=3e-4), got {text!r}")
    return name, value


def parse_assignments(items: Sequence[str], where: str) -> dict[str, Any]:
    """``["learning_rate=3e-4", ...]`` -> ``{"learning_rate": 0.0003, ...}``."""
    out: dict[str, Any] = {}
    for item in items:
        name, value = split_assignment(item)
        if name in out:
            raise CliError(f"{where}.{name}: given twice ({format_value(out[name])} and {value.strip()})")
        out[name] = parse_value(value)
    return out


def _entry_key(entry: Any) -> str:
    return repr(sorted(entry.items())) if isinstance(entry, dict) else repr(entry)


def _later_revisions(experiment: Experiment, revision_id: str) -> list[str]:
    """The revision the control file holds now, when a later write replaced ours."""
    control, _ = experiment.control()
    current = (control or {}).get("revision")
    rid = current.get("id") if isinstance(current, dict) else None
    return [rid] if isinstance(rid, str) and rid != revision_id else []


def wait_for_revision(experiment: Experiment, revision_id: str, timeout: float, what: str,
                      clock: Callable[[], float] = time.monotonic) -> tuple[str, dict[str, Any]]:
    """Polls the status until the trainer took ``revision_id``; returns
    ``(state, status)`` with state ``applied`` or ``unchanged``.

    Raises CliError at once when the trainer refused it (with its error) or
    no trainer runs, and after ``timeout`` seconds when it is still pending.
    """
    deadline = clock() + timeout
    while True:
        status = experiment.status()
        state = requests.request_state(status, revision_id, time.time(),
                                       later=_later_revisions(experiment, revision_id))
        if state == requests.REJECTED:
            record = requests.control_record(status) or {}
            raise CliError(f"the trainer refused {what}: {record.get('error') or 'no reason given'}; "
                           "nothing was changed")
        if state in requests.FINAL:
            return state, status or {}
        if state == requests.NO_TRAINER:
            live = trainer_liveness(status, time.time())
            pid = (status or {}).get("pid")
            how = (f"state {live['state']}" if live["state"] not in ("training", "not_responding")
                   else f"pid {pid} is gone")
            raise CliError(
                f"the trainer is not running ({how}), so it has not applied {what}; it applies "
                f"{CONTROL_FILENAME} when training runs again on this experiment, and the request stays there"
            )
        if clock() >= deadline:
            live = trainer_liveness(status, time.time())
            if live["state"] == "not_responding":
                why = f"the trainer has not responded for {live['age_s']:.0f} s"
            else:
                why = "the trainer is running but has not taken it yet"
            raise CliError(
                f"timed out after {timeout:g} s waiting for {what} to be applied: {why}; "
                f"the request stays in {CONTROL_FILENAME}"
            )
        time.sleep(POLL_S)


def set_hyperparameters(experiment: Experiment, assignments: Sequence[str], *,
                        wait: bool, timeout: float) -> dict[str, Any]:
    """Writes ``hyperparameters``; with ``wait``, returns once they are in force.

    Returns ``{"written": {...}, "revision": id, "control": {...}, "state":
    None or the request's final state, "applied": entry or None,
    "hyperparameters": in force or None, "step": ...}``.
    """
    folder = experiment.require_writable()
    status = experiment.require_status()
    wanted = parse_assignments(assignments, "hyperparameters")
    known = status.get("hyperparameters") if isinstance(status.get("hyperparameters"), dict) else None
    checked = validate_hyperparameters("hyperparameters", wanted, known or None)
    applied_before = {_entry_key(a) for a in entries(status, "applied")}
    control = control_file.write_control(folder, {"hyperparameters": checked})
    revision = control["revision"]["id"]
    result: dict[str, Any] = {"written": {"hyperparameters": checked}, "revision": revision, "control": control,
                              "state": None, "applied": None, "hyperparameters": None, "step": None}
    if not wait:
        return result
    state, status_now = wait_for_revision(experiment, revision, timeout, "the new hyperparameters")
    result["state"] = state
    result["hyperparameters"] = status_now.get("hyperparameters")
    result["step"] = status_now.get("step")
    changes = [a for a in entries(status_now, "applied")
               if _entry_key(a) not in applied_before and a.get("kind") == "control"]
    result["applied"] = changes[-1] if changes else None
    return result


def request_restore(experiment: Experiment, *, branch: str | None, step: int,
                    assignments: Sequence[str], wait: bool, timeout: float) -> dict[str, Any]:
    """Writes a ``restore`` request with a new id; with ``wait``, returns
    once the trainer carried it out, with the new branch's name.

    Refused (nothing written) while an earlier restore is still pending.
    """
    folder = experiment.require_writable()
    status = experiment.require_status()
    branch = branch or str(status.get("branch") or "main")
    extra = parse_assignments(assignments, "restore.hyperparameters")
    request: dict[str, Any] = {"id": control_file.new_restore_id(), "branch": branch, "step": step}
    if extra:
        request["hyperparameters"] = extra
    control = control_file.write_control(folder, {"restore": request})
    rid = request["id"]
    result: dict[str, Any] = {"id": rid, "revision": control["revision"]["id"],
                              "written": {"restore": control.get("restore")},
                              "control": control, "applied": None, "branch": None}
    if not wait:
        return result
    _, st = wait_for_revision(experiment, result["revision"], timeout, f"restore {rid}")
    if rid not in requests.restores_done(st):
        raise CliError(f"the trainer took {CONTROL_FILENAME} but did not carry out restore {rid}; "
                       "see `tb-retune status` for its errors")
    entry = next((e for e in reversed(entries(st, "applied")) if e.get("id") == rid and e.get("kind") == "restore"),
                 None)
    if entry is None:  # pushed out of the last 50 already: the branch in force is the new one
        entry = {"id": rid, "kind": "restore", "branch": st.get("branch"), "node": st.get("node"),
                 "step": st.get("step"), "what": f"restored as branch {st.get('branch')}"}
    result["applied"] = entry
    result["branch"] = entry.get("branch")
    return result


def request_stop(experiment: Experiment, *, wait: bool, timeout: float) -> dict[str, Any]:
    """Writes ``stop: true``; with ``wait``, returns once the trainer has stopped.

    Returns ``{"written": {"stop": true}, "control": {...}, "state": ..., "step": ...}``.
    """
    folder = experiment.require_writable()
    experiment.require_status()
    control = control_file.write_control(folder, {"stop": True})
    result: dict[str, Any] = {"written": {"stop": True}, "revision": control["revision"]["id"],
                              "control": control, "state": None, "step": None}
    if not wait:
        return result
    deadline = time.monotonic() + timeout
    while True:
        status = experiment.status() or {}
        if status.get("state") in ("stopped", "finished", "failed"):
            break  # the trainer ended (it marks the stop's revision on its way out, or ended anyway)
        state = requests.request_state(status, result["revision"], time.time())
        if state == requests.REJECTED:
            record = requests.control_record(status) or {}
            raise CliError(f"the trainer refused the stop: {record.get('error') or 'no reason given'}")
        if state == requests.NO_TRAINER:
            raise CliError(f"the trainer is not running, so there is nothing to stop; the request stays in "
                           f"{CONTROL_FILENAME}")
        if time.monotonic() >= deadline:
            raise CliError(f"timed out after {timeout:g} s waiting for the trainer to stop; "
                           f"the request stays in {CONTROL_FILENAME}")
        time.sleep(POLL_S)
    result["state"] = status.get("state")
    result["step"] = status.get("step")
    return result


def set_note(experiment: Experiment, node: str, text: str) -> dict[str, Any]:
    """Writes the note of ``node`` (``""`` removes it) into ``notes``.

    The node must be in the tree. Returns ``{"written": {"notes": {...}},
    "revision": id, "control": {...}}``; the trainer records the note in the
    event files when it takes the revision.
    """
    folder = experiment.require_writable()
    experiment.node(node)  # names the node ids when there is no such node
    update = {"notes": {node: text}}
    control = control_file.write_control(folder, update)
    return {"written": update, "revision": control["revision"]["id"], "control": control}
