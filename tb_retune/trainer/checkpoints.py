"""The checkpoint store: model weights and optimizer state, per branch.

``checkpoints/<branch>/step-<step>--<node>--<kind>.ckpt`` holds every model
weight and every optimizer variable (slots, iteration count) by variable path,
and the metadata (step, epoch, hyperparameters in force). The file name
carries what the index needs, so listing the folder is the index.

The format is raw, to cost no more than the bytes: a magic line, a JSON
header (metadata and, per variable, its key, dtype, shape and offset), then
the buffers, each 64-byte aligned. No compression and no checksum pass: the
durability comes from fsync and the atomic rename.

A checkpoint is written to a hidden temporary file, fsynced, then renamed:
a crash in the middle leaves a ``.tmp`` file that is never read (and is swept
on the next start) and the previous checkpoints intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tb_retune._errors import CheckpointError
from tb_retune.experiment.atomic import atomic_open, fsync_dir
from tb_retune.trainer import backend

logger = logging.getLogger("tb_retune")

#: Kinds a retention policy never removes: the state just before a change,
#: the first state of a branch, and the last state of a run.
KEPT_KINDS = frozenset({"boundary", "branch", "final"})
_NAME = re.compile(r"^step-(\d{10})--(.+)--([a-z]+)\.ckpt$")
MAGIC = b"TBRETUNE-CKPT-1\n"
_ALIGN = 64


@dataclasses.dataclass
class Snapshot:
    """The values of a checkpoint, copied on the training thread; written later."""

    branch: str
    step: int
    node: str
    kind: str
    meta: dict[str, Any]
    keys: list[str]
    arrays: list[np.ndarray]


def _write_raw(f: Any, meta: Mapping[str, Any], keys: list[str], arrays: list[np.ndarray]) -> None:
    entries = []
    offset = 0
    for key, arr in zip(keys, arrays, strict=True):
        entries.append({"key": key, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset})
        offset += -(-arr.nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"meta": dict(meta), "arrays": entries}, default=str).encode("utf-8")
    start = -(-(len(MAGIC) + 8 + len(header)) // _ALIGN) * _ALIGN
    f.write(MAGIC)
    f.write(len(header).to_bytes(8, "little"))
    f.write(header)
    f.write(b"\0" * (start - len(MAGIC) - 8 - len(header)))
    for arr in arrays:
        data = np.ascontiguousarray(arr)
        f.write(data.data if data.nbytes else b"")
        pad = -data.nbytes % _ALIGN
        if pad:
            f.write(b"\0" * pad)


def _read_header(f: Any, path: str) -> tuple[dict[str, Any], int]:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise CheckpointError(f"checkpoint {path} is not a tb-retune checkpoint (bad magic)")
    size = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(size).decode("utf-8"))
    start = -(-(len(MAGIC) + 8 + size) // _ALIGN) * _ALIGN
    return header, start


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    branch: str
    step: int
    node: str
    kind: str
    path: str


def _variable_key(variable: Any, prefix: str, seen: dict[str, int]) -> str:
    path = getattr(variable, "path", None) or getattr(variable, "name", "var")
    key = f"{prefix}/{path}"
    n = seen.get(key, 0)
    seen[key] = n + 1
    return key if n == 0 else f"{key}#{n}"


def _optimizer_variables(optimizer: Any) -> list[Any]:
    # The learning rate lives in the metadata with the other hyperparameters;
    # it may be replaced by a new variable (schedule -> constant).
    lr = getattr(optimizer, "_learning_rate", None)
    return [v for v in optimizer.variables if v is not lr]


def collect_variables(model: Any, optimizer: Any) -> list[tuple[str, Any]]:
    seen: dict[str, int] = {}
    out = [(_variable_key(v, "model", seen), v) for v in model.weights]
    out += [(_variable_key(v, "optimizer", seen), v) for v in _optimizer_variables(optimizer)]
    return out


class CheckpointStore:
    """Saves, lists, loads and prunes the checkpoints of one experiment.

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
                m = _NAME.match(name)
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
        infos = self.infos(branch)
        return infos[-1] if infos else None

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
        """Copies the current values (on the training thread; cheap)."""
        variables = collect_variables(model, optimizer)
        keys = [key for key, _ in variables]
        # A fresh copy, which later updates of the variable do not touch.
        arrays = [backend.to_numpy(var, key) for key, var in variables]
        full_meta = dict(meta)
        full_meta.update({"branch": branch, "step": step, "node": node, "kind": kind})
        return Snapshot(branch, step, node, kind, full_meta, keys, arrays)

    def write(self, snap: Snapshot) -> CheckpointInfo:
        """Writes a snapshot, fsyncs it and publishes it (any thread)."""
        bdir = os.path.join(self.folder, snap.branch)
        os.makedirs(bdir, exist_ok=True)
        final = self._path(snap.branch, snap.step, snap.node, snap.kind)
        with atomic_open(final, prefix=".tmp-") as f:
            _write_raw(f, snap.meta, snap.keys, snap.arrays)
        info = CheckpointInfo(snap.branch, snap.step, snap.node, snap.kind, final)
        with self._lock:
            self._add(info)
            self._prune(snap.branch)
        return info

    def save(self, model: Any, optimizer: Any, *, branch: str, step: int, node: str, kind: str,
             meta: Mapping[str, Any]) -> CheckpointInfo:
        """Writes a checkpoint of the current state and publishes it atomically."""
        return self.write(self.snapshot(model, optimizer, branch=branch, step=step, node=node,
                                        kind=kind, meta=meta))

    def fork(self, source: CheckpointInfo, *, branch: str, node: str) -> CheckpointInfo:
        """Makes ``source`` the first checkpoint of a new branch (a hard link)."""
        bdir = os.path.join(self.folder, branch)
        os.makedirs(bdir, exist_ok=True)
        final = self._path(branch, source.step, node, "branch")
        fd, tmp = tempfile.mkstemp(dir=bdir, prefix=".tmp-", suffix=".ckpt")
        os.close(fd)
        os.unlink(tmp)
        try:
            os.link(source.path, tmp)
        except OSError:
            shutil.copyfile(source.path, tmp)
        os.replace(tmp, final)
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
            self._rename(info.path, final)
            self._index[branch][step] = CheckpointInfo(branch, step, info.node, kind, final)

    def _prune(self, branch: str) -> None:
        if self.keep_last is None:
            return
        plain = [i for i in self.infos(branch) if i.kind not in KEPT_KINDS]
        for info in plain[: max(0, len(plain) - self.keep_last)]:
            self._remove(info.path)
            del self._index[branch][info.step]

    # -- reading -----------------------------------------------------------
    @staticmethod
    def read_arrays(info: CheckpointInfo) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The metadata and the arrays, read straight into their buffers."""
        saved: dict[str, np.ndarray] = {}
        try:
            with open(info.path, "rb", buffering=0) as f:
                header, start = _read_header(f, info.path)
                for entry in header["arrays"]:
                    arr = np.empty(entry["shape"], dtype=np.dtype(entry["dtype"]))
                    f.seek(start + int(entry["offset"]))
                    view = arr.reshape(-1).view(np.uint8).data if arr.nbytes else memoryview(b"")
                    got = 0
                    while got < arr.nbytes:
                        n = f.readinto(view[got:])
                        if not n:
                            raise ValueError(f"{entry['key']} is cut short")
                        got += n
                    saved[entry["key"]] = arr
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {info.path} is unreadable: {e}") from None
        return dict(header["meta"]), saved

    def load(self, model: Any, optimizer: Any, info: CheckpointInfo) -> dict[str, Any]:
        """Assigns the checkpoint's values to the model and optimizer.

        Variables are matched by position (by path for optimizer slots that
        the checkpoint lacks, which start at zero). Raises CheckpointError,
        before assigning anything, when the checkpoint does not fit.
        """
        meta, saved = self.read_arrays(info)
        variables = collect_variables(model, optimizer)
        plan: list[tuple[Any, np.ndarray]] = []
        name = os.path.basename(info.path)
        for section in ("model/", "optimizer/"):
            ours = [(k, v) for k, v in variables if k.startswith(section)]
            theirs = [(k, a) for k, a in saved.items() if k.startswith(section)]
            same_layout = len(ours) == len(theirs) and all(
                tuple(a.shape) == tuple(v.shape) for (_, v), (_, a) in zip(ours, theirs, strict=True)
            )
            if same_layout:
                # By position: variable paths depend on Keras's automatic
                # names (dense_1, dense_2, ...), the order does not.
                plan.extend((v, a) for (_, v), (_, a) in zip(ours, theirs, strict=True))
                continue
            if section == "model/":
                raise CheckpointError(
                    f"checkpoint {name} does not fit this model: it holds {len(theirs)} weights "
                    f"with shapes {[tuple(a.shape) for _, a in theirs][:6]}..., the model has {len(ours)} "
                    f"with shapes {[tuple(v.shape) for _, v in ours][:6]}...; was the model changed?"
                )
            # Optimizer slots turned on after the checkpoint (e.g. momentum
            # from 0): match by path and start the missing ones at zero.
            by_path = dict(theirs)
            for key, var in ours:
                value = by_path.get(key)
                if value is None or tuple(value.shape) != tuple(var.shape):
                    value = np.zeros(tuple(var.shape), dtype=np.dtype(var.dtype))
                plan.append((var, value))
        for var, value in plan:
            var.assign(value)
        return meta

    def all_infos(self) -> Iterable[CheckpointInfo]:
        for branch in sorted(self._index):
            yield from self.infos(branch)
