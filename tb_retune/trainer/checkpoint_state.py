"""The state a checkpoint holds: which variables, how they are read, and how they go back.

A checkpoint holds every model weight and every optimizer variable but the
learning rate (slots, iteration count), keyed by variable path. On the
training thread, :func:`take_snapshot` reads each variable once
(:func:`read_value`) and copies it into one buffer laid out as the file's
data region, so the writer thread writes it without another copy. On
restore, :func:`assignment_plan` matches the saved arrays to the variables
before anything is assigned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tb_retune._errors import CheckpointError
from tb_retune.trainer import checkpoint_format as fmt


@dataclasses.dataclass
class Snapshot:
    """The values of a checkpoint, copied on the training thread; written later.

    ``arrays`` are views into ``buffer``, one allocation laid out exactly as
    the file's data region (``entries``), so the write is one pass over it.
    A snapshot built by hand (``buffer`` None) is laid out at write time.
    """

    branch: str
    step: int
    node: str
    kind: str
    meta: dict[str, Any]
    keys: list[str]
    arrays: list[np.ndarray]
    buffer: np.ndarray | None = None
    entries: list[fmt.Entry] | None = None


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


def read_value(variable: Any) -> np.ndarray:
    """A variable's current value as a host array: the store's one read of a variable.

    On TensorFlow the read tensor is viewed without a copy (TensorFlow copies
    the variable's buffer on its next update, so the view does not change);
    elsewhere ``Variable.numpy()``. The caller copies it into the snapshot's
    buffer at once, so one copy is made in all.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        value = getattr(variable, "value", None)
        if isinstance(value, tf.Variable):
            if not isinstance(value, tf.distribute.DistributedValues):
                # One ReadVariableOp, as convert_to_tensor runs it, without the
                # conversion machinery around it (a third of the time).
                return np.asarray(tf.raw_ops.ReadVariableOp(resource=value.handle, dtype=value.dtype))
            return np.asarray(tf.convert_to_tensor(value))
    from tb_retune.trainer import backend

    return backend.to_numpy(variable)  # says what to do when a variable has no value (JAX mid-epoch)


def assign_copies_arrays() -> bool:
    """Whether ``Variable.assign(array)`` copies a NumPy array, so that its memory can be reused at once.

    TensorFlow does (``convert_to_eager_tensor`` copies every ndarray); JAX
    on CPU may keep a view of it, and so may others: they get arrays of
    their own.
    """
    import keras

    return bool(keras.backend.backend() == "tensorflow")


def take_snapshot(variables: list[tuple[str, Any]], buffer_of: Callable[[int], np.ndarray], *, branch: str,
                  step: int, node: str, kind: str, meta: dict[str, Any]) -> Snapshot:
    """Copies the variables' values into one buffer of ``buffer_of(nbytes)`` (one memory copy)."""
    keys = [key for key, _ in variables]
    values = [read_value(var) for _, var in variables]
    entries, total = fmt.plan(keys, [(v.dtype, v.shape) for v in values])
    buffer = buffer_of(total)
    arrays = []
    for entry, value in zip(entries, values, strict=True):
        end = entry.offset + entry.nbytes
        dst = buffer[entry.offset:end].view(value.dtype).reshape(value.shape)
        np.copyto(dst, value, casting="no")
        buffer[end:fmt.aligned(end)] = 0  # the padding, written as it is
        arrays.append(dst)
    return Snapshot(branch, step, node, kind, meta, keys, arrays, buffer, entries)


def assignment_plan(variables: list[tuple[str, Any]], saved: Mapping[str, np.ndarray],
                    name: str) -> list[tuple[Any, np.ndarray]]:
    """Which saved array goes to which variable; CheckpointError when the model does not fit.

    Variables are matched by position (by path for optimizer slots that the
    checkpoint lacks, which start at zero).
    """
    plan: list[tuple[Any, np.ndarray]] = []
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
    return plan
