"""Reading checkpoints back: the checks every file passes, and what happens to one that fails.

Every read checks the file (its structure, the checksum of its header and of
every array, that it holds model weights and a step >= 0 that matches its
name: :mod:`tb_retune.trainer.checkpoint_format`) and raises
:class:`CheckpointError` naming the file and what is wrong. A file that fails
(cut short, empty, not ours, damaged, holding no weights, a negative or
inconsistent step) is set aside as ``<name>.bad``: out of the index, never
deleted. :meth:`CheckpointReader.latest_good` is what a resume uses, and
:meth:`~CheckpointReader.load` what a restore uses: it checks everything
before it assigns anything.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from tb_retune._errors import CheckpointError
from tb_retune.experiment.atomic import fsync_dir
from tb_retune.trainer import checkpoint_format as fmt
from tb_retune.trainer.checkpoint_index import BAD_SUFFIX, CheckpointIndex, CheckpointInfo
from tb_retune.trainer.checkpoint_state import assign_copies_arrays, assignment_plan, collect_variables

__all__ = ["CheckpointReader", "SkippedCheckpoint"]

logger = logging.getLogger("tb_retune")


@dataclasses.dataclass(frozen=True)
class SkippedCheckpoint:
    """A checkpoint :meth:`CheckpointReader.latest_good` passed over, and why."""

    info: CheckpointInfo
    reason: str
    moved_to: str | None  # where it was set aside; None if it stayed (e.g. a permission error)


class _SetAside(CheckpointError):
    """A bad checkpoint, and where its file was moved (None: it could not be)."""

    def __init__(self, message: str, moved_to: str | None) -> None:
        super().__init__(message)
        self.moved_to = moved_to


class CheckpointReader(CheckpointIndex):
    """Reads, checks and loads the checkpoints of one experiment.

    Args:
        folder: ``<experiment>/checkpoints``.
    """

    def __init__(self, folder: str) -> None:
        #: The checkpoints the last :meth:`latest_good` call passed over,
        #: newest first, for the caller to report (status, log).
        self.last_skipped: list[SkippedCheckpoint] = []
        # The buffer of the last snapshot written (or of the last load), for the next one: a
        # fresh buffer costs page faults that take several times the copy.
        self._spare: np.ndarray | None = None
        super().__init__(folder)

    def _buffer(self, nbytes: int) -> np.ndarray:
        """The spare buffer when it has ``nbytes``, else a new one."""
        with self._lock:
            if self._spare is not None and len(self._spare) == nbytes:
                buffer, self._spare = self._spare, None
                return buffer
        return fmt.aligned_empty(nbytes)  # aligned for O_DIRECT

    def _set_aside(self, info: CheckpointInfo, f: BinaryIO) -> str | None:
        """Renames the bad file that ``f`` has open to ``<name>.bad`` and drops it from the index."""
        with self._lock:
            current = self._index.get(info.branch, {}).get(info.step)
            try:
                if current is None or not os.path.samestat(os.stat(current.path), os.fstat(f.fileno())):
                    return None  # replaced by a newer write meanwhile: not ours to move
                target = current.path + BAD_SUFFIX
                n = 1
                while os.path.exists(target):
                    n += 1
                    target = f"{current.path}{BAD_SUFFIX}-{n}"
                os.rename(current.path, target)
            except OSError as e:
                logger.warning("retune: could not set aside the bad checkpoint %s: %s", current and current.path, e)
                return None
            del self._index[info.branch][info.step]
            fsync_dir(os.path.dirname(target))
            return target

    def _read(self, info: CheckpointInfo, *, arrays: bool,
              into: Callable[[int], np.ndarray] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        with self._opened(info) as (current, f):
            try:
                header = fmt.read_header(f, current.path)
                if arrays:
                    buffer = into(header.data_bytes) if into is not None else None
                    saved = fmt.read_arrays(f, current.path, header, buffer)
                    scalars = {k: a for k, a in saved.items() if a.size == 1}
                else:
                    saved = {}
                    scalars = fmt.verify_data(f, current.path, header)
                fmt.check_contents(current.path, current.step, header, scalars)
            except CheckpointError as e:
                moved = self._set_aside(current, f)
                raise _SetAside(f"{e}; set aside as {os.path.basename(moved)}" if moved else str(e), moved) from None
            except OSError as e:
                raise CheckpointError(f"checkpoint {current.path} is unreadable: {e}") from None
        return dict(header.meta), saved

    def read_arrays(self, info: CheckpointInfo) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The metadata and the arrays of ``(info.branch, info.step)``, checked, read straight into their buffers."""
        return self._read(info, arrays=True)

    def verify(self, info: CheckpointInfo) -> dict[str, Any]:
        """Checks ``(info.branch, info.step)`` through, in small pieces; returns its metadata.

        Raises CheckpointError (and sets the file aside) when it is bad.
        """
        return self._read(info, arrays=False)[0]

    def latest_good(self, branch: str) -> CheckpointInfo | None:
        """The newest checkpoint of ``branch`` that passes every check, or None.

        Each newer one that fails is logged as a warning, set aside as
        ``<name>.bad`` (it leaves the index: call :meth:`steps` again for
        the status) and listed in :attr:`last_skipped`, which this call
        resets: the controller reports those to the person.
        """
        self.last_skipped = []
        for info in reversed(self.infos(branch)):
            try:
                self.verify(info)
            except CheckpointError as e:
                logger.warning("retune: skipping checkpoint %s@%d: %s", branch, info.step, e)
                self.last_skipped.append(SkippedCheckpoint(info, str(e), getattr(e, "moved_to", None)))
                continue
            return self.get(branch, info.step) or info
        return None

    def read_meta(self, info: CheckpointInfo) -> dict[str, Any]:
        """The metadata saved with ``(info.branch, info.step)`` (its header only, checked)."""
        with self._opened(info) as (current, f):
            try:
                return dict(fmt.read_header(f, current.path).meta)
            except OSError as e:
                raise CheckpointError(f"checkpoint {current.path} is unreadable: {e}") from None

    def load(self, model: Any, optimizer: Any, info: CheckpointInfo) -> dict[str, Any]:
        """Assigns the checkpoint's values to the model and optimizer.

        The file is ``(info.branch, info.step)``'s as the index has it now
        (``info.path`` may be stale). Variables are matched by position (by
        path for optimizer slots that the checkpoint lacks, which start at
        zero). Raises CheckpointError, before assigning anything, when the
        checkpoint is bad or does not fit.
        """
        taken: list[np.ndarray] = []

        def into(nbytes: int) -> np.ndarray:
            taken.append(self._buffer(nbytes))
            return taken[-1]

        try:
            # Into the spare snapshot buffer where assign copies: no fresh memory to fault in.
            meta, saved = self._read(info, arrays=True, into=into if assign_copies_arrays() else None)
            plan = assignment_plan(collect_variables(model, optimizer), saved, f"{info.branch}@{info.step}")
            for var, value in plan:
                var.assign(value)
        finally:
            if taken:
                with self._lock:
                    self._spare = taken[0]
        return meta
