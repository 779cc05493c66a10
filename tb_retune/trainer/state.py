"""The trainer's own bookkeeping: one object, one lock, one file.

Everything a restarted trainer needs to carry on (the branch and node in
force, node numbering, restores carried out, schedule entries fired, the
control values taken, the branches, the applied and error lists) lives in
:class:`TrainerState`, changed under its lock and saved atomically in
``<experiment>/.retune-trainer-state.json``. The public
``retune-status.json`` is derived from it (:meth:`TrainerState.public`) and
never read back.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from tb_retune.experiment import atomic as _atomic

STATE_FILENAME = ".retune-trainer-state.json"
STATE_VERSION = 1
#: How many entries ``applied`` and ``errors`` keep (oldest dropped).
MAX_LIST = 50
#: The longest error message kept (a person's 200 KB key is not copied whole).
MAX_MESSAGE = 2000
#: How many recent node records are kept (a resume re-emits the one in force).
MAX_RECORDS = 16

_PERSISTED = ("branch", "node", "node_start", "epoch", "node_seq", "restores_done", "schedule_fired",
              "control_seen", "control_sha256", "control", "stop_seen", "branches", "applied", "errors",
              "hyperparameters", "lr_schedule", "node_records", "epochs_planned", "notes_recorded")


def bound_message(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    return message[: MAX_MESSAGE - 40] + f"... ({len(message)} characters in all)"


class TrainerState:
    """The trainer's bookkeeping. Change it under :attr:`lock`; :meth:`save` it."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, STATE_FILENAME)
        self._tmp_dir = os.path.join(folder, ".retune-tmp")
        self.lock = threading.RLock()
        #: Held by the training thread over a change it records in several
        #: steps (a batch boundary's work); the status thread waits for it
        #: before it saves the state and writes the status, so neither ever
        #: shows a change half-recorded (the new value without its entry).
        self.commit_lock = threading.RLock()
        self._save_lock = threading.Lock()
        self._saved = b""  # the bytes last written
        self.branch = "main"
        self.node = ""
        self.node_start = 0
        self.epoch = 0
        self.node_seq: dict[str, int] = {}
        self.restores_done: list[str] = []
        self.schedule_fired: list[str] = []
        self.control_seen: dict[str, Any] | None = None
        self.control_sha256: str | None = None
        self.control: dict[str, Any] | None = None
        self.stop_seen = False
        #: Node id -> the note record last written to the event files (``trainer/notes.py``).
        self.notes_recorded: dict[str, dict[str, Any]] = {}
        self.branches: dict[str, dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.hyperparameters: dict[str, Any] = {}
        self.lr_schedule: dict[str, Any] | None = None
        self.node_records: dict[str, dict[str, Any]] = {}
        #: Per branch: ``{"epochs", "this_fit", "left_for_a_restart"}`` (see plan_epochs).
        self.epochs_planned: dict[str, dict[str, int]] = {}

    # -- persistence -----------------------------------------------------
    @contextlib.contextmanager
    def commit_lock_released(self) -> Iterator[None]:
        """Lets go of the commit lock, at every level the calling thread holds
        it, for a long wait at a batch boundary whose work so far is recorded
        whole (a search waiting for other processes' trials): the status thread
        goes on writing meanwhile. As ``threading.Condition.wait`` does."""
        lock: Any = self.commit_lock
        if not lock._is_owned():
            yield
            return
        saved = lock._release_save()
        try:
            yield
        finally:
            lock._acquire_restore(saved)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            out = {"version": STATE_VERSION}
            for key in _PERSISTED:
                out[key] = json.loads(json.dumps(getattr(self, key), default=str))
            return out

    def to_bytes(self) -> bytes:
        """What :meth:`save` writes: :meth:`to_dict` as one line of JSON,
        encoded once, under the lock (no copy of the records to encode again)."""
        with self.lock:
            doc = {"version": STATE_VERSION, **{key: getattr(self, key) for key in _PERSISTED}}
            return _atomic.dumps(doc, indent=None, default=str)

    def save(self, *, durable: bool = True) -> None:
        """Writes the state atomically (raises OSError, e.g. on a full disk)."""
        with self._save_lock:  # the newest snapshot is the one written last
            self._write(self.to_bytes(), durable=durable)

    def save_for_status(self) -> dict[str, Any]:
        """Saves the state if it changed since it was last saved, and returns
        :meth:`public` as of that same moment: a status derived from it shows
        nothing that a restarted trainer would not find (raises OSError)."""
        with self._save_lock:
            with self.lock:
                raw, public = self.to_bytes(), self.public()
            if raw != self._saved:
                self._write(raw, durable=False)
            return public

    def _write(self, raw: bytes, *, durable: bool) -> None:
        # One line, by json's C encoder: an indented dump of the node records
        # costs milliseconds.
        _atomic.atomic_write_bytes(self.path, raw, durable=durable, tmp_dir=self._tmp_dir)
        self._saved = raw

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> bool:
        """Reads the saved state; False when there is none (or it is not ours)."""
        try:
            data = _atomic.read_json(self.path)
        except (OSError, ValueError):
            return False
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return False
        with self.lock:
            for key in _PERSISTED:
                if key in data and data[key] is not None:
                    setattr(self, key, data[key])
                elif key in data and key in ("control_seen", "control_sha256", "control", "lr_schedule"):
                    setattr(self, key, None)
            self.node_seq = {str(k): int(v) for k, v in self.node_seq.items()}
            self.node_start = int(self.node_start)
            self.epoch = int(self.epoch)
            self.stop_seen = bool(self.stop_seen)
        return True

    # -- typed operations ----------------------------------------------
    def next_node_id(self, branch: str) -> str:
        with self.lock:
            n = self.node_seq.get(branch, 0) + 1
            self.node_seq[branch] = n
            return f"{branch}-{n}"

    def node_count(self) -> int:
        with self.lock:
            return sum(self.node_seq.values())

    def enter_node(self, record: dict[str, Any]) -> None:
        """Makes ``record``'s node the one in force."""
        with self.lock:
            self.node = str(record["id"])
            self.branch = str(record["branch"])
            self.node_start = int(record["step"])
            self.node_records[self.node] = record
            while len(self.node_records) > MAX_RECORDS:
                self.node_records.pop(next(iter(self.node_records)))

    def add_applied(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.applied.append(entry)
            del self.applied[:-MAX_LIST]

    def add_error(self, message: str, step: int) -> dict[str, Any]:
        entry = {"time": time.time(), "step": step, "message": bound_message(message)}
        with self.lock:
            self.errors.append(entry)
            del self.errors[:-MAX_LIST]
        return entry

    def restore_done(self, request_id: str) -> bool:
        with self.lock:
            return request_id in self.restores_done

    def add_restore_done(self, request_id: str) -> None:
        with self.lock:
            if request_id not in self.restores_done:
                self.restores_done.append(request_id)

    # -- the public view -------------------------------------------------
    def public(self) -> dict[str, Any]:
        """The keys of ``retune-status.json`` that come from the state."""
        with self.lock:
            return {
                "branch": self.branch,
                "node": self.node,
                "node_start": self.node_start,
                "epoch": self.epoch,
                "hyperparameters": dict(self.hyperparameters),
                "learning_rate_schedule": self.lr_schedule,
                "branches": {k: dict(v) for k, v in self.branches.items()},
                "epochs_planned": {k: dict(v) for k, v in self.epochs_planned.items()},
                "applied": [dict(a) for a in self.applied],
                "errors": [dict(e) for e in self.errors],
                "control": dict(self.control) if self.control else None,
                # Kept for readers of earlier versions (the CLI's --wait).
                "restores_done": sorted(self.restores_done),
                "control_seen": self.control_seen,
                "control_sha256": self.control_sha256,
                "schedule_fired": sorted(self.schedule_fired),
                "node_seq": dict(self.node_seq),
                "notes_recorded": {k: dict(v) for k, v in self.notes_recorded.items()},
                "node_record": self.node_records.get(self.node),
            }
