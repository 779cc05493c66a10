"""The trainer-side engine, one step at a time, for ``fit`` and custom loops.

Data flows one way: the control file -> the watcher thread (reads, parses,
validates) -> an immutable revision posted to a mailbox with a sequence
number -> the training thread, which compares the number at each batch
boundary (O(1)) and takes the revision there (plan, validate, commit) ->
the trainer state, the status file, the checkpoints and the tree's node
records. The watcher never touches the model.

:class:`RetuneController` is a facade over the concept modules:
``options`` (arguments), ``session`` (what one run works with), ``starting``
and ``ending`` (the two ends of a run), ``startup`` (fresh start and
resume), ``boundary_turns`` (the batch boundary and its counters), ``due``
(when a boundary can next have work), ``mailbox`` (the thread hand-over),
``revisions`` (plan, validate, commit), ``changes`` (changes and restores),
``schedule``, ``records`` (nodes and scalars), ``checkpointing`` (the
checkpoint policy) over ``checkpoint_writer``, ``liveness`` (fit watch and
crash detection), ``steps`` and ``state``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from tb_retune.experiment import atomic as _atomic
from tb_retune.experiment.control import (
    CONTROL_FILENAME,
    STATUS_FILENAME,
)
from tb_retune.experiment.worker import WorkerSpec
from tb_retune.trainer import (
    ending,
    epochs,
    external,
    revisions,
    search_host,
    starting,
    worker,
)
from tb_retune.trainer.backend import retrace_on_change
from tb_retune.trainer.boundary_turns import BoundaryTurns
from tb_retune.trainer.distributed import Cluster
from tb_retune.trainer.liveness import RunLiveness
from tb_retune.trainer.mailbox import RevisionMailbox
from tb_retune.trainer.options import ControllerOptions
from tb_retune.trainer.revisions import Incoming
from tb_retune.trainer.search._heartbeat_defaults import DEFAULT_HEARTBEAT
from tb_retune.trainer.session import Session
from tb_retune.trainer.watcher import ControlWatcher

logger = logging.getLogger("tb_retune")

LOCK_FILENAME = ".retune-trainer.lock"

__all__ = ["LOCK_FILENAME", "THREAD_NAMES", "RetuneController"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _steadily(method: _F) -> _F:
    """Runs ``method`` in :meth:`RetuneController.steady`: the optimizer is read once in it."""

    @functools.wraps(method)
    def run(self: RetuneController, *args: Any, **kwargs: Any) -> Any:
        with self.steady():
            return method(self, *args, **kwargs)

    return cast(_F, run)


class RetuneController:
    """Live hyperparameter control, checkpoints and branches for one run.

    ``RetuneCallback`` drives it from ``model.fit``. In a custom training
    loop, drive it yourself:

    Example:

    ```python
    controller = tb_retune.RetuneController("runs/exp")
    controller.begin(model, optimizer)
    train_step = controller.function(my_train_step)  # retraced on changes
    for epoch in range(controller.initial_epoch, epochs):
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
            checkpoint. With False, a folder that already holds an experiment
            is refused (``ExperimentExistsError``). Defaults to True.
        heartbeat_s: Float. Seconds between status heartbeats. Defaults to 2.
        background_checkpoints: Bool. Write checkpoints on a thread of their
            own (the training loop only copies the values). Defaults to True.
        verbose: Bool. Print each applied change. Defaults to True.
        agree_every_steps: Int. With several JAX processes, how often they
            agree on the control file (one small broadcast): every N steps,
            so a change waits up to N steps. Defaults to 1.
        search_storage: String or None. Where the searches' Optuna studies
            live: any Optuna storage URL (``postgresql://user@host/db``), for
            workers on machines whose shared filesystem has no reliable file
            locks; the workers get the same URL (``tb-retune worker
            --storage``). None: the journal file
            ``<logdir>/searches/journal.log``. Defaults to None.
        search_heartbeat: ``(heartbeat_interval, grace_period)``: every
            process running a trial of a search records Optuna's heartbeat
            every ``heartbeat_interval`` seconds; a trial whose heartbeat is
            ``grace_period`` seconds late is failed and run again by another
            process. Recorded in the study, so workers use the same.
            Defaults to (5, 30).
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
        agree_every_steps: int = 1,
        search_storage: str | None = None,
        search_heartbeat: tuple[int, int] = DEFAULT_HEARTBEAT,
    ) -> None:
        if isinstance(agree_every_steps, bool) or not isinstance(agree_every_steps, int) or agree_every_steps < 1:
            raise ValueError("`agree_every_steps` must be a positive integer. "
                             f"Received: agree_every_steps={agree_every_steps!r}")
        self.agree_every_steps = agree_every_steps
        self.options = ControllerOptions(
            logdir, checkpoint_every_epochs=checkpoint_every_epochs,
            checkpoint_every_steps=checkpoint_every_steps, keep_checkpoints=keep_checkpoints,
            update_freq=update_freq, polling=polling, resume=resume, heartbeat_s=heartbeat_s,
            debounce_s=debounce_s, background_checkpoints=background_checkpoints, verbose=verbose,
            search_storage=search_storage, search_heartbeat=search_heartbeat,
        )
        self.logdir = self.options.logdir
        self.update_freq = update_freq
        self.verbose = verbose
        self.session: Session | None = None
        self.watcher: ControlWatcher | None = None
        #: Revisions from the watcher thread; ``mailbox.posted`` / ``taken`` count them.
        self.mailbox: RevisionMailbox[Incoming] = RevisionMailbox()
        #: The batch boundary: the turns taken there and their counters.
        self.boundary = BoundaryTurns(self)
        self._state_sync: Callable[[], None] | None = None
        self._lock: _atomic.TrainerLock | None = None
        #: Several JAX processes: the agreement (None in a single process).
        self.cluster: Cluster | None = None
        #: Revisions for the cluster's agreement (several JAX processes): the leader's go to all.
        self.inbox: RevisionMailbox[bytes] = RevisionMailbox()
        self._begun = False
        self._end_lock = threading.Lock()
        #: Ends the run that fit left without on_train_end (the heartbeat looks), or the interpreter's exit.
        self._liveness = RunLiveness(lambda state, error, sync_now: self._end(state, error, sync_now=sync_now))
        #: A search worker's spec (``tb-retune worker``), read from the environment at begin().
        self.worker_spec: WorkerSpec | None = None
        #: What a search evaluates its objective on (``search_host.EvaluationData``):
        #: ``RetuneCallback`` sets fit's data; a custom loop may set its own.
        self.evaluation_data: search_host.EvaluationData | None = None

    # ------------------------------------------------- the boundary's counters
    @property
    def stop_requested(self) -> bool:
        """A stop was asked for: the fit ends at the next batch."""
        return self.boundary.stop_requested

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self.boundary.stop_requested = value

    @property
    def trace_version(self) -> int:
        """Changes when the train function must be traced again (custom loops re-jit on it)."""
        return self.boundary.trace_version

    @property
    def state_version(self) -> int:
        """Changes when a due step may have assigned variables (JAX custom loops read the state back)."""
        return self.boundary.state_version

    @property
    def turns(self) -> int:
        """How many batch boundaries took the full look."""
        return self.boundary.turns

    @property
    def begun(self) -> bool:
        """Between begin() and end()."""
        return self._begun

    # ------------------------------------------------------------------ paths
    @property
    def control_path(self) -> str:
        return os.path.join(self.logdir, CONTROL_FILENAME)

    @property
    def status_path(self) -> str:
        return os.path.join(self.logdir, STATUS_FILENAME)

    @property
    def branch(self) -> str:
        """The branch in force."""
        return self.session.state.branch if self.session is not None else "main"

    @property
    def node(self) -> str:
        """The node in force."""
        return self.session.state.node if self.session is not None else ""

    @property
    def initial_epoch(self) -> int:
        """The epoch a resumed run starts at (for ``fit``'s epoch counter)."""
        return self.session.initial_epoch if self.session is not None else 0

    def steady(self) -> contextlib.AbstractContextManager[Any]:
        """A block of one hook, where nothing but this controller changes the
        optimizer: its hyperparameters are read once in it (``OptimizerHandle.steady``)."""
        s = self.session
        return s.handle.steady() if s is not None else contextlib.nullcontext()

    # ------------------------------------------------------------ lifecycle
    def begin(self, model: Any, optimizer: Any = None, params: Mapping[str, Any] | None = None, *,
              state_sync: Callable[[], None] | None = None, look: bool = False,
              set_by: external.SetBy = None) -> bool:
        """Starts (or resumes) the experiment. Returns True if the caller
        must retrace its train function (hyperparameters were set).

        ``look``: also record what someone else set before the start
        (``note_external_changes(set_by)``), read with the start's own reads,
        before the threads take up their work (RetuneCallback does).

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
        # Each fit starts with no stop asked for: a stop ends one fit.
        self.stop_requested = False
        self._state_sync = None  # the variables hold the state until begin() returns
        self.mailbox = RevisionMailbox()
        self._state_sync = None  # the variables hold the state until begin() returns
        os.makedirs(self.logdir, exist_ok=True)
        self.worker_spec = WorkerSpec.from_env()
        self.cluster = Cluster.detect(self.agree_every_steps)
        if self.worker_spec is not None:
            folder = worker.own_folder(self.worker_spec, self.cluster)
        else:
            folder = self.cluster.folder(self.logdir) if self.cluster is not None else self.logdir
        self._lock = _atomic.TrainerLock(os.path.join(folder, LOCK_FILENAME))
        self._lock.acquire()
        try:
            retrace = self._start(model, optimizer, params, look, set_by)
        except BaseException:
            self._close_resources()
            raise
        self._begun = True
        self._state_sync = state_sync
        self._liveness.opened()
        self.boundary.plan()
        return retrace

    def _start(self, model: Any, optimizer: Any, params: Mapping[str, Any] | None, look: bool,
               set_by: external.SetBy) -> bool:
        if self.worker_spec is not None:  # a search worker (trainer/worker.py)
            self.session = worker.open_session(self.options, model, optimizer, params, self.worker_spec,
                                               tick=self._liveness.tick, mailbox=self.mailbox,
                                               evaluation=self.evaluation_data)
            return False
        previous = self.session
        s = self.session = starting.new_session(self.options, model, optimizer, params, cluster=self.cluster,
                                                tick=self._liveness.tick, mailbox=self.mailbox)
        retrace, self.watcher = starting.run_start(
            s, previous, cluster=self.cluster, logdir=self.logdir, control_path=self.control_path,
            evaluation=self.evaluation_data, on_revision=self._on_revision, due=self.boundary.due,
            look=(lambda: self.note_external_changes(set_by)) if look else None)
        return retrace

    def watch_frame(self, thread_ident: int, frame: Any) -> None:
        """Ends the run as failed if ``frame`` (``fit``'s) leaves its thread's
        stack without ``end()`` being called: Keras calls no callback when
        ``fit`` raises from another callback or from validation."""
        self._liveness.watch(thread_ident, frame)

    def end(self, state: str = "finished", error: str | None = None) -> None:
        """Takes a final checkpoint, stops the threads and closes the files.

        The final checkpoint is durable and the last status and state are
        written when this returns; their fsync runs on a thread that the
        interpreter waits for at exit.

        Args:
            state: ``finished``, ``stopped`` or ``failed``.
            error: For ``failed``: what happened, shown in the status.
        """
        self._end(state, error, sync_now=False)

    @_steadily
    def _end(self, state: str, error: str | None, *, sync_now: bool) -> None:
        with self._end_lock:
            if not self._begun:
                return
            self._begun = False
            self.boundary.quiet_never()
            if self._lock is not None:
                self._lock.closing()  # a new run in this process waits for the release, not refused
        self._liveness.closed()
        try:
            if self.session is not None:
                ending.finish(self.session, state, error, sync_state=self.sync_state)
        finally:
            self._close_resources(sync_now=sync_now)

    def _close_resources(self, *, sync_now: bool = True) -> None:
        # The watcher and the heartbeat are told to stop, and end on their own
        # threads while the writer's thread writes the final checkpoint: fit
        # does not wait for them (at exit, sync_now, it does).
        if self.watcher is not None:
            self.watcher.stop(wait=sync_now)  # its thread ends on its own, fit does not wait
            self.watcher = None
        if self.session is not None:
            ending.close(self.session, sync_now=sync_now)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self.cluster is not None:
            self.cluster.close()

    # ------------------------------------------------------------ the step
    def current_step(self) -> int:
        return self.session.steps.current() if self.session is not None else 0

    def sync_step(self) -> int:
        """Reads ``optimizer.iterations`` (a variable read: not per batch)."""
        return self.session.steps.sync() if self.session is not None else 0

    def sync_state(self) -> None:
        """Brings the training state into the variables where it lives elsewhere (JAX)."""
        if self._state_sync is not None:
            self._state_sync()
            if self.session is not None:
                self.session.handle.forget()  # the variables were assigned

    def before_step(self) -> bool:
        """Call before each train step. O(1) unless something is due
        (``BoundaryTurns.before_step``).

        Returns True when the train function must be traced again.
        """
        return self.boundary.before_step()

    @_steadily
    def note_external_changes(self, set_by: external.SetBy = None) -> bool:
        """Records hyperparameters that someone else (another callback, the
        user's code) set since we last looked. Reads the learning-rate
        variable: call it at epoch boundaries, not per batch. Returns True
        when the train function must be traced again."""
        s = self.session
        if s is None or s.resume_pending or not s.on_branch:
            return False
        self.sync_state()
        retrace = external.record(s, set_by)
        if retrace:
            self.boundary.retraced()
        self.boundary.plan()
        return retrace

    def after_step(self, logs: Mapping[str, Any] | None = None) -> None:
        """Call after each train step of a custom loop (logs every update_freq)."""
        if isinstance(self.update_freq, int) and logs:
            step = self.current_step()
            if step % self.update_freq == 0:
                self.sync_state()
                self.log_scalars(step, logs)

    def log_scalars(self, step: int, logs: Mapping[str, Any]) -> None:
        if self.session is not None:
            epochs.log_scalars(self.session, step, logs)

    @_steadily
    def end_epoch(self, epoch: int, logs: Mapping[str, Any] | None = None, *, complete: bool = True) -> None:
        """Call at the end of each epoch: scalars, and the epoch checkpoint.

        ``complete=False`` (an epoch cut short by a stop) logs the scalars
        but does not count the epoch, so a resumed run trains it again.
        """
        if self.session is None:
            return
        self.sync_state()
        epochs.end(self.session, epoch, logs, complete=complete)
        self.boundary.plan()

    def function(self, fn: Callable[..., Any], **tf_function_kwargs: Any) -> Callable[..., Any]:
        """Wraps ``fn`` in a ``tf.function`` that is traced again whenever a
        hyperparameter that is baked into the trace changes (custom loops).

        TensorFlow only: on JAX and PyTorch it raises a BackendError that says
        what to do instead (``trace_version``, see demo/)."""
        return retrace_on_change(fn, lambda: self.trace_version, **tf_function_kwargs)

    # --------------------------------------------------- watcher thread side
    def _on_revision(self, data: bytes | None) -> None:
        """Runs on the watcher thread: parse and validate, never apply."""
        if data is None or self.session is None:
            return
        if self.cluster is not None:
            self.inbox.post(data)  # handed to every process at the next agreement boundary
        else:
            revisions.receive(self.session, self.mailbox, data)


#: The names of our threads (tests look for leaked ones).
THREAD_NAMES = ("tb-retune-control", "tb-retune-status", "tb-retune-checkpoints", "tb-retune-sync")
