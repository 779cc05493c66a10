"""Data-parallel training: where variables are created, and which process leads.

Two engines are supported, both existing ones:

- ``tf.distribute.MirroredStrategy`` (TensorFlow backend, one process): the
  model's and optimizer's variables are ``MirroredVariable``s. Reading them
  goes through numpy (``hyperparameters._to_float``); assigning an existing
  one is mirrored by TensorFlow; a *new* variable (the learning-rate
  variable that replaces a schedule, slots that a hyperparameter turns on)
  must be created in the strategy's scope, which :func:`variable_scope` gives.
- ``keras.distribution.DataParallel`` over processes joined by
  ``jax.distributed.initialize`` (JAX backend): see ``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

__all__ = ["Cluster", "variable_scope"]


def variable_scope(optimizer: Any) -> contextlib.AbstractContextManager[Any]:
    """The scope in which new optimizer variables must be created: the
    strategy's under ``tf.distribute`` (so they are mirrored on every
    replica), a no-op otherwise."""
    strategy = getattr(optimizer, "_distribution_strategy", None)
    scope = getattr(strategy, "scope", None)
    if scope is None:
        return contextlib.nullcontext()
    import tensorflow as tf

    if tf.distribute.has_strategy() or strategy is tf.distribute.get_strategy():
        return contextlib.nullcontext()  # already inside it, or the default strategy
    return scope()  # type: ignore[no-any-return]


class Cluster:
    """The processes of a multi-process JAX job, as one of them sees it.

    Process 0 is the *leader*: it watches the control file and writes the
    status, the event files and the checkpoints. The others are *followers*:
    they run the same controller on a private scratch folder for their own
    bookkeeping, read the leader's checkpoints (``FollowerStore``) and take
    every input that could differ between processes from the leader, at a
    batch boundary that every process reaches at the same step (see
    ``docs/distributed.md``): the trainer state at the start, the control
    file at the start, and each new revision of it.

    Args:
        index: This process's index (``jax.process_index()``).
        count: The number of processes.
        every: Agree every N steps (1: at every batch boundary).
    """

    def __init__(self, index: int, count: int, every: int = 1) -> None:
        self.index = index
        self.count = count
        self.every = max(1, int(every))
        self.scratch: str | None = None

    @staticmethod
    def detect(every: int = 1) -> Cluster | None:
        """A Cluster when this process is one of several JAX processes, else None."""
        import sys

        if "jax" not in sys.modules:
            return None
        from tb_retune.trainer import backend

        if backend.name() != "jax":
            return None
        import jax

        count = jax.process_count()
        return Cluster(jax.process_index(), count, every) if count > 1 else None

    @property
    def leader(self) -> bool:
        return self.index == 0

    # -- the collectives -------------------------------------------------------
    def broadcast_bytes(self, data: bytes | None) -> bytes | None:
        """The leader's ``data`` in every process (None travels as None).

        Two small collectives when there is something to send, one otherwise.
        """
        import numpy as np
        from jax.experimental import multihost_utils

        size = -1 if data is None else len(data)
        header = multihost_utils.broadcast_one_to_all(np.array([size], dtype=np.int64))
        n = int(np.asarray(header)[0])
        if n < 0:
            return None
        if n == 0:
            return b""
        buf = np.frombuffer(data, dtype=np.uint8) if self.leader and data is not None else np.zeros(n, np.uint8)
        return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf), dtype=np.uint8))

    def barrier(self) -> None:
        self.broadcast_bytes(None)

    def due(self, step: int) -> bool:
        """O(1): whether ``step`` is an agreement boundary."""
        return step % self.every == 0

    # -- the start ---------------------------------------------------------
    def folder(self, logdir: str) -> str:
        """Where this process keeps its own files: the experiment folder for
        the leader, a private scratch folder for a follower."""
        if self.leader:
            return logdir
        if self.scratch is None:
            import tempfile

            self.scratch = tempfile.mkdtemp(prefix=f"tb-retune-process-{self.index}-")
        return self.scratch

    def seed_state(self, logdir: str) -> None:
        """Gives every follower the leader's trainer state, before anything is
        written, so that every process starts (fresh or resumed) alike."""
        from tb_retune.trainer.state import STATE_FILENAME

        data = None
        if self.leader:
            try:
                with open(os.path.join(logdir, STATE_FILENAME), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                data = None
        data = self.broadcast_bytes(data)
        if not self.leader and data is not None:
            from tb_retune.experiment.atomic import atomic_open

            with atomic_open(os.path.join(self.folder(logdir), STATE_FILENAME)) as f:
                f.write(data)

    def join(self, session: Any, logdir: str) -> None:
        """A follower reads the leader's checkpoints and writes none; then a
        barrier, so that every store has listed the folder before the leader
        writes into it."""
        if not self.leader:
            from tb_retune.experiment.control import CHECKPOINTS_DIRNAME
            from tb_retune.trainer.checkpoint_writer import make_writer
            from tb_retune.trainer.follower import FollowerStore

            store = FollowerStore(os.path.join(logdir, CHECKPOINTS_DIRNAME), session.options.keep_checkpoints)
            session.checkpoints.writer.stop()
            session.store = session.checkpoints.store = store
            session.checkpoints.writer = make_writer(False, store, session.on_checkpoint_written,
                                                     session.report_error)
        self.barrier()

    def close(self) -> None:
        if self.scratch is not None:
            import shutil

            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None
