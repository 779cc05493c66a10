"""The checkpoint store: model weights and optimizer state, per branch.

``checkpoints/<branch>/step-<step>--<node>--<kind>.ckpt`` holds every model
weight and every optimizer variable (slots, iteration count) by variable path,
and the metadata (step, epoch, hyperparameters in force). The file name
carries what the index needs, so listing the folder is the index. The file
format, with its checksums, is in :mod:`tb_retune.trainer.checkpoint_format`.

A checkpoint is written to a hidden temporary file, fsynced, then renamed:
a crash in the middle leaves a ``.tmp`` file that is never read (and is swept
on the next start) and the previous checkpoints intact. A checkpoint that
fails its checks when read (cut short, empty, not ours, damaged, holding no
weights, a negative or inconsistent step) raises :class:`CheckpointError`
naming the file and what is wrong, and is set aside as ``<name>.bad``: out of
the index, never deleted.

A checkpoint's identity is ``(branch, step)``. :meth:`CheckpointStore.load`,
:meth:`~CheckpointStore.fork` and :meth:`~CheckpointStore.promote` find its
file under the store's lock, so a :class:`CheckpointInfo` captured on one
thread stays usable after another thread renamed the file (a promotion).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from tb_retune._errors import CheckpointError
from tb_retune.experiment.atomic import atomic_open, fsync_dir
from tb_retune.trainer import checkpoint_format as fmt
from tb_retune.trainer.checkpoint_state import (
    Snapshot,
    assign_copies_arrays,
    assignment_plan,
    collect_variables,
    read_value,
    take_snapshot,
)

__all__ = ["KEPT_KINDS", "CheckpointInfo", "CheckpointStore", "SkippedCheckpoint", "Snapshot",
           "collect_variables", "read_value"]

logger = logging.getLogger("tb_retune")

#: Kinds a retention policy never removes: the state just before a change,
#: the first state of a branch, and the last state of a run.
KEPT_KINDS = frozenset({"boundary", "branch", "final"})
_NAME = re.compile(r"^step-(\d{10})--(.+)--([a-z]+)\.ckpt$")
MAGIC = fmt.MAGIC
#: A checkpoint that failed its checks is renamed to ``<name>.bad`` (then
#: ``.bad-2``, ...): out of the index and of every listing, but kept.
BAD_SUFFIX = ".bad"


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    branch: str
    step: int
    node: str
    kind: str
    path: str


@dataclasses.dataclass(frozen=True)
class SkippedCheckpoint:
    """A checkpoint :meth:`CheckpointStore.latest_good` passed over, and why."""

    info: CheckpointInfo
    reason: str
    moved_to: str | None  # where it was set aside; None if it stayed (e.g. a permission error)


class _SetAside(CheckpointError):
    """A bad checkpoint, and where its file was moved (None: it could not be)."""

    def __init__(self, message: str, moved_to: str | None) -> None:
        super().__init__(message)
        self.moved_to = moved_to


class CheckpointStore:
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
        self.folder = folder
        self.keep_last = keep_last
        os.makedirs(folder, exist_ok=True)
        self._index: dict[str, dict[int, CheckpointInfo]] = {}
        self._lock = threading.RLock()
        #: The checkpoints the last :meth:`latest_good` call passed over,
        #: newest first, for the caller to report (status, log).
        self.last_skipped: list[SkippedCheckpoint] = []
        # The buffer of the last snapshot written, for the next snapshot: a
        # fresh buffer costs page faults that take several times the copy.
        self._spare: np.ndarray | None = None
        self._sweep_and_scan()

    # -- index -------------------------------------------------------------
    def _sweep_and_scan(self) -> None:
        self._index.clear()
        for branch in sorted(os.listdir(self.folder)):
            bdir = os.path.join(self.folder, branch)
            if not os.path.isdir(bdir):
                continue
            for name in os.listdir(bdir):
                path = os.path.join(bdir, name)
                if name.startswith("."):
                    # A temporary file from a write that never finished.
                    self._remove(path)
                    continue
                m = _NAME.match(name)  # a set-aside ``*.ckpt.bad`` does not match
                if not m:
                    continue
                info = CheckpointInfo(branch, int(m.group(1)), m.group(2), m.group(3), path)
                self._add(info)

    def _add(self, info: CheckpointInfo) -> None:
        old = self._index.setdefault(info.branch, {}).get(info.step)
        if old is not None and old.path != info.path:
            # One checkpoint per (branch, step): the newer replaces the older,
            # except that a kept kind is never replaced by a plain one.
            if old.kind in KEPT_KINDS and info.kind not in KEPT_KINDS:
                self._remove(info.path)
                return
            self._remove(old.path)
        self._index[info.branch][info.step] = info

    def _remove(self, path: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)

    def _rename(self, source: str, target: str) -> None:
        os.replace(source, target)
        fsync_dir(os.path.dirname(target))

    def steps(self) -> dict[str, list[int]]:
        with self._lock:
            return {b: sorted(s) for b, s in self._index.items() if s}

    def infos(self, branch: str) -> list[CheckpointInfo]:
        with self._lock:
            return [self._index[branch][s] for s in sorted(self._index.get(branch, {}))]

    def node_index(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {b: [{"step": i.step, "node": i.node} for i in self.infos(b)] for b in self._index}

    def get(self, branch: str, step: int) -> CheckpointInfo | None:
        with self._lock:
            return self._index.get(branch, {}).get(step)

    def latest(self, branch: str) -> CheckpointInfo | None:
        """The newest checkpoint of ``branch`` in the index, unchecked (see :meth:`latest_good`)."""
        infos = self.infos(branch)
        return infos[-1] if infos else None

    def _resolve(self, branch: str, step: int) -> CheckpointInfo:
        """The checkpoint ``(branch, step)`` as the index has it now (call under the lock)."""
        info = self._index.get(branch, {}).get(step)
        if info is None:
            have = ", ".join(map(str, sorted(self._index.get(branch, {})))) or "none"
            raise CheckpointError(f"branch {branch!r} has no checkpoint at step {step} (any more); "
                                  f"its checkpoints are at steps: {have}")
        return info

    @contextlib.contextmanager
    def _opened(self, info: CheckpointInfo) -> Iterator[tuple[CheckpointInfo, BinaryIO]]:
        """Opens ``(info.branch, info.step)``'s file as the index has it now.

        Only the lookup and the open hold the lock: an open file stays
        readable when a promotion renames it or the retention policy
        removes it afterwards.
        """
        with self._lock:
            current = self._resolve(info.branch, info.step)
            try:
                f = open(current.path, "rb", buffering=0)  # noqa: SIM115 (closed below)
            except OSError as e:
                if e.errno == errno.ENOENT:  # gone behind our back: stop listing it
                    del self._index[current.branch][current.step]
                raise CheckpointError(f"checkpoint {current.path} is unreadable: {e}") from None
        try:
            yield current, f
        finally:
            f.close()

    # -- writing -----------------------------------------------------------
    def _path(self, branch: str, step: int, node: str, kind: str) -> str:
        return os.path.join(self.folder, branch, f"step-{step:010d}--{node}--{kind}.ckpt")

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

    def _buffer(self, nbytes: int) -> np.ndarray:
        """The spare buffer when it has ``nbytes``, else a new one."""
        with self._lock:
            if self._spare is not None and len(self._spare) == nbytes:
                buffer, self._spare = self._spare, None
                return buffer
        return fmt.aligned_empty(nbytes)  # aligned for O_DIRECT

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
        with atomic_open(final, prefix=".tmp-") as f:
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
        fd, tmp = tempfile.mkstemp(dir=bdir, prefix=".tmp-", suffix=".ckpt")
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

    # -- checking ----------------------------------------------------------
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

    # -- reading -----------------------------------------------------------
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

    def all_infos(self) -> Iterable[CheckpointInfo]:
        for branch in sorted(self._index):
            yield from self.infos(branch)
