"""The tree's node records and the scalars, for the branch in force.

Each branch is a TensorBoard run; :class:`NodeRecords` owns its event-file
writer, opens the nodes (ids from the trainer state), writes the scalars of
metrics and hyperparameters, and survives a writer that fails (a full disk):
the error is reported, node records not written are kept and written again
once the writer can be reopened.

A node may be opened *late* (a fresh start's root): it is in force at once,
and its record is completed (the environment, whose git commit takes two
subprocesses) and written by the writer's thread. Writes are serialised by one
lock, and opening another branch's run or closing waits for a late record.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tb_retune.trainer.state import TrainerState
from tb_retune.trainer.summaries import BranchWriter

logger = logging.getLogger("tb_retune")

#: Seconds between two attempts to reopen a failed event-file writer.
REOPEN_AFTER_S = 1.0


class NodeRecords:
    """Node records and scalars of one run of the trainer.

    Args:
        logdir: The experiment folder.
        state: The trainer state (node ids, the node in force).
        config: Returns the configuration captured with each node
            (``environment=False``: without the environment).
        on_error: Reports a problem to the person (status and log).
        environment: Returns the environment that a late record gets.
        later: Runs a job off the training thread (in order with the
            checkpoints): a late record, and the flush after a node record.
        drain: Waits until the late records handed over are written.
    """

    def __init__(self, logdir: str, state: TrainerState, config: Callable[..., dict[str, Any]],
                 on_error: Callable[[str], None], *, environment: Callable[[], dict[str, Any]] | None = None,
                 later: Callable[[Callable[[], None], str], None] | None = None,
                 drain: Callable[[], None] | None = None) -> None:
        self.logdir = logdir
        self.state = state
        self._config = config
        self._on_error = on_error
        self._environment = environment
        self._later = later
        self._drain = drain
        self._lock = threading.RLock()
        self._late = 0  # late records handed over and not written yet
        self._flush_queued = False  # a flush of the points is handed over and has not begun
        self.writer: BranchWriter | None = None
        self._branch = ""
        self._failed_at: float | None = None
        self._unwritten: list[dict[str, Any]] = []
        self._last_scalar_step = -1
        self._last_scalar_tags: set[str] = set()

    # -- the writer --------------------------------------------------------
    def open(self, branch: str, step: int, *, keep_start_step: bool = False) -> None:
        """Starts writing the run of ``branch`` from ``step``.

        ``keep_start_step``: a resume keeps the points logged at ``step`` (the
        epoch's scalars logged with the checkpoint it resumes from).
        """
        self.close()
        with self._lock:
            self._branch = branch
            self._start_step = step
            self.reset_scalars()
            self._guard("open", lambda: self._open(step, session_start=True, keep_start_step=keep_start_step))

    def _open(self, step: int, *, session_start: bool, keep_start_step: bool = False) -> None:
        # Only a run's (re)start writes TensorBoard's SessionLog.START: written
        # when a failed writer is reopened, it would drop the points since.
        self.writer = BranchWriter(os.path.join(self.logdir, self._branch), start_step=step,
                                   session_start=session_start, keep_start_step=keep_start_step)

    def close(self) -> None:
        self.wait_late()
        with self._lock:
            if self.writer is not None:
                writer, self.writer = self.writer, None
                try:
                    writer.close()
                except Exception as e:  # a failed writer fails again on close
                    logger.debug("retune: closing the event writer: %s", e)

    def wait_late(self) -> None:
        """Returns once the late records are written (they go to this branch's run)."""
        if self._late and self._drain is not None:
            self._drain()

    def _guard(self, what: str, op: Callable[[], None]) -> bool:
        """Runs a writer operation; reports a failure once and keeps training."""
        with self._lock:
            return self._guard_locked(what, op)

    def _guard_locked(self, what: str, op: Callable[[], None]) -> bool:
        if self.writer is None and what != "open":
            if self._failed_at is None or time.monotonic() - self._failed_at < REOPEN_AFTER_S:
                return False
            self._failed_at = None
            if not self._guard("open", lambda: self._open(self._start_step, session_start=False)):
                return False
            self._on_error(f"event files of branch {self._branch!r} are written again")
            pending, self._unwritten = self._unwritten, []
            for record in pending:
                self.write_record(record)
        try:
            op()
            return True
        except Exception as e:  # OSError, or TensorFlow's ResourceExhaustedError from gfile
            first = self._failed_at is None
            self._failed_at = time.monotonic()
            self.close()
            if first:
                self._on_error(f"event files of branch {self._branch!r}: {type(e).__name__}: {e}; "
                               "training goes on; points are lost until the files can be written again "
                               "(free some space if the disk is full)")
            return False

    def flush(self) -> None:
        if self.writer is not None:
            self._guard("flush", self.writer.flush)

    def _flush_soon(self) -> None:
        """Points were written: they reach the file off the training thread
        (at most one such flush waits at a time), or here without ``later``."""
        if self._later is None:
            self.flush()
        elif not self._flush_queued:
            self._flush_queued = True
            self._later(self._queued_flush, "flushing the event files")

    def _queued_flush(self) -> None:
        self._flush_queued = False  # points written from now on ask for another
        self.flush()

    # -- nodes -------------------------------------------------------------
    def open_node(self, *, reason: str, parent: str | None, change: Mapping[str, Any], hps: Mapping[str, Any],
                  step: int, request_id: str | None = None, restore: Mapping[str, Any] | None = None,
                  extra: Mapping[str, Any] | None = None, late: bool = False) -> dict[str, Any]:
        """Opens a new node of the branch in force and writes its record.

        The record is handed to the event writer at once and flushed off the
        training thread. ``late``: the node is in force now; its environment
        and the write are a job off the training thread.
        """
        late = late and self._later is not None
        branch = self._branch
        node = self.state.next_node_id(branch)
        record: dict[str, Any] = {
            "version": 1,
            "id": node,
            "branch": branch,
            "parent": parent,
            "step": step,
            "seq": self.state.node_count(),
            "time": time.time(),
            "reason": reason,
            "restore": dict(restore) if restore else None,
            "request_id": request_id,
            "hyperparameters": dict(hps),
            # A schedule is recorded as a schedule: hyperparameters.learning_rate
            # is its value at the node's first step.
            "learning_rate_schedule": self.state.lr_schedule,
            "change": dict(change),
            "config": self._config(environment=not late),
        }
        if extra:
            record.update(extra)
        self.state.enter_node(record)
        if not late:
            self.write_record(record, flush=self._later is None)
            if self._later is not None:
                self._later(self.flush, "flushing the event files")
            return record
        with self._lock:
            self._late += 1

        def complete_and_write() -> None:
            try:
                environment = self._environment() if self._environment is not None else {}
                with self.state.lock:  # the state's copy (saved, re-emitted at a resume) gets it too
                    record["config"] = {"environment": environment, **record["config"]}
                self.write_record(record)
            finally:
                with self._lock:
                    self._late -= 1

        assert self._later is not None
        self._later(complete_and_write, "the root node's record")
        return record

    def write_record(self, record: Mapping[str, Any] | None, *, flush: bool = True) -> None:
        if not record:
            return
        if not self._guard("node", lambda: self.writer.node(record, flush=flush)):  # type: ignore[union-attr]
            self._unwritten.append(dict(record))

    # -- scalars -----------------------------------------------------------
    def reset_scalars(self) -> None:
        self._last_scalar_step = -1
        self._last_scalar_tags = set()

    def hyperparameters(self, step: int, values: Mapping[str, Any]) -> None:
        if self._guard("scalars", lambda: self.writer.hyperparameters(step, values)):  # type: ignore[union-attr]
            self._flush_soon()

    def scalars(self, step: int, logs: Mapping[str, Any], hps: Callable[[], Mapping[str, Any]]) -> None:
        """Metrics (one point per tag and step) and the hyperparameters in force."""
        if step != self._last_scalar_step:
            self._last_scalar_step = step
            self._last_scalar_tags = set()
        values = {}
        for k, v in logs.items():
            if k in self._last_scalar_tags:
                continue  # one point per tag and step (batch and epoch logs meet)
            try:
                values[k] = float(v)
            except (TypeError, ValueError):
                continue
        self._last_scalar_tags.update(values)
        if self._guard("scalars", lambda: self.writer.scalars(step, values)):  # type: ignore[union-attr]
            self._flush_soon()
        if "\0hp" not in self._last_scalar_tags:
            self.hyperparameters(step, hps())
            self._last_scalar_tags.add("\0hp")
