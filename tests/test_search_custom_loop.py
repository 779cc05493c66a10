"""A search in a custom training loop driven by ``RetuneController``: no
``fit``, no compiled model; the trials are restores that the loop's
``controller.function`` retraces for, and each trial's value is its last
logged ``loss`` (the loop gives no evaluation data)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

from tests.conftest import read_status


def test_a_search_in_a_custom_loop(tmp_path: Any) -> None:
    import keras
    import tensorflow as tf

    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"search": {"id": "s-loop", "space": {"learning_rate": {"low": 1e-3, "high": 0.1, "log": True},
                                                         "momentum": {"low": 0.0, "high": 0.9}},
                              "trials": 3, "steps_per_trial": 10, "objective": {"metric": "loss"}}}, f)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(32, 4)).astype("float32"))
    y = tf.constant(rng.normal(size=(32, 1)).astype("float32"))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(learning_rate=0.01, momentum=0.5)
    controller = tb_retune.RetuneController(logdir, verbose=False, update_freq=2)
    controller.begin(model, opt)

    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    train_step = controller.function(step)
    versions = set()
    for _ in range(60):
        controller.before_step()
        loss = train_step(x, y)
        versions.add(controller.trace_version)
        controller.after_step({"loss": float(loss)})
    controller.end_epoch(0, {"loss": float(loss)})
    controller.end()
    status = read_status(logdir)
    entry = status["searches"]["s-loop"]
    assert status["errors"] == [] and entry["state"] == "done", (status["errors"], entry)
    source = entry["source"]["step"]
    assert [t["state"] for t in entry["trials"]] == ["complete"] * 3
    assert all(t["step"] == source + 10 and t["value"] > 0 for t in entry["trials"])
    assert len(versions) >= 3  # momentum is baked into the trace: each trial retraced
    assert status["branch"] == entry["outcome"]["branch"] == "main-s-loop-best"
    best = entry["best"]
    assert float(opt.momentum) == pytest.approx(best["hyperparameters"]["momentum"])
    assert {b for b in status["branches"]} >= {f"main-s-loop-t{n}" for n in range(3)}
