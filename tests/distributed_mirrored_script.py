"""A ``fit`` under ``tf.distribute.MirroredStrategy`` on two logical CPUs.

Run by ``tests/test_distributed_mirrored.py`` in a process of its own: the
logical devices must be configured before anything touches TensorFlow. It
changes, freezes, restores, stops and resumes, and writes what it saw (every
replica's weights per step) to ``<logdir>/../observed.npz`` and a JSON summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tb_retune  # noqa: E402


def save(path: str, obj: Any) -> None:
    tmp = path + ".swp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def replicas(strategy: Any, model: Any) -> list[list[np.ndarray]]:
    """Per replica, the values of every model weight (copies)."""
    per = [[np.array(t) for t in strategy.experimental_local_results(w.value)] for w in model.weights]
    return [[p[r] for p in per] for r in range(strategy.num_replicas_in_sync)]


def build(strategy: Any) -> Any:
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main(logdir: str) -> None:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    control = os.path.join(logdir, "retune.json")
    seen: dict[str, Any] = {"steps": [], "freeze_step": None, "restore_step": None}
    weights: dict[str, list[list[np.ndarray]]] = {}

    model = build(strategy)
    callback = tb_retune.RetuneCallback(logdir, verbose=False, keep_checkpoints=None)

    class Probe(keras.callbacks.Callback):
        """Records every replica's weights before each step; drives the scenario."""

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            c = callback.controller
            step = int(np.asarray(self.model.optimizer.iterations))
            branch = c.branch
            weights[f"{branch}@{step}"] = replicas(strategy, self.model)
            seen["steps"].append([branch, step, c.session.hyperparameters_now() if c.session else None])
            request = None
            if branch == "main" and step == 6 and seen["freeze_step"] is None:
                seen["freeze_step"] = step + 1  # taken at the next batch boundary
                request = {"hyperparameters": {"learning_rate": 1e-12, "momentum": 0.0}}
            elif branch == "main" and step == 12:
                seen["restore_step"] = 7  # the boundary checkpoint, just before the freeze
                request = {"hyperparameters": {"learning_rate": 1e-12, "momentum": 0.0},
                           "restore": {"id": "r-1", "branch": "main", "step": 7}}
            elif branch != "main" and step == 14:
                request = {"stop": True}
            if request is not None:
                posted = c.mailbox.posted
                save(control, request)
                # Deterministic: the revision is in the mailbox before the next boundary.
                assert c.mailbox.wait_posted(posted, timeout=60), "the watcher did not see the save"

    model.fit(x, y, batch_size=16, epochs=6, shuffle=False, verbose=0, callbacks=[callback, Probe()])
    seen["after_fit"] = {"branch": callback.controller.branch, "step": int(np.asarray(model.optimizer.iterations))}
    final = replicas(strategy, model)
    from tb_retune.trainer.checkpoints import collect_variables

    seen["variables"] = {k: list(v.shape) for k, v in collect_variables(model, model.optimizer)}

    # Resume: a fresh model in the strategy's scope, the same folder, and a schedule entry.
    save(control, {"schedule": [{"at_step": 19, "hyperparameters": {"learning_rate": 0.01}}]})
    time.sleep(0.1)
    model2 = build(strategy)
    callback = tb_retune.RetuneCallback(logdir, verbose=False, keep_checkpoints=None)
    first: dict[str, Any] = {"lr_at": {}}

    class First(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            step = int(np.asarray(self.model.optimizer.iterations))
            first["lr_at"][step] = float(np.asarray(self.model.optimizer.learning_rate))
            if "step" not in first:
                first["step"] = int(np.asarray(self.model.optimizer.iterations))
                first["branch"] = callback.controller.branch
                first["lr"] = float(np.asarray(self.model.optimizer.learning_rate))
                weights["resumed"] = replicas(strategy, self.model)

    model2.fit(x, y, batch_size=16, epochs=6, shuffle=False, verbose=0, callbacks=[callback, First()])
    seen["resumed"] = first
    weights["final"] = final
    flat = {f"{k}|{r}|{i}": a for k, reps in weights.items() for r, ws in enumerate(reps) for i, a in enumerate(ws)}
    np.savez(os.path.join(os.path.dirname(logdir), "observed.npz"), **flat)
    save(os.path.join(os.path.dirname(logdir), "observed.json"), seen)


if __name__ == "__main__":
    main(sys.argv[1])
