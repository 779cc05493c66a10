"""The checkpoint store of a follower process (multi-process JAX): reads only.

Every process of a data-parallel job holds the same replicated state and runs
the same controller code on the same agreed inputs (``distributed.Cluster``),
so every process takes the same checkpoint decisions. Only the leader
(process 0) writes the files; a follower keeps the same index, with the
leader's paths, and reads the leader's files when a restore or a resume
loads one (waiting, if the leader's writer thread has not renamed it into
place yet).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import BinaryIO

from tb_retune._errors import CheckpointError
from tb_retune.trainer.checkpoints import CheckpointInfo, CheckpointStore, Snapshot

__all__ = ["FollowerStore"]


class FollowerStore(CheckpointStore):
    """A :class:`CheckpointStore` over the leader's folder that never writes.

    Args:
        folder: The shared ``<experiment>/checkpoints``.
        keep_last: As the leader's (the same retention decisions).
        wait_s: How long a load waits for the leader's file.
    """

    def __init__(self, folder: str, keep_last: int | None = 5, *, wait_s: float = 300.0) -> None:
        self.wait_s = wait_s
        super().__init__(folder, keep_last)

    def _remove(self, path: str) -> None:
        pass  # the leader removes it

    def _rename(self, source: str, target: str) -> None:
        pass  # the leader renames it

    def write(self, snap: Snapshot) -> CheckpointInfo:
        info = CheckpointInfo(snap.branch, snap.step, snap.node, snap.kind,
                              self._path(snap.branch, snap.step, snap.node, snap.kind))
        with self._lock:
            self._add(info)
            self._prune(snap.branch)
        return info

    def fork(self, source: CheckpointInfo, *, branch: str, node: str) -> CheckpointInfo:
        info = CheckpointInfo(branch, source.step, node, "branch", self._path(branch, source.step, node, "branch"))
        with self._lock:
            self._add(info)
        return info

    @contextlib.contextmanager
    def _opened(self, info: CheckpointInfo) -> Iterator[tuple[CheckpointInfo, BinaryIO]]:
        """Waits for the leader's file (its writer thread may not have renamed it into place yet)."""
        deadline = time.monotonic() + self.wait_s
        while True:
            with self._lock:
                path = self._resolve(info.branch, info.step).path
            if os.path.exists(path):
                break
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"checkpoint {path} was not written by the leader (process 0) within "
                    f"{self.wait_s:.0f}s; every process must share the experiment folder"
                )
            time.sleep(0.01)
        with super()._opened(info) as opened:
            yield opened

    def _set_aside(self, info: CheckpointInfo, f: BinaryIO) -> str | None:
        return None  # the leader sets a bad file aside
