"""The trainer-side engine, one step at a time, for ``fit`` and custom loops.

Data flows one way: the control file -> the watcher thread (reads, parses,
validates) -> an immutable :class:`~tb_retune.experiment.control.ControlRevision` and a
version number -> the training thread, which compares the version at each
batch boundary (O(1)) and applies the revision there -> the status file, the
checkpoints and the tree's node records. The watcher never touches the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tb_retune._errors import CheckpointError, ControlError
from tb_retune.experiment import atomic as _atomic
from tb_retune.experiment.control import (
    CHECKPOINTS_DIRNAME,
    CONTROL_FILENAME,
    STATUS_FILENAME,
    ControlRevision,
    RestoreRequest,
    ScheduleEntry,
    describe_change,
    parse_control,
    parse_restore,
    validate_hyperparameters,
)
from tb_retune.trainer import backend as _backend
from tb_retune.trainer.checkpoints import BackgroundWriter, CheckpointInfo, CheckpointStore
from tb_retune.trainer.hyperparameters import OptimizerHandle
from tb_retune.trainer.status import MAX_LIST, StatusFile
from tb_retune.trainer.summaries import BranchWriter
from tb_retune.trainer.watcher import ControlWatcher

logger = logging.getLogger("tb_retune")

LOCK_FILENAME = ".retune-trainer.lock"
_MISSING = object()
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_branch_name(name: str) -> str:
    """A readable, filesystem-safe branch name."""
    cleaned = _SAFE.sub("-", name).strip("-.")
    return cleaned[:60] or "branch"


class RetuneController:
    """Live hyperparameter control, checkpoints and branches for one run.

    ``RetuneCallback`` drives it from ``model.fit``. In a custom training
    loop, drive it yourself:

    Example:

    ```python
    controller = tb_retune.RetuneController("runs/exp")
    controller.begin(model, optimizer)
    train_step = controller.function(my_train_step)  # retraced on changes
    for epoch in range(epochs):
        for x, y in dataset:
            controller.before_step()
            if controller.stop_requested:
                break
            logs = train_step(x, y)
            controller.after_step(logs)
        controller.end_epoch(epoch, {"loss": float(loss)})
    controller.end()
    ```

    Args:
        logdir: String. The experiment folder (e.g. ``runs/exp``); created if
            needed. Each branch is a TensorBoard run below it.
        checkpoint_every_epochs: Int or None. Checkpoint at the end of every
            N epochs. Defaults to 1.
        checkpoint_every_steps: Int or None. Also checkpoint every N steps.
            Defaults to None.
        keep_checkpoints: Int or None. How many periodic checkpoints to keep
            per branch besides the kept ones (node boundaries, branch starts,
            final). None keeps all. Defaults to 5.
        update_freq: ``"epoch"`` or int. Write scalars at each epoch end, or
            also every N steps. Defaults to ``"epoch"``.
        polling: Bool. Watch the control file by polling, for filesystems
            without inotify. Defaults to False.
        resume: Bool. Resume an existing experiment from its latest
            checkpoint. Defaults to True.
        heartbeat_s: Float. Seconds between status heartbeats. Defaults to 2.
        background_checkpoints: Bool. Write checkpoints on a thread of their
            own (the training loop only copies the values). Defaults to True.
        verbose: Bool. Print each applied change. Defaults to True.
    """

    def __init__(
        self,
        logdir: str,
        *,
        checkpoint_every_epochs: int | None = 1,
        checkpoint_every_steps: int | None = None,
        keep_checkpoints: int | None = 5,
        update_freq: str | int = "epoch",
        polling: bool = False,
        resume: bool = True,
        heartbeat_s: float = 2.0,
        debounce_s: float = 0.02,
        background_checkpoints: bool = True,
        verbose: bool = True,
    ) -> None:
        if not isinstance(logdir, (str, os.PathLike)) or not str(logdir):
            raise ValueError(f"`logdir` must be a folder path. Received: logdir={logdir!r}")
        for name, value in (("checkpoint_every_epochs", checkpoint_every_epochs),
                            ("checkpoint_every_steps", checkpoint_every_steps),
                            ("keep_checkpoints", keep_checkpoints)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer or None. Received: {name}={value!r}")
        if update_freq != "epoch" and (isinstance(update_freq, bool) or not isinstance(update_freq, int)
                                       or update_freq < 1):
            raise ValueError(f"`update_freq` must be 'epoch' or a positive integer. Received: update_freq={update_freq!r}")
        if heartbeat_s <= 0:
            raise ValueError(f"`heartbeat_s` must be > 0. Received: heartbeat_s={heartbeat_s!r}")
        self.logdir = os.path.abspath(os.fspath(logdir))
        self.checkpoint_every_epochs = checkpoint_every_epochs
        self.checkpoint_every_steps = checkpoint_every_steps
        self.keep_checkpoints = keep_checkpoints
        self.update_freq = update_freq
        self.polling = polling
        self.resume = resume
        self.heartbeat_s = heartbeat_s
        self.debounce_s = debounce_s
        self.verbose = verbose

        self.model: Any = None
        self.optimizer: Any = None
        self.handle: OptimizerHandle | None = None
        self.store: CheckpointStore | None = None
        self.status: StatusFile | None = None
        self.writer: BranchWriter | None = None
        self.watcher: ControlWatcher | None = None
        self._ckpt_writer: BackgroundWriter | None = None
        self.background_checkpoints = background_checkpoints
        self._lock: _atomic.TrainerLock | None = None

        # Shared with the watcher thread: plain references swapped atomically.
        self._pending: tuple[ControlRevision, str] | None = None
        self._version = 0
        self._applied_version = 0
        self._known: tuple[dict[str, Any], dict[str, list[int]]] = ({}, {})
        self._restores_done: set[str] = set()

        self.branch = "main"
        self.node = ""
        self.node_start = 0
        self._node_seq: dict[str, int] = {}
        self._control_seen: dict[str, Any] | None = None
        self._schedule: tuple[ScheduleEntry, ...] = ()
        self._fired: set[str] = set()
        self._next_schedule_step: int | None = None
        self.stop_requested = False
        self.trace_version = 0
        self.state_version = 0  # changes when a due step may have assigned variables
        self._state_sync: Callable[[], None] | None = None
        self._step_known = 0
        self._calls = 0
        self.steps_per_call = 1
        self.epoch = 0
        self._last_scalar_step = -1
        self._last_scalar_tags: set[str] = set()
        self._config_static: dict[str, Any] = {}
        self._params: dict[str, Any] = {}
        self._begun = False
        self._end_lock = threading.Lock()
        self._abandoned = False
        self._watched: tuple[int, Any] | None = None
        self._initial_epoch = 0

    # ------------------------------------------------------------------ paths
    @property
    def control_path(self) -> str:
        return os.path.join(self.logdir, CONTROL_FILENAME)

    @property
    def status_path(self) -> str:
        return os.path.join(self.logdir, STATUS_FILENAME)

    # ------------------------------------------------------------ lifecycle
    def begin(self, model: Any, optimizer: Any = None, params: Mapping[str, Any] | None = None, *,
              state_sync: Callable[[], None] | None = None) -> bool:
        """Starts (or resumes) the experiment. Returns True if the caller
        must retrace its train function (hyperparameters were set).

        ``state_sync``: where the training state lives outside the Keras
        variables (JAX), a function that assigns it to them; called only on
        steps where something is due, before any variable is read. After
        such a step ``state_version`` changes: read the state back from the
        variables (see demo/custom_loop_jax.py)."""
        if self._begun:
            raise RuntimeError("RetuneController.begin() called twice without end()")
        optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
        if optimizer is None:
            raise ValueError("RetuneController needs an optimizer: compile the model first or pass optimizer=")
        self.model = model
        self.optimizer = optimizer
        self._state_sync = None  # the variables hold the state until begin() returns
        self.handle = OptimizerHandle(optimizer)
        self._params = dict(params or {})
        self.steps_per_call = int(getattr(model, "steps_per_execution", 1) or 1)
        os.makedirs(self.logdir, exist_ok=True)
        self._lock = _atomic.TrainerLock(os.path.join(self.logdir, LOCK_FILENAME))
        self._lock.acquire()
        try:
            retrace = self._start()
        except BaseException:
            self._close_resources()
            raise
        self._begun = True
        self._state_sync = state_sync
        return retrace

    def _ensure_built(self) -> None:
        opt = self.optimizer
        if not getattr(opt, "built", False):
            opt.build(self.model.trainable_variables)

    def _start(self) -> bool:
        assert self.handle is not None
        self._ensure_built()
        from tb_retune.trainer import recorder as _recorder

        try:
            self._config_static = {"environment": _recorder.environment()}
        except Exception as e:  # never fail a run for the recorder
            self._config_static = {"environment": {"error": str(e)}}
        self.store = CheckpointStore(os.path.join(self.logdir, CHECKPOINTS_DIRNAME), self.keep_checkpoints)
        if self.background_checkpoints:
            self._ckpt_writer = BackgroundWriter(self.store, self._on_checkpoint_written, self._report_error)
        previous = None
        try:
            previous = _atomic.read_json(self.status_path)
        except (OSError, ValueError):
            previous = None
        retrace = False
        resumed = False
        if self.resume and isinstance(previous, dict) and self.store.steps():
            retrace, resumed = self._resume(previous)
        if not resumed:
            self._fresh_start(previous if isinstance(previous, dict) else None)
        self._publish_known()
        self.status.start()  # type: ignore[union-attr]
        self.watcher = ControlWatcher(
            self.control_path, self._on_revision, debounce_s=self.debounce_s, polling=self.polling
        )
        # What the file holds at the start is in force from the first step:
        # read it here, once, then let the watcher report later saves.
        self.watcher.start(initial=False)
        initial = self.watcher.read_now()
        if initial is not None:
            self._on_revision(initial)
            retrace |= self._due_now()
        self.status.write_now(durable=False)  # type: ignore[union-attr]
        return retrace

    def _due_now(self) -> bool:
        retrace = self._due()
        self._calls = 0  # no batch is about to run yet
        return retrace

    def _new_status(self) -> StatusFile:
        data: dict[str, Any] = {
            "version": 1,
            "pid": os.getpid(),
            "heartbeat": time.time(),
            "state": "training",
            "experiment": self.logdir,
            "branch": self.branch,
            "node": self.node,
            "step": 0,
            "epoch": 0,
            "hyperparameters": {},
            "checkpoints": {},
            "checkpoint_nodes": {},
            "branches": {},
            "applied": [],
            "errors": [],
            "restores_done": [],
            "control_seen": None,
            "control_sha256": None,
            "schedule_fired": [],
            "node_seq": {},
            "watcher": None,
        }
        return StatusFile(self.status_path, data, heartbeat_s=self.heartbeat_s, refresh=self._refresh_status,
                          tick=self._check_abandoned)

    def watch_frame(self, thread_ident: int, frame: Any) -> None:
        """Ends the run as failed if ``frame`` (``fit``'s) leaves its thread's
        stack without ``end()`` being called: Keras calls no callback when
        ``fit`` raises from another callback or from validation."""
        self._watched = (thread_ident, frame)

    def _fit_gone(self) -> bool:
        watched = getattr(self, "_watched", None)
        if watched is None:
            return False
        ident, target = watched
        frame = sys._current_frames().get(ident)
        while frame is not None:
            if frame is target:
                return False
            frame = frame.f_back
        return True

    def _check_abandoned(self) -> None:
        """Runs on the heartbeat thread."""
        if self._begun and not self._abandoned and self._fit_gone():
            self._abandoned = True
            threading.Thread(target=self.end, args=("failed",), name="tb-retune-cleanup", daemon=True).start()

    def _refresh_status(self, data: dict[str, Any]) -> None:
        # Runs under the status lock, on any thread: plain reads only.
        data["step"] = self.current_step()
        data["epoch"] = self.epoch
        data["branch"] = self.branch
        data["node"] = self.node
        data["watcher"] = self.watcher.kind if self.watcher else None

    def _fresh_start(self, previous: dict[str, Any] | None) -> None:
        assert self.handle is not None and self.store is not None
        self.status = self._new_status()
        if previous:
            # Keep what a person may want from an earlier run without checkpoints.
            self.status.data["errors"] = list(previous.get("errors", []))[-MAX_LIST:]
        self.branch = "main"
        step = self.sync_step()
        self.status.data["branches"] = {"main": {"parent_node": None, "start_step": step}}
        self._open_writer(step)
        hps = self.handle.get()
        self.node = self._next_node_id("main")
        self.node_start = step
        self._write_node(reason="root", parent=None, change={}, hps=hps, step=step)
        self.writer.hyperparameters(step, hps)  # type: ignore[union-attr]
        self._checkpoint("branch", step)
        self.status.update(hyperparameters=hps)
        self._sync_status_lists()
        self.status.write_now(durable=False)

    def _resume(self, previous: dict[str, Any]) -> tuple[bool, bool]:
        """Resumes the active branch from its latest checkpoint."""
        assert self.handle is not None and self.store is not None
        branch = str(previous.get("branch") or "main")
        info = self.store.latest(branch)
        if info is None:
            return False, False
        self.status = self._new_status()
        data = self.status.data
        for key in ("applied", "errors", "restores_done", "schedule_fired", "node_seq", "branches", "stop_seen",
                    "control_seen", "control_sha256"):
            if key in previous:
                data[key] = previous[key]
        self._restores_done = set(previous.get("restores_done", []))
        self._fired = set(previous.get("schedule_fired", []))
        self._node_seq = {str(k): int(v) for k, v in (previous.get("node_seq") or {}).items()}
        self._control_seen = previous.get("control_seen")
        meta = self.store.load(self.model, self.optimizer, info)
        self.branch = branch
        self.epoch = int(meta.get("epoch", 0))
        self._initial_epoch = self.epoch
        # The node in force: the status's when it started at or before the
        # checkpoint (it always does: a change checkpoints first), else the
        # checkpoint's own.
        node = str(previous.get("node") or info.node)
        node_start = int(previous.get("node_start", info.step))
        hps = previous.get("hyperparameters") or meta.get("hyperparameters") or {}
        if node_start > info.step or not node.startswith(branch):
            node, node_start, hps = info.node, info.step, meta.get("hyperparameters") or {}
        self.node = node
        self.node_start = node_start
        settable = validate_hyperparameters("resume", {k: v for k, v in hps.items()
                                                        if k in self.handle.get()}, self.handle.get())
        _, retrace = self.handle.set(settable)
        step = self.sync_step()
        from tb_retune.trainer.summaries import truncate_run

        dropped = truncate_run(os.path.join(self.logdir, branch), step)
        self._open_writer(step)
        # Re-emit the node in force: TensorBoard drops points at or after the
        # resume step, and with them the node if it started exactly there.
        self._write_node_record(previous.get("node_record"))
        self.writer.hyperparameters(step, self.handle.get())  # type: ignore[union-attr]
        self.status.update(hyperparameters=self.handle.get(), node_start=node_start,
                           node_record=previous.get("node_record"))
        self._sync_status_lists()
        self.status.write_now(durable=False)
        self._log(f"retune: resumed branch {branch} at step {step} (node {node}) from "
                  f"{os.path.basename(info.path)}" + (f"; dropped {dropped} logged points after it" if dropped else ""))
        return True, True

    def end(self, state: str = "finished") -> None:
        """Takes a final checkpoint, stops the threads and closes the files."""
        with self._end_lock:
            if not self._begun:
                return
            self._begun = False
            self._watched = None
        try:
            if self.watcher is not None:
                self.watcher.stop()
            if state in ("finished", "stopped"):
                self._sync_state()
                step = self.sync_step()
                if self.store is not None and not self._has_checkpoint(self.branch, step):
                    self._checkpoint("final", step)
                elif self.store is not None:
                    self._sync_status_lists()
            if self.status is not None:
                self.status.update(state=state)
        finally:
            self._close_resources()

    def _close_resources(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self._ckpt_writer is not None:
            self._ckpt_writer.flush()
            self._ckpt_writer.stop()
            self._ckpt_writer = None
            self._sync_status_lists()
        if self.status is not None:
            self.status.stop()
            try:
                self.status.write_now()
            except OSError as e:
                logger.warning("retune: cannot write %s: %s", self.status_path, e)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------ the step
    def current_step(self) -> int:
        return self._step_known + self._calls * self.steps_per_call

    def sync_step(self) -> int:
        """Reads ``optimizer.iterations`` (a variable read: not per batch)."""
        self._step_known = _backend.to_int(self.optimizer.iterations, "optimizer.iterations")
        self._calls = 0
        return self._step_known

    def _sync_state(self) -> None:
        """Brings the training state into the variables where it lives elsewhere (JAX)."""
        if self._state_sync is not None:
            self._state_sync()

    def before_step(self) -> bool:
        """Call before each train step. O(1) unless something is due.

        Returns True when the train function must be traced again.
        """
        step = self.current_step()
        self._calls += 1
        if self._version == self._applied_version and (
            self._next_schedule_step is None or step < self._next_schedule_step
        ) and (self.checkpoint_every_steps is None or step == 0 or step % self.checkpoint_every_steps):
            return False
        return self._due()

    def _due(self) -> bool:
        """Applies what is due, at the step read from the optimizer; the batch
        about to run is counted (``_calls = 1``) once the step is re-read."""
        self._sync_state()
        self.state_version += 1
        step = self.sync_step()
        self._calls = 1
        retrace = False
        if self._version != self._applied_version:
            self._applied_version = self._version
            if self._pending is not None:
                revision, sha = self._pending
                retrace |= self._apply_revision(revision, sha)
                step = self._step_known
                self._calls = 1  # a restore re-read the step; count the batch about to run
        if self._next_schedule_step is not None and step >= self._next_schedule_step:
            retrace |= self._fire_schedule(step)
        if (self.checkpoint_every_steps and step and step % self.checkpoint_every_steps == 0
                and self.store is not None and not self._has_checkpoint(self.branch, step)):
            self._checkpoint("steps", step)
        if retrace:
            self.trace_version += 1
        return retrace

    def after_step(self, logs: Mapping[str, Any] | None = None) -> None:
        """Call after each train step of a custom loop (logs every update_freq)."""
        if isinstance(self.update_freq, int) and logs:
            step = self.current_step()
            if step % self.update_freq == 0:
                self._sync_state()
                self.log_scalars(step, logs)

    def log_scalars(self, step: int, logs: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
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
        self.writer.scalars(step, values)
        if self.handle is not None and "\0hp" not in self._last_scalar_tags:
            self.writer.hyperparameters(step, self.handle.get())
            self._last_scalar_tags.add("\0hp")

    def end_epoch(self, epoch: int, logs: Mapping[str, Any] | None = None, *, complete: bool = True) -> None:
        """Call at the end of each epoch: scalars, and the epoch checkpoint.

        ``complete=False`` (an epoch cut short by a stop) logs the scalars
        but does not count the epoch, so a resumed run trains it again.
        """
        self._sync_state()
        step = self.sync_step()
        if logs:
            self.log_scalars(step, logs)
        if not complete:
            self.epoch = epoch
            return
        self.epoch = epoch + 1
        if (self.checkpoint_every_epochs and self.epoch % self.checkpoint_every_epochs == 0
                and self.store is not None and not self._has_checkpoint(self.branch, step)):
            self._checkpoint("epoch", step)
        if self.status is not None:
            self.status.poke()

    def function(self, fn: Callable[..., Any], **tf_function_kwargs: Any) -> Callable[..., Any]:
        """Wraps ``fn`` in a ``tf.function`` that is traced again whenever a
        hyperparameter that is baked into the trace changes (custom loops).

        TensorFlow only: on JAX and PyTorch it raises a BackendError that says
        what to do instead (``trace_version``, see demo/)."""
        state: dict[str, Any] = {"version": self.trace_version,
                                 "compiled": _backend.tf_function(fn, **tf_function_kwargs)}

        def call(*args: Any, **kwargs: Any) -> Any:
            if state["version"] != self.trace_version:
                state["compiled"] = _backend.tf_function(fn, **tf_function_kwargs)
                state["version"] = self.trace_version
            return state["compiled"](*args, **kwargs)

        return call

    # --------------------------------------------------- watcher thread side
    def _publish_known(self) -> None:
        assert self.handle is not None and self.store is not None
        self._known = (self.handle.get(), self.store.steps())

    def _on_revision(self, data: bytes | None) -> None:
        """Runs on the watcher thread: parse and validate, never apply."""
        if data is None:
            return
        sha = hashlib.sha256(data).hexdigest()
        known, checkpoints = self._known
        try:
            revision = parse_control(data, known, None)
            restore = revision.restore
            if restore is not None and restore.id not in self._restores_done:
                parse_restore(revision.raw["restore"], known, checkpoints)  # its checkpoint must exist
        except ControlError as e:
            self._report_error(str(e))
            if self.status is not None:
                self.status.update(control_sha256=sha)
                self.status.poke()
            return
        self._pending = (revision, sha)
        self._version += 1

    def _report_error(self, message: str) -> None:
        if self.verbose:
            print(f"retune: error: {message} (nothing was changed)", flush=True)
        else:
            logger.warning("retune: %s (nothing was changed)", message)
        if self.status is not None:
            self.status.append("errors", {"time": time.time(), "step": self.current_step(), "message": message})
            self.status.poke()

    # ------------------------------------------------- training thread side
    def _apply_revision(self, revision: ControlRevision, sha: str) -> bool:
        assert self.handle is not None and self.store is not None and self.status is not None
        retrace = False
        try:
            known = self.handle.get()
            # Hyperparameters: only the keys whose value changed in the file.
            seen = self._control_seen
            wanted = {k: v for k, v in revision.hyperparameters.items()
                      if known.get(k) != v and (seen is None or seen.get(k, _MISSING) != v)}
            # Checked before anything is applied: a revision is whole or nothing.
            validate_hyperparameters("hyperparameters", wanted, known)
            restore = revision.restore
            if restore is not None and restore.id in self._restores_done:
                restore = None
            new_schedule = revision.schedule != self._schedule
            self._schedule = revision.schedule
            if restore is not None:
                retrace |= self._apply_restore(restore)
            retrace |= self._apply_change(wanted, reason="control", where="hyperparameters")
            self._control_seen = dict(revision.hyperparameters)
            if new_schedule:
                self._plan_schedule()
            # Like hyperparameters, stop is obeyed when it changes to true, so
            # a "stop": true left in the file does not stop every later run.
            stop_was = self.status.data.get("stop_seen", False)
            self.status.update(stop_seen=revision.stop)
            if revision.stop and not stop_was and not self.stop_requested:
                self.stop_requested = True
                self._log(f"retune: step {self._step_known} stop requested; finishing after this batch")
            self.status.update(control_seen=self._control_seen, control_sha256=sha)
            if restore is not None:
                self.status.write_now()  # durable: a restore id is done exactly once
            else:
                self.status.poke()
        except (ControlError, CheckpointError) as e:
            self._report_error(str(e))
        return retrace

    def _plan_schedule(self) -> None:
        pending = [e.at_step for e in self._schedule if f"{self.branch}|{e.key()}" not in self._fired]
        self._next_schedule_step = min(pending) if pending else None

    def _fire_schedule(self, step: int) -> bool:
        retrace = False
        for entry in self._schedule:
            key = f"{self.branch}|{entry.key()}"
            if entry.at_step > step or key in self._fired:
                continue
            self._fired.add(key)
            try:
                retrace |= self._apply_change(entry.hyperparameters, reason="schedule",
                                              where=f"schedule(at_step={entry.at_step})")
            except ControlError as e:
                self._report_error(str(e))
        if self.status is not None:
            self.status.update(schedule_fired=sorted(self._fired))
            self.status.poke()
        self._plan_schedule()
        return retrace

    def _apply_change(self, values: Mapping[str, Any], *, reason: str, where: str) -> bool:
        """Closes the current node, applies the values not yet in force, opens
        a child node. Nothing happens when all are in force already."""
        assert self.handle is not None and self.status is not None
        before = self.handle.get()
        wanted = {k: v for k, v in values.items() if before.get(k) != v}
        if not wanted:
            return False
        validate_hyperparameters(where, wanted, before)
        step = self._step_known
        self._keep_state_before_change(step)
        try:
            old, retrace = self.handle.set(wanted)
        except Exception as e:
            self.handle.set({k: before[k] for k in wanted if k in before})
            raise ControlError(f"hyperparameters: {type(e).__name__}: {e}; nothing was changed") from None
        after = self.handle.get()
        what = describe_change(old, {k: after[k] for k in wanted})
        parent = self.node
        self.node = self._next_node_id(self.branch)
        self.node_start = step
        change = {k: [old.get(k), after[k]] for k in wanted if old.get(k) != after[k]}
        self.writer.hyperparameters(step, after)  # type: ignore[union-attr]
        self._write_node(reason=reason, parent=parent, change=change, hps=after, step=step)
        self.status.update(hyperparameters=after, node_start=step)
        self.status.append("applied", {"time": time.time(), "step": step, "id": None,
                                       "kind": reason, "node": self.node, "what": what})
        self._log(f"retune: step {step} {what}")
        self._publish_known()
        return retrace

    def _keep_state_before_change(self, step: int) -> None:
        """Keeps the state at ``step``, just before a change or a restore,
        restorable: a boundary checkpoint, or the one already there promoted
        out of the retention policy's reach."""
        assert self.store is not None
        if not self._has_checkpoint(self.branch, step):
            self._checkpoint("boundary", step)
        elif self._ckpt_writer is not None:
            self._ckpt_writer.promote(self.branch, step, "boundary")  # after a pending write
        else:
            self.store.promote(self.branch, step, "boundary")
            self._sync_status_lists()

    def _apply_restore(self, request: RestoreRequest) -> bool:
        assert self.store is not None and self.handle is not None and self.status is not None
        info = self.store.get(request.branch, request.step)
        if info is None:
            raise ControlError(
                f"restore.step: branch {request.branch!r} has no checkpoint at step {request.step}; "
                f"restorable steps: {', '.join(map(str, self.store.steps().get(request.branch, []))) or 'none'}"
            )
        step = self._step_known  # where the current branch is left
        self._keep_state_before_change(step)
        meta = self.store.load(self.model, self.optimizer, info)
        saved_hps = {k: v for k, v in (meta.get("hyperparameters") or {}).items() if k in self.handle.get()}
        retrace = False
        _, r = self.handle.set(validate_hyperparameters("restore", saved_hps, self.handle.get()))
        retrace |= r
        extra = dict(request.hyperparameters)
        if extra:
            validate_hyperparameters("restore.hyperparameters", extra, self.handle.get())
            _, r = self.handle.set(extra)
            retrace |= r
        try:
            self.model.reset_metrics()
        except Exception:
            pass
        new_branch = self._new_branch_name(info.branch, info.step)
        old_branch = self.branch
        self.branch = new_branch
        self.epoch = int(meta.get("epoch", self.epoch))
        new_step = self.sync_step()
        if self.writer is not None:
            self.writer.close()
        self._open_writer(new_step)
        hps = self.handle.get()
        self.node = self._next_node_id(new_branch)
        self.node_start = new_step
        parent_hps = meta.get("hyperparameters") or {}
        change = {k: [parent_hps.get(k), v] for k, v in hps.items() if parent_hps.get(k) != v}
        self._write_node(
            reason="restore", parent=info.node, change=change, hps=hps, step=new_step,
            request_id=request.id, restore={"branch": info.branch, "step": info.step, "node": info.node},
        )
        self.writer.hyperparameters(new_step, hps)  # type: ignore[union-attr]
        self.store.fork(info, branch=new_branch, node=self.node)
        self._restores_done.add(request.id)
        branches = dict(self.status.data.get("branches") or {})
        branches[new_branch] = {"parent_node": info.node, "start_step": new_step,
                                "from": {"branch": info.branch, "step": info.step}, "request_id": request.id}
        what = f"restored {info.branch}@{info.step} as branch {new_branch}"
        if extra:
            what += ", " + describe_change(parent_hps, {k: hps[k] for k in extra})
        self.status.update(hyperparameters=hps, node_start=new_step, branches=branches,
                           restores_done=sorted(self._restores_done))
        self.status.append("applied", {"time": time.time(), "step": new_step, "id": request.id,
                                       "kind": "restore", "node": self.node, "branch": new_branch,
                                       "from_branch": old_branch, "what": what})
        self._sync_status_lists()
        # The branch starts from the state at the restored step: schedule
        # entries at or before it belong to the past it inherits (firing
        # them now would undo the restore's own hyperparameters).
        for entry in self._schedule:
            if entry.at_step <= info.step:
                self._fired.add(f"{new_branch}|{entry.key()}")
        self.status.update(schedule_fired=sorted(self._fired))
        self.status.write_now()
        self._plan_schedule()
        self._log(f"retune: step {step} {what}")
        self._publish_known()
        return retrace

    def _new_branch_name(self, source: str, step: int) -> str:
        base = source if len(source) <= 40 else "b"
        name = safe_branch_name(f"{base}-s{step}")
        existing = set(self.store.steps()) if self.store else set()
        existing |= set((self.status.data.get("branches") or {}) if self.status else {})
        existing |= {d for d in os.listdir(self.logdir) if os.path.isdir(os.path.join(self.logdir, d))}
        candidate, n = name, 2
        while candidate in existing or candidate == CHECKPOINTS_DIRNAME:
            candidate = f"{name}-{n}"
            n += 1
        return candidate

    # ------------------------------------------------------------ records
    def _next_node_id(self, branch: str) -> str:
        n = self._node_seq.get(branch, 0) + 1
        self._node_seq[branch] = n
        if self.status is not None:
            self.status.update(node_seq=dict(self._node_seq))
        return f"{branch}-{n}"

    def _capture_config(self) -> dict[str, Any]:
        from tb_retune.trainer import recorder as _recorder

        assert self.handle is not None
        config = dict(self._config_static)
        try:
            config["optimizer"] = self.handle.full_config()
            config["model"] = _recorder.model_summary(self.model)
            config["training"] = _recorder.training_config(self.model, self._params)
        except Exception as e:
            config["error"] = f"{type(e).__name__}: {e}"
        return config

    def _write_node(self, *, reason: str, parent: str | None, change: Mapping[str, Any],
                    hps: Mapping[str, Any], step: int, request_id: str | None = None,
                    restore: Mapping[str, Any] | None = None) -> None:
        seq = sum(self._node_seq.values())
        record = {
            "version": 1,
            "id": self.node,
            "branch": self.branch,
            "parent": parent,
            "step": step,
            "seq": seq,
            "time": time.time(),
            "reason": reason,
            "restore": dict(restore) if restore else None,
            "request_id": request_id,
            "hyperparameters": dict(hps),
            "change": dict(change),
            "config": self._capture_config(),
        }
        self._write_node_record(record)
        if self.status is not None:
            self.status.update(node_record=record, node=self.node, branch=self.branch)

    def _write_node_record(self, record: Mapping[str, Any] | None) -> None:
        if record and self.writer is not None:
            self.writer.node(record)

    def _open_writer(self, step: int) -> None:
        self.writer = BranchWriter(os.path.join(self.logdir, self.branch), start_step=step)

    def _has_checkpoint(self, branch: str, step: int) -> bool:
        assert self.store is not None
        if self.store.get(branch, step) is not None:
            return True
        return self._ckpt_writer is not None and self._ckpt_writer.pending(branch, step)

    def _checkpoint(self, kind: str, step: int) -> None:
        """Copies the state now; the background writer makes it durable."""
        assert self.store is not None and self.handle is not None
        if self.writer is not None:
            # Points logged before a checkpoint must survive a crash after it:
            # a resume from here will not log them again.
            self.writer.flush()
        snap = self.store.snapshot(
            self.model, self.optimizer, branch=self.branch, step=step, node=self.node, kind=kind,
            meta={"epoch": self.epoch, "hyperparameters": self.handle.get(), "time": time.time()},
        )
        if self._ckpt_writer is not None:
            self._ckpt_writer.submit(snap)
            return
        try:
            info = self.store.write(snap)
        except OSError as e:
            self._report_error(f"checkpoint at step {step} failed: {e}")
            return
        self._on_checkpoint_written(info)

    def _on_checkpoint_written(self, info: CheckpointInfo) -> None:
        """Runs on the checkpoint writer's thread once a checkpoint is durable."""
        assert self.store is not None
        self._sync_status_lists()
        self._known = (self._known[0], self.store.steps())
        if self.status is not None:
            self.status.poke()

    def _sync_status_lists(self) -> None:
        if self.status is None or self.store is None:
            return
        self.status.update(checkpoints=self.store.steps(), checkpoint_nodes=self.store.node_index())

    def _log(self, line: str) -> None:
        if self.verbose:
            print(line, flush=True)
        else:
            logger.info(line)

    @property
    def initial_epoch(self) -> int:
        """The epoch a resumed run starts at (for ``fit``'s epoch counter)."""
        return self._initial_epoch


#: The names of our threads (tests look for leaked ones).
THREAD_NAMES = ("tb-retune-control", "tb-retune-status", "tb-retune-checkpoints")
