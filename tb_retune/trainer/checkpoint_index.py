"""The index of an experiment's checkpoints: what is in ``checkpoints/``, by ``(branch, step)``.

``checkpoints/<branch>/step-<step>--<node>--<kind>.ckpt``: the file name
carries what the index needs, so listing the folder is the index. A
checkpoint's identity is ``(branch, step)``; every lookup and every open
resolves it under the index's lock, so a :class:`CheckpointInfo` captured on
one thread stays usable after another thread renamed the file (a
promotion). Temporary files of writes that never finished are swept when the
index is built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from tb_retune._errors import CheckpointError
from tb_retune.experiment.atomic import fsync_dir

__all__ = ["BAD_SUFFIX", "KEPT_KINDS", "CheckpointIndex", "CheckpointInfo"]

#: Kinds a retention policy never removes: the state just before a change,
#: the first state of a branch, and the last state of a run.
KEPT_KINDS = frozenset({"boundary", "branch", "final"})
_NAME = re.compile(r"^step-(\d{10})--(.+)--([a-z]+)\.ckpt$")
#: A checkpoint that failed its checks is renamed to ``<name>.bad`` (then
#: ``.bad-2``, ...): out of the index and of every listing, but kept.
BAD_SUFFIX = ".bad"


#: Temporary files are named ``.tmp-<host>-<pid>-...``: whose write it is.
def temporary_prefix() -> str:
    return f".tmp-{_safe(socket.gethostname())}-{os.getpid()}-"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", text) or "host"


#: A temporary file of another machine's process is taken for abandoned after this long.
FOREIGN_TEMPORARY_S = 24 * 3600.0
_TEMP = re.compile(r"^\.tmp-(.+)-(\d+)-")


def abandoned_temporary(name: str, path: str) -> bool:
    """Whether a temporary file is left over from a write that never
    finished: its writer (by host and pid) is gone. A file of another
    machine's process (a search worker on a shared filesystem) is kept for a
    day; one that names no writer (older versions) is abandoned."""
    m = _TEMP.match(name)
    if m is None:
        return True
    host, pid = m.group(1), int(m.group(2))
    if host == _safe(socket.gethostname()):
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, another user's
            return False
        return False
    try:
        return time.time() - os.path.getmtime(path) > FOREIGN_TEMPORARY_S
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    branch: str
    step: int
    node: str
    kind: str
    path: str


class CheckpointIndex:
    """The checkpoints of one experiment's folder, by branch and step, under one lock.

    The file operations (:meth:`_remove`, :meth:`_rename`, :meth:`_opened`)
    are the points where a store that never writes (a follower process's)
    does otherwise.

    Args:
        folder: ``<experiment>/checkpoints``.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self._index: dict[str, dict[int, CheckpointInfo]] = {}
        self._lock = threading.RLock()
        self._sweep_and_scan()

    def _sweep_and_scan(self) -> None:
        self._index.clear()
        for branch in sorted(os.listdir(self.folder)):
            bdir = os.path.join(self.folder, branch)
            if not os.path.isdir(bdir):
                continue
            for name in os.listdir(bdir):
                path = os.path.join(bdir, name)
                if name.startswith("."):
                    if abandoned_temporary(name, path):  # a write that never finished
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

    def rescan(self, branch: str) -> None:
        """Lists the files of ``branch`` again: checkpoints that another
        process wrote or renamed since (a search worker's trial branch; the
        trainer's source, which the trainer keeps by renaming it). Adds what
        it finds and forgets what is gone; removes no file."""
        bdir = os.path.join(self.folder, branch)
        try:
            names = os.listdir(bdir)
        except OSError:
            return
        with self._lock:
            found: dict[int, CheckpointInfo] = {}
            for name in names:
                m = _NAME.match(name)
                if m and not name.startswith("."):
                    info = CheckpointInfo(branch, int(m.group(1)), m.group(2), m.group(3), os.path.join(bdir, name))
                    old = found.get(info.step)
                    if old is None or (info.kind in KEPT_KINDS and old.kind not in KEPT_KINDS):
                        found[info.step] = info
            self._index[branch] = found

    def find(self, branch: str, step: int) -> CheckpointInfo | None:
        """:meth:`get`, and when the index lacks it, after a :meth:`rescan` of the branch."""
        info = self.get(branch, step)
        if info is None:
            self.rescan(branch)
            info = self.get(branch, step)
        return info

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
        removes it afterwards. A file gone behind our back is looked for
        once more under its branch's current names (another process renamed
        it: the trainer keeps a search's source by renaming it).
        """
        with self._lock:
            current = self._resolve(info.branch, info.step)
            try:
                f = open(current.path, "rb", buffering=0)  # noqa: SIM115 (closed below)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise CheckpointError(f"checkpoint {current.path} is unreadable: {e}") from None
                self.rescan(current.branch)
                again = self._index.get(current.branch, {}).get(current.step)
                if again is None or again.path == current.path:
                    self._index.get(current.branch, {}).pop(current.step, None)  # gone: stop listing it
                    raise CheckpointError(f"checkpoint {current.path} is unreadable: {e}") from None
                current = again
                try:
                    f = open(current.path, "rb", buffering=0)  # noqa: SIM115 (closed below)
                except OSError as e2:
                    raise CheckpointError(f"checkpoint {current.path} is unreadable: {e2}") from None
        try:
            yield current, f
        finally:
            f.close()

    def _path(self, branch: str, step: int, node: str, kind: str) -> str:
        return os.path.join(self.folder, branch, f"step-{step:010d}--{node}--{kind}.ckpt")

    def all_infos(self) -> Iterable[CheckpointInfo]:
        for branch in sorted(self._index):
            yield from self.infos(branch)
