"""``set`` and ``restore``: write the control file, optionally wait for the trainer.

A write goes through :func:`tb_retune.experiment.control_file.write_control`, the same
validated, locked and atomic merge that the Retune tab uses. Waiting reads
only the trainer's status file: a revision is applied when the status names
the file's sha256 (``control_sha256``) and the values are in force; it is
refused when a new entry appears in ``errors``.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tb_retune.cli._experiment import CliError, Experiment
from tb_retune.cli._views import entries
from tb_retune.experiment import control_file
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


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.0)
    return bool(a == b)


def _file_sha256(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, CONTROL_FILENAME), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _ignored_as_unchanged(status: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The names whose value is already what the trainer last saw in the
    file but not what it runs with (a restore or the schedule changed it
    since): the trainer applies only values that change in the file."""
    seen = status.get("control_seen")
    in_force = status.get("hyperparameters") or {}
    if not isinstance(seen, dict) or not isinstance(in_force, dict):
        return []
    return [
        name for name, value in wanted.items()
        if name in seen and _same(seen[name], value) and name in in_force and not _same(in_force[name], value)
    ]


class _Waiter:
    """Polls the status file until ``done(status)`` says yes, an error
    appears, or the timeout passes."""

    def __init__(self, experiment: Experiment, timeout: float, what: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.experiment = experiment
        self.timeout = timeout
        self.what = what
        self._clock = clock
        before = experiment.status()
        self._errors_before = {_entry_key(e) for e in entries(before, "errors")}
        self._applied_before = {_entry_key(a) for a in entries(before, "applied")}

    def new_applied(self, status: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """The ``applied`` entries that were not there when waiting began."""
        return [a for a in entries(status, "applied") if _entry_key(a) not in self._applied_before]

    def wait(self, done: Callable[[dict[str, Any]], Any]) -> Any:
        deadline = self._clock() + self.timeout
        status: dict[str, Any] | None = None
        while True:
            status = self.experiment.status() or status
            if status is not None:
                new = [e for e in entries(status, "errors") if _entry_key(e) not in self._errors_before]
                if new:
                    message = str(new[-1].get("message", new[-1]))
                    raise CliError(f"the trainer refused {self.what}: {message}")
                result = done(status)
                if result:
                    return result
            if self._clock() >= deadline:
                live = trainer_liveness(status, time.time())
                if live["state"] == "not_responding":
                    why = f"the trainer has not responded for {live['age_s']:.0f} s"
                elif live["alive"]:
                    why = "the trainer is running but has not applied it yet"
                else:
                    why = (f"the trainer is not running (state {live['state']}); it applies "
                           f"{CONTROL_FILENAME} when training runs again")
                raise CliError(
                    f"timed out after {self.timeout:g} s waiting for {self.what} to be applied: {why}; "
                    f"the request stays in {CONTROL_FILENAME}"
                )
            time.sleep(POLL_S)


def set_hyperparameters(experiment: Experiment, assignments: Sequence[str], *,
                        wait: bool, timeout: float) -> dict[str, Any]:
    """Writes ``hyperparameters``; with ``wait``, returns once they are in force.

    Returns ``{"written": {...}, "control": {...}, "applied": entry or None,
    "hyperparameters": in force or None, "step": ...}``.
    """
    folder = experiment.require_writable()
    status = experiment.require_status()
    wanted = parse_assignments(assignments, "hyperparameters")
    known = status.get("hyperparameters") if isinstance(status.get("hyperparameters"), dict) else None
    checked = validate_hyperparameters("hyperparameters", wanted, known or None)
    stale = _ignored_as_unchanged(status, checked)
    if stale:
        in_force = status.get("hyperparameters") or {}
        parts = ", ".join(f"{n}={format_value(checked[n])} (it runs with {format_value(in_force.get(n))})"
                          for n in stale)
        raise CliError(
            f"hyperparameters: {parts}: the trainer last read this value from {CONTROL_FILENAME} and "
            "applies only values that change there (a restore or the schedule changed it since); "
            "nothing was written"
        )
    waiter = _Waiter(experiment, timeout, "the new hyperparameters") if wait else None
    control = control_file.write_control(folder, {"hyperparameters": checked})
    result: dict[str, Any] = {"written": {"hyperparameters": checked}, "control": control,
                              "applied": None, "hyperparameters": None, "step": None}
    if waiter is None:
        return result
    sha = _file_sha256(folder)

    def done(st: dict[str, Any]) -> bool:
        got = st.get("control_sha256")
        if got is None or got not in (sha, _file_sha256(folder)):
            return False
        in_force = st.get("hyperparameters") or {}
        if all(name in in_force and _same(in_force[name], value) for name, value in checked.items()):
            return True
        if got == sha:
            # The trainer took this very revision, and runs with other values.
            diff = ", ".join(f"{n}={format_value(in_force.get(n))}" for n in checked
                             if not _same(in_force.get(n), checked[n]))
            raise CliError(f"the trainer took {CONTROL_FILENAME} but runs with {diff}")
        return False

    waiter.wait(done)
    status_now = experiment.status() or {}
    result["hyperparameters"] = status_now.get("hyperparameters")
    result["step"] = status_now.get("step")
    changes = [a for a in waiter.new_applied(status_now) if a.get("kind") == "control"]
    result["applied"] = changes[-1] if changes else None
    return result


def request_restore(experiment: Experiment, *, branch: str | None, step: int,
                    assignments: Sequence[str], wait: bool, timeout: float) -> dict[str, Any]:
    """Writes a ``restore`` request with a new id; with ``wait``, returns
    once the trainer carried it out, with the new branch's name."""
    folder = experiment.require_writable()
    status = experiment.require_status()
    branch = branch or str(status.get("branch") or "main")
    extra = parse_assignments(assignments, "restore.hyperparameters")
    request: dict[str, Any] = {"id": control_file.new_restore_id(), "branch": branch, "step": step}
    if extra:
        request["hyperparameters"] = extra
    waiter = _Waiter(experiment, timeout, f"restore {request['id']}") if wait else None
    control = control_file.write_control(folder, {"restore": request})
    result: dict[str, Any] = {"id": request["id"], "written": {"restore": control.get("restore")},
                              "control": control, "applied": None, "branch": None}
    if waiter is None:
        return result
    rid = request["id"]

    def done(st: dict[str, Any]) -> dict[str, Any] | None:
        if rid not in (st.get("restores_done") or []):
            return None
        for entry in reversed(entries(st, "applied")):
            if entry.get("id") == rid and entry.get("kind") == "restore":
                return entry
        # Pushed out of the last 50 already: the branch in force is the new one.
        return {"id": rid, "kind": "restore", "branch": st.get("branch"), "node": st.get("node"),
                "step": st.get("step"), "what": f"restored as branch {st.get('branch')}"}

    entry = waiter.wait(done)
    result["applied"] = entry
    result["branch"] = entry.get("branch")
    return result


def request_stop(experiment: Experiment, *, wait: bool, timeout: float) -> dict[str, Any]:
    """Writes ``stop: true``; with ``wait``, returns once the trainer has stopped.

    Returns ``{"written": {"stop": true}, "control": {...}, "state": ..., "step": ...}``.
    """
    folder = experiment.require_writable()
    experiment.require_status()
    waiter = _Waiter(experiment, timeout, "the stop") if wait else None
    control = control_file.write_control(folder, {"stop": True})
    result: dict[str, Any] = {"written": {"stop": True}, "control": control, "state": None, "step": None}
    if waiter is None:
        return result
    status = waiter.wait(lambda st: st if st.get("state") in ("stopped", "finished", "failed") else None)
    result["state"] = status.get("state")
    result["step"] = status.get("step")
    return result
