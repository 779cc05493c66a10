"""What one ``begin() ... end()`` of the controller works with.

A :class:`Session` ties the parts of a run together: the model and its
optimizer handle, the step counter, the trainer state, the checkpoint store
and policy, the node records, the schedule and the public status. The
concept modules (``revisions``, ``changes``, ``startup``) take a session.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tb_retune.experiment.control import CHECKPOINTS_DIRNAME, STATUS_FILENAME
from tb_retune.trainer.checkpointing import CheckpointPolicy
from tb_retune.trainer.checkpoints import CheckpointInfo, CheckpointStore
from tb_retune.trainer.hparams import HParamsRecorder
from tb_retune.trainer.hyperparameters import OptimizerHandle
from tb_retune.trainer.options import ControllerOptions
from tb_retune.trainer.records import NodeRecords
from tb_retune.trainer.schedule import Schedule
from tb_retune.trainer.state import TrainerState
from tb_retune.trainer.status import StatusFile
from tb_retune.trainer.steps import StepCounter

if TYPE_CHECKING:
    from tb_retune.experiment.worker import WorkerSpec
    from tb_retune.trainer.mailbox import RevisionMailbox
    from tb_retune.trainer.search import SearchEngine, SearchWorker
    from tb_retune.trainer.search_host import SessionTrialHost

logger = logging.getLogger("tb_retune")


class Session:
    """One run of the trainer on one experiment folder."""

    def __init__(self, options: ControllerOptions, model: Any, optimizer: Any,
                 params: Mapping[str, Any] | None = None, *, tick: Callable[[], None] | None = None,
                 own_folder: str | None = None, status_name: str = STATUS_FILENAME) -> None:
        self.options = options
        self.logdir = options.logdir
        #: Where this run keeps its own files (state, status): the experiment
        #: folder, or a search worker's folder.
        self.own_folder = own_folder or options.logdir
        self.model = model
        self.optimizer = optimizer
        self.handle = OptimizerHandle(optimizer)
        self.params = dict(params or {})
        self.steps = StepCounter(optimizer, int(getattr(model, "steps_per_execution", 1) or 1))
        self.state = TrainerState(self.own_folder)
        #: What does not change during the run (versions, host, git): see :meth:`environment`.
        self._environment: dict[str, Any] | None = None
        self._environment_lock = threading.Lock()
        #: What the watcher thread validates against: (hyperparameters, checkpoint steps).
        self.known: tuple[dict[str, Any], dict[str, list[int]]] = ({}, {})
        self.store = CheckpointStore(os.path.join(self.logdir, CHECKPOINTS_DIRNAME), options.keep_checkpoints)
        self.records = NodeRecords(self.logdir, self.state, self.capture_config, self.report_error,
                                   environment=self.environment, later=self.later,
                                   drain=lambda: self.checkpoints.flush())
        self.schedule = Schedule(self.state)
        #: Each branch an HParams session of TensorBoard's hparams plugin (written when training leaves it).
        self.hparams = HParamsRecorder(self.logdir)
        self.checkpoints = CheckpointPolicy(
            self.store, model, optimizer, background=options.background_checkpoints,
            every_epochs=options.checkpoint_every_epochs, every_steps=options.checkpoint_every_steps,
            meta=self.checkpoint_meta, before_write=self._flush_records_first,
            on_written=self.on_checkpoint_written, on_error=self.report_error,
        )
        self.status = StatusFile(os.path.join(self.own_folder, status_name), self._base_status(),
                                 heartbeat_s=options.heartbeat_s, refresh=self.refresh_status,
                                 prepare=self.prepare_status, guard=self.state.commit_lock, tick=tick)
        self.watcher_kind: str | None = None
        self._status_started = False
        #: Set once the start went through (until then nothing is published).
        self.started = False
        #: A resume that waits for the model to be built by its first step.
        self.resume_pending = False
        #: The epoch a resumed run starts at (for ``fit``'s epoch counter).
        self.initial_epoch = 0
        #: The index of the epoch ``fit`` is in (its own counter, which a restore cannot rewind).
        self.fit_epoch = 0
        #: The searches (``search_host.attach``): the engine and its host.
        self.search: SearchEngine | None = None
        self.search_host: SessionTrialHost | None = None
        #: The controller's mailbox of control-file revisions (set by the controller).
        self.mailbox: RevisionMailbox[Any] | None = None
        #: Batch boundaries since this fit began (a worker's steps left).
        self.boundaries = 0
        #: A search worker's run (``worker``): its spec, its engine, why it leaves.
        self.worker_spec: WorkerSpec | None = None
        self.search_worker: SearchWorker | None = None
        self.worker_leave: tuple[str, str] | None = None

    # -- the public status ------------------------------------------------
    def _base_status(self) -> dict[str, Any]:
        return {"version": 1, "pid": os.getpid(), "heartbeat": time.time(), "state": "training",
                "experiment": self.logdir, "step": 0, "checkpoints": {}, "checkpoint_nodes": {},
                "watcher": None, "error": None}

    def prepare_status(self) -> dict[str, Any]:
        """Before each status write: saves the state if it changed and returns
        its public view as saved, so the status never shows what a restart
        would not find. A change on the training thread only pokes the status
        (:meth:`save_state_later`); this thread saves it."""
        try:
            return self.state.save_for_status()
        except OSError as e:  # a full disk: the status still shows the error
            logger.warning("retune: cannot save the trainer state %s: %s", self.state.path, e)
            return self.state.public()

    def refresh_status(self, data: dict[str, Any], public: dict[str, Any] | None = None) -> None:
        """Derives the public status from the state (under the status lock)."""
        data.update(public if public is not None else self.state.public())
        data["step"] = self.steps.current()
        data["watcher"] = self.watcher_kind
        data["checkpoints"] = self.store.steps()
        data["checkpoint_nodes"] = self.store.node_index()
        if self.search is not None and self.search_host is not None:
            data["searches"] = self.search.searches()
            data["metrics"] = self.search_host.logged_metrics()
        if self.search_worker is not None:
            from tb_retune.trainer import worker

            worker.status(self, data)

    def save_state(self, *, durable: bool = False) -> None:
        try:
            self.state.save(durable=durable)
        except OSError as e:  # a full disk: reported by the writes that matter
            logger.warning("retune: cannot save the trainer state %s: %s", self.state.path, e)

    def _flush_records_first(self) -> None:
        """Before a checkpoint: the points logged before it are flushed before
        it is written (on the writer's thread, in that order), so they survive
        a crash after it."""
        self.later(self.records.flush, "flushing the event files")

    def save_state_later(self) -> None:
        """The state changed: the status thread saves it, then writes the
        status that shows it (the training thread does no file I/O)."""
        self.status.poke()

    def start_status_later(self) -> None:
        """Starts the status thread (which writes the first status at once)
        after the jobs handed to the writer's thread so far, e.g. a fresh
        start's root node and state: the status never shows a run whose state
        is not on disk. Once per run. (The writer's thread never writes the
        status itself: the training thread may wait for that thread while it
        holds the state's commit lock, which a status write takes.)"""
        if self._status_started:
            return
        self._status_started = True

        def start() -> None:
            self.status.poke()
            self.status.start()

        self.later(start, "starting the status heartbeat")

    def later(self, job: Callable[[], None], what: str) -> None:
        """Runs ``job`` off the training thread, in order with the checkpoints
        submitted before and after it (on the writer's thread; at once when
        checkpoints are written inline). A failure is reported, never raised."""
        self.checkpoints.writer.run(job, what)

    def publish(self, *, durable: bool = False) -> None:
        """Saves the state, then writes the status derived from it."""
        self.save_state(durable=durable)
        try:
            self.status.write_now(durable=durable)
        except OSError as e:
            logger.warning("retune: cannot write %s: %s", self.status.path, e)

    @property
    def on_branch(self) -> bool:
        """Whether training is on a branch (a search worker is on none until its first trial)."""
        return bool(self.state.branch)

    def wait_for_revision(self, seconds: float) -> bool:
        """Blocks up to ``seconds`` for a revision of the control file not
        taken yet; True when one is waiting (the training thread's only wait)."""
        mailbox = self.mailbox
        if mailbox is None:
            import time as _time

            _time.sleep(seconds)
            return False
        return mailbox.wait_posted(mailbox.taken, seconds)

    def steps_left(self) -> int | None:
        """The train steps this ``fit`` has left from the batch about to run,
        or None when its length is unknown."""
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        if not isinstance(epochs, int) or not isinstance(steps, int) or isinstance(epochs, bool):
            return None
        done = max(0, self.boundaries - 1) * self.steps.steps_per_call
        return max(0, (epochs - self.initial_epoch) * steps - done)

    # -- messages -----------------------------------------------------------
    def log(self, line: str) -> None:
        if self.options.verbose:
            print(line, flush=True)
        else:
            logger.info(line)

    def report_error(self, message: str) -> None:
        """An error a person must see: the log, the status and the state (any thread)."""
        entry = self.state.add_error(message, self.steps.current())
        if self.options.verbose:
            print(f"retune: error: {entry['message']}", flush=True)
        else:
            logger.warning("retune: %s", entry["message"])
        self.status.poke()

    # -- what the parts share -------------------------------------------------
    def publish_known(self) -> None:
        """Hands the watcher thread what it validates revisions against."""
        self.known = (self.handle.get(), self.store.steps())

    def hyperparameters_now(self) -> dict[str, Any]:
        hps = self.handle.get()
        with self.state.lock:
            self.state.hyperparameters = hps
        return hps

    def checkpoint_meta(self) -> dict[str, Any]:
        """Saved with each checkpoint: what a resume from it must restore."""
        with self.state.lock:
            return {
                "epoch": self.state.epoch,
                "hyperparameters": self.handle.get(),
                "learning_rate_schedule": self.handle.schedule_config(),
                "control_seen": self.state.control_seen,
                "stop_seen": self.state.stop_seen,
                "schedule_fired": self.schedule.fired_on(self.state.branch),
                "node_start": self.state.node_start,
            }

    def plan_epochs(self, branch: str, branch_epoch: int) -> dict[str, int] | None:
        """How many epochs ``branch`` gets: ``fit`` counts its own epochs on
        (Keras cannot rewind them), so a branch that starts at epoch
        ``branch_epoch`` while ``fit`` is in epoch ``fit_epoch`` gets
        ``epochs - fit_epoch`` epochs in this fit; the rest, up to ``epochs``,
        when a restart resumes it. None when ``fit``'s epochs are unknown."""
        epochs = self.params.get("epochs")
        if not isinstance(epochs, int) or isinstance(epochs, bool):
            return None
        this_fit = max(0, epochs - self.fit_epoch)
        plan = {"epochs": epochs, "this_fit": this_fit,
                "left_for_a_restart": max(0, epochs - branch_epoch - this_fit)}
        with self.state.lock:
            self.state.epochs_planned[branch] = plan
        return plan

    def on_checkpoint_written(self, info: CheckpointInfo) -> None:
        """Runs on the writer's thread once a checkpoint is durable."""
        self.known = (self.known[0], self.store.steps())
        self.status.poke(soon=True)

    def end_hparams_session(self, state: str) -> None:
        """The branch training leaves (a restore, the end of ``fit``) becomes an HParams session."""
        self.hparams.branch_ends(self.records.writer, self.state.branch, self.handle.get(),
                                 self.state.node_start, state=state)

    def take_checkpoint(self, kind: str, step: int) -> bool:
        with self.state.lock:
            branch, node = self.state.branch, self.state.node
        return self.checkpoints.take(kind, branch, step, node)

    def environment(self) -> dict[str, Any]:
        """Versions, host, command and git commit, taken once per run by the
        first thread that asks: the writer's thread at a fresh start (git
        runs two subprocesses), the training thread only when a node opens
        before that."""
        from tb_retune.trainer import recorder as _recorder

        with self._environment_lock:
            if self._environment is None:
                try:
                    self._environment = _recorder.environment()
                except Exception as e:  # never fail a run for the recorder
                    self._environment = {"error": str(e)}
            return self._environment

    def capture_config(self, *, environment: bool = True) -> dict[str, Any]:
        """The configuration recorded with a node; ``environment=False`` leaves
        out what :meth:`environment` takes (the caller adds it later)."""
        from tb_retune.trainer import recorder as _recorder

        config: dict[str, Any] = {"environment": self.environment()} if environment else {}
        try:
            config["optimizer"] = self.handle.full_config()
            config["model"] = _recorder.model_summary(self.model)
            config["training"] = _recorder.training_config(self.model, self.params)
        except Exception as e:
            config["error"] = f"{type(e).__name__}: {e}"
        return config
