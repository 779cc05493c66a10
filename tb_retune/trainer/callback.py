"""``RetuneCallback``: live hyperparameters, checkpoints and branches in ``fit``."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import keras

from tb_retune.trainer import backend
from tb_retune.trainer.controller import RetuneController
from tb_retune.trainer.liveness import describe_exception

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
        if isinstance(update_freq, int) and not isinstance(update_freq, bool):
            # Batch-level scalars need the logs of on_train_batch_end; only
            # then do we override it (it turns off Keras's async dispatch).
            self.on_train_batch_end = self._log_batch  # type: ignore[method-assign]

    # -- fit hooks -----------------------------------------------------------
    def _fit_arguments(self) -> dict[str, Any]:
        """``batch_size`` as passed to ``fit`` (Keras's params lack it)."""
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is self.model:
                # If fit ends without on_train_end (another callback raised),
                # the controller notices that this frame is gone and cleans up.
                self.controller.watch_frame(threading.get_ident(), frame)
                bs = frame.f_locals.get("batch_size")
                x = frame.f_locals.get("x")
                if bs is None and hasattr(x, "shape"):
                    bs = 32  # fit's default for arrays
                return {"batch_size": bs}
            frame = frame.f_back  # type: ignore[assignment]
        return {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        params = dict(self.params or {})
        params.update(self._fit_arguments())
        backend.check_fit(self.model)
        retrace = self.controller.begin(self.model, self.model.optimizer, params,
                                        state_sync=backend.fit_state_sync(self))
        if self.controller.initial_epoch:
            # As BackupAndRestore does: fit counts epochs from where we were.
            self.model._initial_epoch = self.controller.initial_epoch
        if retrace:
            backend.rebuild_train_function(self.model)
        self._guard_train_function()

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

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches += 1
        if self.controller.before_step():
            backend.rebuild_train_function(self.model)
            self._guard_train_function()
        if self.controller.stop_requested:
            self.model.stop_training = True

    def _log_batch(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.controller.after_step(logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        steps = (self.params or {}).get("steps")
        complete = not (self.controller.stop_requested and steps and self._batches < steps)
        self.controller.end_epoch(epoch, logs, complete=complete)
        if self.controller.stop_requested:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        state = "stopped" if self.controller.stop_requested else "finished"
        self.controller.end(state)
        if getattr(self.model, "_initial_epoch", None):
            self.model._initial_epoch = None
