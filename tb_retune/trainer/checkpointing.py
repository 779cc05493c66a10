"""When checkpoints are taken, and keeping the state before a change.

A checkpoint is taken at the branch start, at every node boundary (before a
change or a restore, so the state just before it can be restored), every N
epochs or steps, and at the end. It is taken only once the model and the
optimizer are built: a subclassed model is built by its first train step,
so its first checkpoint waits for the first batch boundary after that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tb_retune.trainer.checkpoint_writer import CheckpointWriter, make_writer
from tb_retune.trainer.checkpoints import CheckpointInfo, CheckpointStore


def model_ready(model: Any, optimizer: Any) -> bool:
    """True once the model has its weights and the optimizer its variables."""
    try:
        return bool(model.weights) and bool(getattr(optimizer, "built", False))
    except Exception:  # a model that cannot list its weights yet
        return False


def build_optimizer_if_possible(model: Any, optimizer: Any) -> bool:
    """Builds the optimizer for a built model (as Keras would); never for an
    unbuilt one, whose variables do not exist yet. Returns readiness."""
    if getattr(optimizer, "built", False):
        return model_ready(model, optimizer)
    if not getattr(model, "built", False) or not model.trainable_variables:
        return False
    optimizer.build(model.trainable_variables)
    return model_ready(model, optimizer)


class CheckpointPolicy:
    """Takes the checkpoints of a run through one writer.

    Args:
        store: The experiment's checkpoint store.
        model, optimizer: What is saved.
        background: Write on a thread of its own (else inline).
        meta: Returns the metadata saved with a checkpoint (epoch,
            hyperparameters in force, control values taken, ...).
        before_write: Called before a snapshot (flushes the event files:
            points logged before a checkpoint must survive a crash after it).
        on_written: Called (on the writer's thread) once a checkpoint is durable.
        on_error: Reports a failed write.
    """

    def __init__(self, store: CheckpointStore, model: Any, optimizer: Any, *, background: bool,
                 every_epochs: int | None, every_steps: int | None,
                 meta: Callable[[], dict[str, Any]], before_write: Callable[[], None],
                 on_written: Callable[[CheckpointInfo], None], on_error: Callable[[str], None]) -> None:
        self.store = store
        self.model = model
        self.optimizer = optimizer
        self.every_epochs = every_epochs
        self.every_steps = every_steps
        self._meta = meta
        self._before_write = before_write
        self.writer: CheckpointWriter = make_writer(background, store, on_written, on_error)
        #: The kind of a checkpoint that waits for the model to be built.
        self.deferred: str | None = None

    def ready(self) -> bool:
        return model_ready(self.model, self.optimizer)

    def has(self, branch: str, step: int) -> bool:
        return self.store.get(branch, step) is not None or self.writer.pending(branch, step)

    def take(self, kind: str, branch: str, step: int, node: str) -> bool:
        """Copies the state now; the writer makes it durable. False when the
        model is not built yet (then there is nothing to save)."""
        if not self.ready():
            return False
        self._before_write()
        meta = self._meta()
        meta["time"] = time.time()
        snap = self.store.snapshot(self.model, self.optimizer, branch=branch, step=step, node=node,
                                   kind=kind, meta=meta)
        self.writer.submit(snap)
        return True

    def take_deferred(self, branch: str, step: int, node: str) -> None:
        """Takes the checkpoint that waited for the model to be built."""
        if self.deferred is not None and self.ready():
            kind, self.deferred = self.deferred, None
            if not self.has(branch, step):
                self.take(kind, branch, step, node)

    def keep_before_change(self, branch: str, step: int, node: str) -> None:
        """Keeps the state at ``step``, just before a change or a restore,
        restorable: a boundary checkpoint, or the one there promoted out of
        the retention policy's reach (after a pending write of it)."""
        if not self.has(branch, step):
            self.take("boundary", branch, step, node)
        else:
            self.writer.promote(branch, step, "boundary")

    def steps_due(self, step: int) -> bool:
        """O(1): whether ``step`` is a periodic checkpoint step."""
        return bool(self.every_steps) and step > 0 and step % self.every_steps == 0  # type: ignore[operator]

    def at_step(self, branch: str, step: int, node: str) -> None:
        if self.steps_due(step) and not self.has(branch, step):
            self.take("steps", branch, step, node)

    def at_epoch_end(self, epochs_done: int, branch: str, step: int, node: str) -> None:
        if self.every_epochs and epochs_done % self.every_epochs == 0 and not self.has(branch, step):
            self.take("epoch", branch, step, node)

    def final(self, branch: str, step: int, node: str) -> None:
        if not self.has(branch, step):
            self.take("final", branch, step, node)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, then: Callable[[], None] | None = None, what: str = "") -> None:
        """Ends the writer once everything submitted is written. ``then``: a
        last job for the writer, which the caller does not wait for (the
        interpreter does, at exit); ``what`` names it in a report of its failure."""
        if then is None:
            self.writer.flush()
            self.writer.stop()
        else:
            self.writer.finish(then, what)
