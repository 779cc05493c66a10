"""``RetuneCallback`` under ``tf.distribute.MirroredStrategy`` (two logical CPUs).

The scenario runs in a process of its own (``distributed_mirrored_script.py``):
logical devices can only be configured before TensorFlow is first used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from tb_retune.trainer.checkpoints import CheckpointStore

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_mirrored_script.py")


@pytest.fixture(scope="module")
def observed(tmp_path_factory: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mirrored")
    logdir = str(root / "exp")
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    proc = subprocess.run([sys.executable, SCRIPT, logdir], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(root / "observed.json") as f:
        seen = json.load(f)
    arrays = dict(np.load(root / "observed.npz"))
    weights: dict[str, list[list[np.ndarray]]] = {}
    for key in sorted(arrays, key=lambda k: (k.split("|")[0], int(k.split("|")[1]), int(k.split("|")[2]))):
        name, r, _ = key.split("|")
        reps = weights.setdefault(name, [])
        if len(reps) <= int(r):
            reps.append([])
        reps[int(r)].append(arrays[key])
    with open(os.path.join(logdir, "retune-status.json")) as f:
        status = json.load(f)
    return {"seen": seen, "weights": weights, "status": status, "logdir": logdir}


def _equal(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_every_replica_holds_the_same_weights(observed: dict[str, Any]) -> None:
    for name, reps in observed["weights"].items():
        assert len(reps) == 2, name
        assert _equal([reps[0]], [reps[1]]), f"the replicas differ at {name}"


@pytest.mark.slow
def test_a_tiny_learning_rate_freezes_every_replica_from_the_next_step(observed: dict[str, Any]) -> None:
    w, seen = observed["weights"], observed["seen"]
    at = seen["freeze_step"]
    hp = {(b, s): h for b, s, h in seen["steps"]}
    assert hp[("main", at)]["learning_rate"] == pytest.approx(1e-12) and hp[("main", at)]["momentum"] == 0
    assert not _equal(w[f"main@{at - 1}"], w[f"main@{at}"]), "training before the change moved the weights"
    for step in range(at + 1, 13):
        assert _equal(w[f"main@{at}"], w[f"main@{step}"]), f"a replica moved at step {step}"
    applied = [a for a in observed["status"]["applied"] if a["kind"] == "control"]
    assert applied[0]["step"] == at


@pytest.mark.slow
def test_a_restore_gives_the_checkpoint_bit_for_bit_on_every_replica(observed: dict[str, Any]) -> None:
    w, seen, status = observed["weights"], observed["seen"], observed["status"]
    at = seen["restore_step"]
    branch = f"main-s{at}"
    assert status["restores_done"] == ["r-1"]
    assert _equal(w[f"{branch}@{at}"], w[f"main@{at}"])
    # The checkpoint's hyperparameters came back through the mirrored variable: it trains again.
    hp = {(b, s): h for b, s, h in seen["steps"]}
    assert hp[(branch, at)]["learning_rate"] == pytest.approx(0.05) and hp[(branch, at)]["momentum"] == 0.9
    assert not _equal(w[f"{branch}@{at}"], w[f"{branch}@{at + 1}"])
    # The checkpoint on disk holds each variable once, with its own shape, equal to every replica.
    store = CheckpointStore(os.path.join(observed["logdir"], "checkpoints"), keep_last=None)
    info = store.get("main", at)
    assert info is not None and info.kind == "boundary"
    _, arrays = store.read_arrays(info)
    assert {k: list(v.shape) for k, v in arrays.items()} == seen["variables"]
    model_arrays = [a for k, a in arrays.items() if k.startswith("model/")]
    for replica in w[f"main@{at}"]:
        assert all(np.array_equal(a, b) for a, b in zip(model_arrays, replica, strict=True))


@pytest.mark.slow
def test_stop_then_resume_continues_on_the_same_branch_and_weights(observed: dict[str, Any]) -> None:
    seen, w = observed["seen"], observed["weights"]
    after, resumed = seen["after_fit"], seen["resumed"]
    assert after["branch"] == "main-s7" and after["step"] == 16  # stopped at the boundary of step 15's batch
    assert resumed["branch"] == after["branch"] and resumed["step"] == after["step"]
    assert resumed["lr"] == pytest.approx(0.05)
    assert _equal(w["resumed"], w["final"])
    # A schedule entry fires at its step, through the mirrored learning-rate variable.
    lr_at = {int(k): v for k, v in resumed["lr_at"].items()}
    assert lr_at[18] == pytest.approx(0.05) and lr_at[19] == pytest.approx(0.01)
    assert observed["status"]["state"] == "finished"
