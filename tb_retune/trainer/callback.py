"""``RetuneCallback``: live hyperparameters, checkpoints and branches in ``fit``."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import keras

from tb_retune.trainer import backend
from tb_retune.trainer.controller import RetuneController
from tb_retune.trainer.external import BETWEEN_FITS
from tb_retune.trainer.keras_callbacks import (
    EPOCH_BEGIN,
    EPOCH_END,
    FIRST_BATCH,
    TRAIN_BEGIN,
    TRAIN_END,
    Siblings,
    best_weights_note,
    callbacks_of_fit,
    check_backup_and_restore,
    experiment_to_resume,
    overridden_backups,
    swap_ema,
    swapped_ema,
)
from tb_retune.trainer.liveness import describe_exception
from tb_retune.trainer.search_host import fit_evaluation_data

logger = logging.getLogger("tb_retune")


class RetuneCallback(keras.callbacks.Callback):
    """Change a running ``fit``'s optimizer hyperparameters, and branch.

    While ``model.fit`` runs, edit ``<logdir>/retune.json`` (or use the
    Retune tab in TensorBoard, or ``tb-retune set``) and the new values are
    in force from the next batch on: the learning rate and every other
    hyperparameter of the optimizer (momentum, betas, epsilon, weight decay,
    clipping, ...), which are really applied to the compiled train step.
    Each change is a node of the experiment tree; checkpoints are taken at
    every node boundary and epoch end, and ``"restore"`` goes back to one of
    them as a new branch. Each branch is a TensorBoard run, with scalars for
    every metric and hyperparameter, so no separate ``TensorBoard`` callback
    is needed. Running the script again resumes where it stopped.

    Example:

    ```python
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=20, validation_split=0.2,
              callbacks=[tb_retune.RetuneCallback("runs/digits")])
    # then: tensorboard --logdir runs   (the Retune tab)
    # or:   echo '{"hyperparameters": {"learning_rate": 0.003}}' > runs/digits/retune.json
    ```

    Args:
        logdir: String. The experiment folder, e.g. ``"runs/digits"``.
        update_freq: ``"epoch"`` or Int. Write scalars at each epoch end,
            or also every N batches. Defaults to ``"epoch"``.
        checkpoint_every_epochs: Int or None. Defaults to 1.
        checkpoint_every_steps: Int or None. Defaults to None.
        keep_checkpoints: Int or None. Periodic checkpoints kept per branch,
            besides node boundaries, branch starts and the final one.
            Defaults to 5.
        polling: Bool. Poll the control file instead of inotify events (for
            network filesystems). Defaults to False.
        resume: Bool. Resume an existing experiment. Defaults to True.
        verbose: Bool. Print each applied change. Defaults to True.
        **kwargs: Passed to :class:`RetuneController`.
    """

    def __init__(
        self,
        logdir: str,
        *,
        update_freq: str | int = "epoch",
        checkpoint_every_epochs: int | None = 1,
        checkpoint_every_steps: int | None = None,
        keep_checkpoints: int | None = 5,
        polling: bool = False,
        resume: bool = True,
        verbose: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.controller = RetuneController(
            logdir,
            update_freq=update_freq,
            checkpoint_every_epochs=checkpoint_every_epochs,
            checkpoint_every_steps=checkpoint_every_steps,
            keep_checkpoints=keep_checkpoints,
            polling=polling,
            resume=resume,
            verbose=verbose,
            **kwargs,
        )
        self.logdir = self.controller.logdir
        self._batches = 0
        #: Fits that ended with this callback (a later one continues the experiment).
        self._fits = 0
        self._siblings: Siblings | None = None
        self._others_may_set = True  # another callback may set hyperparameters (on_train_begin knows)
        if isinstance(update_freq, int) and not isinstance(update_freq, bool):
            # Batch-level scalars need the logs of on_train_batch_end; only
            # then do we override it (it turns off Keras's async dispatch).
            self.on_train_batch_end = self._log_batch  # type: ignore[method-assign]

    # -- fit hooks -----------------------------------------------------------
    def _fit_frame(self) -> Any:
        """The frame of the ``fit`` that calls us, or None (a custom caller)."""
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is self.model:
                return frame
            frame = frame.f_back  # type: ignore[assignment]
        return None

    def _fit_arguments(self, frame: Any) -> dict[str, Any]:
        """``batch_size`` as passed to ``fit`` (Keras's params lack it)."""
        if frame is None:
            return {}
        # If fit ends without on_train_end (another callback raised),
        # the controller notices that this frame is gone and cleans up.
        self.controller.watch_frame(threading.get_ident(), frame)
        self.controller.evaluation_data = fit_evaluation_data(frame.f_locals)  # a search's objective
        bs = frame.f_locals.get("batch_size")
        x = frame.f_locals.get("x")
        if bs is None and hasattr(x, "shape"):
            bs = 32  # fit's default for arrays
        return {"batch_size": bs}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        frame = self._fit_frame()
        self._siblings = Siblings(callbacks_of_fit(frame), self)
        self._others_may_set = self._siblings.may_change_the_optimizer()
        refusal = check_backup_and_restore(self._siblings)
        if refusal:
            raise ValueError(refusal)
        loaded = overridden_backups(self._siblings)
        resuming = bool(loaded) and experiment_to_resume(self.logdir)
        params = dict(self.params or {})
        params.update(self._fit_arguments(frame))
        backend.check_fit(self.model)
        retrace = self.controller.begin(self.model, self.model.optimizer, params,
                                        state_sync=backend.fit_state_sync(self),
                                        look=True, set_by=self._set_by(TRAIN_BEGIN))
        if loaded:
            self._after_backup_and_restore(loaded, resuming)
        elif self.controller.initial_epoch:
            # As BackupAndRestore does: fit counts epochs from where we were.
            self.model._initial_epoch = self.controller.initial_epoch
        if retrace:
            backend.rebuild_train_function(self.model)
        self._guard_train_function()

    def _after_backup_and_restore(self, loaded: list[Any], resumed: bool) -> None:
        """A BackupAndRestore before us loaded its backup (see keras_callbacks)."""
        s = self.controller.session
        assert s is not None
        dirs = ", ".join(repr(c.backup_dir) for c in loaded)
        if resumed:
            # tb-retune's checkpoint was loaded over the backup: its epoch counts.
            self.model._initial_epoch = self.controller.initial_epoch or None
            s.report_error(
                f"BackupAndRestore's backup in {dirs} was not used: tb-retune resumed its experiment "
                f"(branch {self.controller.branch}, step {s.steps.current()}, epoch {self.controller.initial_epoch}) "
                "from its own checkpoint, loaded over it. Remove BackupAndRestore from callbacks (tb-retune's "
                "checkpoints hold the weights, the optimizer state and the epoch), or use a new logdir to "
                "resume from the backup."
            )
        else:
            epoch = int(getattr(self.model, "_initial_epoch", None) or 0)
            with s.state.lock:
                s.state.epoch = epoch
            s.log(f"retune: BackupAndRestore resumed from its backup in {dirs} (epoch {epoch}, step "
                  f"{s.steps.current()}); the experiment starts there")
            s.publish()

    def _set_by(self, moment: str) -> Callable[[Sequence[str]], str | None]:
        siblings = self._siblings
        if moment == TRAIN_BEGIN:
            return lambda changed: BETWEEN_FITS if self._fits else None
        return lambda changed: siblings.setter(moment, changed) if siblings is not None else None

    def _look(self, moment: str) -> None:
        """Records hyperparameters set by others since we last looked (a variable read)."""
        if self.controller.note_external_changes(self._set_by(moment)):
            backend.rebuild_train_function(self.model)
            self._guard_train_function()

    def _after_restore(self) -> None:
        """A restore started a new branch: reset what the other callbacks remember."""
        s = self.controller.session
        siblings = self._siblings
        if s is None or siblings is None:
            return
        reset, warnings = siblings.reset_after_restore(self.controller.branch, s.steps.known)
        if reset:
            s.log(f"retune: restore: reset the monitor state of {', '.join(reset)} (best, wait, best "
                  "weights of the abandoned branch)")
        for warning in warnings:
            s.report_error(warning)

    def _guard_train_function(self) -> None:
        """Wraps the train function so that an exception in a train step ends
        the run at once (``stopped`` for Ctrl-C). Any other way out of ``fit``
        without ``on_train_end`` is caught by the heartbeat (``watch_frame``)."""
        end_of_data = backend.end_of_data_errors()
        inner = self.model.train_function
        if inner is None or getattr(inner, "_retune_guard", False):
            return
        controller = self.controller

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return inner(*args, **kwargs)
            except end_of_data:
                raise  # the end of the data: fit handles it
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    controller.end("stopped")
                else:
                    controller.end("failed", describe_exception(e))
                raise

        guarded._retune_guard = True  # type: ignore[attr-defined]
        self.model.train_function = guarded

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches = 0
        if self._others_may_set:  # else nothing ran since our last look but train steps
            self._look(EPOCH_BEGIN)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches += 1
        if self._batches == 1 and self._others_may_set:
            self._look(FIRST_BATCH)  # once per epoch: what on_epoch_begin after us set
        c = self.controller
        turns = c.boundary  # the batch boundary's own counters: read every batch
        taken = turns.turns
        if turns.before_step():
            backend.rebuild_train_function(self.model)
            self._guard_train_function()
        # Only a boundary that did work can restore: then the branch is not the one it began on.
        if turns.turns != taken and c.branch != turns.branch_before:
            self._after_restore()
        if turns.stop_requested:  # also one asked for before the first batch (the control file at the start)
            self.model.stop_training = True

    def _log_batch(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.controller.after_step(logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        with self.controller.steady():  # the optimizer is read once in this hook
            self._epoch_end(epoch, logs)

    def _epoch_end(self, epoch: int, logs: dict[str, Any] | None) -> None:
        self._look(EPOCH_END)
        steps = (self.params or {}).get("steps")
        complete = not (self.controller.stop_requested and steps and self._batches < steps)
        swapped = swapped_ema(self._siblings) if self._siblings is not None else []
        for c in swapped:
            swap_ema(c)  # the trained weights back in the model for the checkpoint
        try:
            self.controller.end_epoch(epoch, logs, complete=complete)
        finally:
            for c in swapped:
                swap_ema(c)
        if self.controller.stop_requested:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        with self.controller.steady():  # the optimizer is read once in this hook
            self._train_end()

    def _train_end(self) -> None:
        if self._others_may_set:  # else nothing ran since our last on_epoch_end's look
            self._look(TRAIN_END)  # what the last on_epoch_end after us set
        s = self.controller.session
        if s is not None and self._siblings is not None:
            note = best_weights_note(self._siblings, self.controller.branch, s.steps.current())
            if note:
                s.log(note)
        state = "stopped" if self.controller.stop_requested else "finished"
        self.controller.end(state)
        self._fits += 1
        if getattr(self.model, "_initial_epoch", None):
            self.model._initial_epoch = None
