"""Captures the training configuration recorded at the root and every change."""

from __future__ import annotations

import functools
import math
import os
import platform
import socket
import subprocess
import sys
from typing import Any

from tb_retune._version import __version__


@functools.lru_cache(maxsize=8)
def _git(folder: str) -> dict[str, Any] | None:
    """The commit of the script's repository and whether its tracked files
    differ from it, once per process: the code a process runs is what it
    loaded (two ``git`` processes per ``fit`` cost milliseconds of CPU)."""
    try:
        commit = subprocess.run(
            ["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def _git_copy(folder: str) -> dict[str, Any] | None:
    found = _git(folder)
    return dict(found) if found is not None else None


def environment() -> dict[str, Any]:
    """What does not change during a run: versions, host, command, git."""
    import keras

    from tb_retune.trainer import backend

    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else None
    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        **backend.versions(),  # the backend and its packages' versions, e.g. "tensorflow": "2.21.0"
        "tb_retune": __version__,
        "hostname": socket.gethostname(),
        "command": list(sys.argv),
        "script": script,
        "git": _git_copy(os.path.dirname(script)) if script and os.path.exists(script) else None,
    }


def model_summary(model: Any) -> dict[str, Any]:
    layers = []
    for layer in getattr(model, "layers", []):
        try:
            shape = layer.output.shape
            out_shape = list(shape) if shape is not None else None
        except Exception:
            out_shape = None
        layers.append(
            {
                "name": layer.name,
                "class_name": type(layer).__name__,
                "output_shape": out_shape,
                "params": int(layer.count_params()) if getattr(layer, "built", False) else None,
            }
        )
    try:
        total = int(model.count_params())
    except Exception:
        total = None
    trainable = sum(math.prod(int(d) for d in v.shape) for v in model.trainable_weights) if model.built else None
    return {"name": getattr(model, "name", None), "class_name": type(model).__name__,
            "layers": layers, "total_params": total, "trainable_params": trainable}


def training_config(model: Any, params: dict[str, Any] | None) -> dict[str, Any]:
    import keras

    loss = getattr(model, "loss", None)
    metrics = []
    for m in getattr(model, "metrics", []) or []:
        metrics.append(getattr(m, "name", str(m)))
    params = dict(params or {})
    seed = os.environ.get("PYTHONHASHSEED")
    try:
        from keras.src.backend.common import global_state

        seed_gen = global_state.get_global_attribute("global_seed_generator")
        if seed_gen is not None:
            seed = getattr(seed_gen, "_initial_seed", seed)
    except Exception:
        pass
    return {
        "loss": loss if isinstance(loss, str) else getattr(loss, "name", None) or repr(loss),
        "metrics": metrics,
        "batch_size": params.get("batch_size"),
        "epochs": params.get("epochs"),
        "steps_per_epoch": params.get("steps"),
        "seed": seed,
        "dtype_policy": keras.config.dtype_policy().name,
    }
