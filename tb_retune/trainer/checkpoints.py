"""The checkpoint store: model weights and optimizer state, per branch.

``checkpoints/<branch>/step-<step>--<node>--<kind>.ckpt`` holds every model
weight and every optimizer variable (slots, iteration count) by variable path,
and the metadata (step, epoch, hyperparameters in force). The store is built
by concept, in layers: the index of the folder by ``(branch, step)``
(:mod:`~tb_retune.trainer.checkpoint_index`), reading and checking
(:mod:`~tb_retune.trainer.checkpoint_reader`), and here writing and
retention. The file format, with its checksums, is in
:mod:`tb_retune.trainer.checkpoint_format`; what a checkpoint holds, in
:mod:`tb_retune.trainer.checkpoint_state`.

A checkpoint is written to a hidden temporary file, fsynced, then renamed:
a crash in the middle leaves a ``.tmp`` file that is never read (and is swept
on the next start) and the previous checkpoints intact. A checkpoint that
fails its checks when read raises :class:`CheckpointError` naming the file
and what is wrong, and is set aside as ``<name>.bad``.

A checkpoint's identity is ``(branch, step)``. :meth:`CheckpointStore.load`,
:meth:`~CheckpointStore.fork` and :meth:`~CheckpointStore.promote` find its
file under the store's lock, so a :class:`CheckpointInfo` captured on one
thread stays usable after another thread renamed the file (a promotion).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from tb_retune._errors import CheckpointError
from tb_retune.experiment.atomic import atomic_open, fsync_dir
from tb_retune.trainer import checkpoint_format as fmt
from tb_retune.trainer.checkpoint_index import BAD_SUFFIX, KEPT_KINDS, CheckpointInfo, temporary_prefix
from tb_retune.trainer.checkpoint_reader import CheckpointReader, SkippedCheckpoint
from tb_retune.trainer.checkpoint_state import Snapshot, collect_variables, read_value, take_snapshot

__all__ = ["BAD_SUFFIX", "KEPT_KINDS", "CheckpointInfo", "CheckpointStore", "SkippedCheckpoint", "Snapshot",
           "collect_variables", "read_value"]

MAGIC = fmt.MAGIC  # what a checkpoint written now starts with


class CheckpointStore(CheckpointReader):
    """Saves, lists, loads and prunes the checkpoints of one experiment.

    Every read checks the file (its structure, its checksums, that it holds
    model weights and a step >= 0 that matches its name) and raises
    :class:`CheckpointError` naming the file and what is wrong; a file that
    fails is set aside as ``<name>.bad``. :meth:`latest_good` is what a
    resume uses: it passes over bad checkpoints with a warning and lists
    them in :attr:`last_skipped`.

    Args:
        folder: ``<experiment>/checkpoints``.
        keep_last: How many checkpoints of kinds other than boundary, branch
            and final to keep per branch (None keeps all).
    """

    def __init__(self, folder: str, keep_last: int | None = 5) -> None:
        self.keep_last = keep_last
        super().__init__(folder)

    # -- writing -----------------------------------------------------------
    def snapshot(
        self,
        model: Any,
        optimizer: Any,
        *,
        branch: str,
        step: int,
        node: str,
        kind: str,
        meta: Mapping[str, Any],
    ) -> Snapshot:
        """Copies the current values into one buffer (on the training thread; one memory copy).

        The buffer is the one of the last snapshot written, when it has the
        size needed: at most two buffers exist while one snapshot is being
        written (the one in the writer's hands and none spare), so memory
        stays within twice the model's state. :meth:`free_buffers` lets go of
        the spare one.
        """
        full_meta = dict(meta)
        full_meta.update({"branch": branch, "step": step, "node": node, "kind": kind})
        return take_snapshot(collect_variables(model, optimizer), self._buffer, branch=branch, step=step,
                             node=node, kind=kind, meta=full_meta)

    def write(self, snap: Snapshot) -> CheckpointInfo:
        """Writes a snapshot, fsyncs it and publishes it (any thread).

        Raises CheckpointError for a snapshot that holds no model weights
        (nothing could be restored from it), and the ``OSError`` of a failed
        write as it is (``errno.ENOSPC`` for a full disk), after removing the
        temporary file; the checkpoints already written stay as they were.
        Once written, the snapshot is used up: its buffer goes to the next
        snapshot. After a failed write it is intact, to be written again
        (when space returns) or dropped.
        """
        if snap.keys and not snap.arrays:
            raise CheckpointError(f"the snapshot of branch {snap.branch!r} at step {snap.step} was written already "
                                  "and its buffer reused; take a new snapshot")
        if snap.step < 0 or not any(key.startswith("model/") for key in snap.keys):
            raise CheckpointError(
                f"refusing to write the checkpoint of branch {snap.branch!r} at step {snap.step}: "
                + (f"step {snap.step} is negative" if snap.step < 0 else
                   "it holds 0 model weights; build the model (give it an Input or call it on a batch) "
                   "before its first checkpoint")
            )
        region: memoryview | None = None
        if snap.buffer is not None and snap.entries is not None:
            entries, total = snap.entries, len(snap.buffer)
            region = snap.buffer.data
            sources = [region[e.offset:e.offset + fmt.aligned(e.nbytes)] for e in entries]
        else:
            entries, total = fmt.plan(snap.keys, [(a.dtype, a.shape) for a in snap.arrays])
            sources = [np.ascontiguousarray(a).reshape(-1).view(np.uint8).data for a in snap.arrays]
        bdir = os.path.join(self.folder, snap.branch)
        os.makedirs(bdir, exist_ok=True)
        final = self._path(snap.branch, snap.step, snap.node, snap.kind)
        with atomic_open(final, prefix=temporary_prefix()) as f:
            fmt.write(f, snap.meta, entries, total, sources, region)
        del sources, region
        self._reuse(snap)
        info = CheckpointInfo(snap.branch, snap.step, snap.node, snap.kind, final)
        with self._lock:
            self._add(info)
            self._prune(snap.branch)
        return info

    def _reuse(self, snap: Snapshot) -> None:
        """Takes a written snapshot's buffer for the next snapshot; the snapshot is emptied."""
        if snap.buffer is None:
            return
        with self._lock:
            self._spare = snap.buffer
        snap.buffer, snap.arrays, snap.entries = None, [], None

    def free_buffers(self) -> None:
        """Lets go of the spare snapshot buffer (as big as the model's state), e.g. at the end of training."""
        with self._lock:
            self._spare = None

    def save(self, model: Any, optimizer: Any, *, branch: str, step: int, node: str, kind: str,
             meta: Mapping[str, Any]) -> CheckpointInfo:
        """Writes a checkpoint of the current state and publishes it atomically."""
        return self.write(self.snapshot(model, optimizer, branch=branch, step=step, node=node,
                                        kind=kind, meta=meta))

    def fork(self, source: CheckpointInfo, *, branch: str, node: str) -> CheckpointInfo:
        """Makes ``(source.branch, source.step)`` the first checkpoint of a new branch (a hard link)."""
        bdir = os.path.join(self.folder, branch)
        os.makedirs(bdir, exist_ok=True)
        final = self._path(branch, source.step, node, "branch")
        fd, tmp = tempfile.mkstemp(dir=bdir, prefix=temporary_prefix(), suffix=".ckpt")
        os.close(fd)
        os.unlink(tmp)
        try:
            with self._lock:  # the source's file as it is named now
                current = self._resolve(source.branch, source.step)
                try:
                    os.link(current.path, tmp)
                except OSError:
                    shutil.copyfile(current.path, tmp)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(bdir)
        info = CheckpointInfo(branch, source.step, node, "branch", final)
        with self._lock:
            self._add(info)
        return info

    def promote(self, branch: str, step: int, kind: str) -> None:
        """Makes the checkpoint at ``step`` one of a kept kind (a rename)."""
        with self._lock:
            info = self.get(branch, step)
            if info is None or info.kind in KEPT_KINDS:
                return
            final = self._path(branch, step, info.node, kind)
            try:
                self._rename(info.path, final)
            except FileNotFoundError:
                del self._index[branch][step]  # gone behind our back: stop listing it
                raise CheckpointError(f"cannot keep checkpoint {info.path} as {kind!r}: the file is gone") from None
            self._index[branch][step] = CheckpointInfo(branch, step, info.node, kind, final)

    def _prune(self, branch: str) -> None:
        if self.keep_last is None:
            return
        plain = [i for i in self.infos(branch) if i.kind not in KEPT_KINDS]
        for info in plain[: max(0, len(plain) - self.keep_last)]:
            self._remove(info.path)
            del self._index[branch][info.step]

