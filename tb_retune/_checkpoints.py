"""The checkpoint store: model weights and optimizer state, per branch.

``checkpoints/<branch>/step-<step>--<node>--<kind>.npz`` holds every model
weight and every optimizer variable (slots, iteration count) by variable path,
and a JSON ``__meta__`` entry (step, epoch, hyperparameters in force). The
file name carries what the index needs, so listing the folder is the index.

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
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tb_retune._atomic import atomic_open, fsync_dir
from tb_retune._errors import CheckpointError

logger = logging.getLogger("tb_retune")

#: Kinds a retention policy never removes: the state just before a change,
#: the first state of a branch, and the last state of a run.
KEPT_KINDS = frozenset({"boundary", "branch", "final"})
_NAME = re.compile(r"^step-(\d{10})--(.+)--([a-z]+)\.npz$")


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
                    with contextlib.suppress(OSError):
                        os.unlink(path)
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
                with contextlib.suppress(OSError):
                    os.unlink(info.path)
                return
            with contextlib.suppress(OSError):
                os.unlink(old.path)
        self._index[info.branch][info.step] = info

    def steps(self) -> dict[str, list[int]]:
        return {b: sorted(s) for b, s in self._index.items() if s}

    def infos(self, branch: str) -> list[CheckpointInfo]:
        return [self._index[branch][s] for s in sorted(self._index.get(branch, {}))]

    def node_index(self) -> dict[str, list[dict[str, Any]]]:
        return {b: [{"step": i.step, "node": i.node} for i in self.infos(b)] for b in self._index}

    def get(self, branch: str, step: int) -> CheckpointInfo | None:
        return self._index.get(branch, {}).get(step)

    def latest(self, branch: str) -> CheckpointInfo | None:
        infos = self.infos(branch)
        return infos[-1] if infos else None

    # -- writing -----------------------------------------------------------
    def _path(self, branch: str, step: int, node: str, kind: str) -> str:
        return os.path.join(self.folder, branch, f"step-{step:010d}--{node}--{kind}.npz")

    def save(
        self,
        model: Any,
        optimizer: Any,
        *,
        branch: str,
        step: int,
        node: str,
        kind: str,
        meta: Mapping[str, Any],
    ) -> CheckpointInfo:
        """Writes a checkpoint of the current state and publishes it atomically."""
        variables = collect_variables(model, optimizer)
        arrays: dict[str, np.ndarray] = {}
        keys = []
        for i, (key, var) in enumerate(variables):
            arrays[f"v{i}"] = np.asarray(var.numpy())
            keys.append(key)
        full_meta = dict(meta)
        full_meta.update({"branch": branch, "step": step, "node": node, "kind": kind, "keys": keys})
        arrays["__meta__"] = np.frombuffer(json.dumps(full_meta, default=str).encode("utf-8"), dtype=np.uint8)
        bdir = os.path.join(self.folder, branch)
        os.makedirs(bdir, exist_ok=True)
        final = self._path(branch, step, node, kind)
        with atomic_open(final, prefix=".tmp-") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        info = CheckpointInfo(branch, step, node, kind, final)
        self._add(info)
        self._prune(branch)
        return info

    def fork(self, source: CheckpointInfo, *, branch: str, node: str) -> CheckpointInfo:
        """Makes ``source`` the first checkpoint of a new branch (a hard link)."""
        bdir = os.path.join(self.folder, branch)
        os.makedirs(bdir, exist_ok=True)
        final = self._path(branch, source.step, node, "branch")
        fd, tmp = tempfile.mkstemp(dir=bdir, prefix=".tmp-", suffix=".npz")
        os.close(fd)
        os.unlink(tmp)
        try:
            os.link(source.path, tmp)
        except OSError:
            shutil.copyfile(source.path, tmp)
        os.replace(tmp, final)
        fsync_dir(bdir)
        info = CheckpointInfo(branch, source.step, node, "branch", final)
        self._add(info)
        return info

    def promote(self, branch: str, step: int, kind: str) -> None:
        """Makes the checkpoint at ``step`` one of a kept kind (a rename)."""
        info = self.get(branch, step)
        if info is None or info.kind in KEPT_KINDS:
            return
        final = self._path(branch, step, info.node, kind)
        os.replace(info.path, final)
        fsync_dir(os.path.dirname(final))
        self._index[branch][step] = CheckpointInfo(branch, step, info.node, kind, final)

    def _prune(self, branch: str) -> None:
        if self.keep_last is None:
            return
        plain = [i for i in self.infos(branch) if i.kind not in KEPT_KINDS]
        for info in plain[: max(0, len(plain) - self.keep_last)]:
            with contextlib.suppress(OSError):
                os.unlink(info.path)
            del self._index[branch][info.step]

    # -- reading -----------------------------------------------------------
    @staticmethod
    def read_meta(info: CheckpointInfo) -> dict[str, Any]:
        try:
            with np.load(info.path, allow_pickle=False) as data:
                return dict(json.loads(bytes(data["__meta__"]).decode("utf-8")))
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {info.path} is unreadable: {e}") from None

    def load(self, model: Any, optimizer: Any, info: CheckpointInfo) -> dict[str, Any]:
        """Assigns the checkpoint's values to the model and optimizer.

        Variables are matched by path; an optimizer slot that the checkpoint
        lacks (turned on after it was taken) is set to zero. Raises
        CheckpointError, before assigning anything, when the checkpoint does
        not fit the model.
        """
        try:
            data = np.load(info.path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {info.path} is unreadable: {e}") from None
        with data:
            meta = json.loads(bytes(data["__meta__"]).decode("utf-8"))
            saved = {key: data[f"v{i}"] for i, key in enumerate(meta["keys"])}
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
        return dict(meta)

    def all_infos(self) -> Iterable[CheckpointInfo]:
        for branch in sorted(self._index):
            yield from self.infos(branch)
