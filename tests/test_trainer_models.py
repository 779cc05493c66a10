"""Ordinary Keras models beside the callback: subclassed, unbuilt, custom train_step."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

from tests.conftest import read_status


def two_input_model() -> Any:
    """A subclassed model with two inputs and its own train_step, unbuilt until fit."""
    import keras

    class TwoTower(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.a = keras.layers.Dense(8, activation="relu")
            self.b = keras.layers.Dense(8, activation="relu")
            self.out = keras.layers.Dense(1)

        def call(self, inputs: Any) -> Any:
            xa, xb = inputs
            return self.out(keras.ops.concatenate([self.a(xa), self.b(xb)], axis=-1))

        def train_step(self, data: Any) -> Any:
            import tensorflow as tf

            (xa, xb), y = data
            with tf.GradientTape() as tape:
                pred = self((xa, xb), training=True)
                loss = keras.ops.mean(keras.ops.square(pred - y))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
            return {"loss": loss}

    keras.utils.set_random_seed(0)
    model = TwoTower()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), steps_per_execution=4)
    return model


def two_input_data(n: int = 64) -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    xa = rng.normal(size=(n, 3)).astype("float32")
    xb = rng.normal(size=(n, 5)).astype("float32")
    y = (xa[:, :1] - xb[:, :1]).astype("float32")
    return (xa, xb), y


def test_unbuilt_subclassed_model_with_custom_train_step(tmp_path: Any) -> None:
    import tb_retune
    from tb_retune.trainer.checkpoints import CheckpointStore

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 8, "hyperparameters": {"learning_rate": 0.002, "momentum": 0.5}}]}, f)
    (xa, xb), y = two_input_data()
    model = two_input_model()
    model.fit((xa, xb), y, batch_size=8, epochs=2, verbose=0,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    status = read_status(logdir)
    assert status["state"] == "finished", status.get("error")
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.002)
    assert status["hyperparameters"]["momentum"] == pytest.approx(0.5)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.002)
    # The first checkpoint waits for the first step to build the model: it
    # holds every weight, and so does every other one.
    steps = status["checkpoints"]["main"]
    assert steps[0] == 4 and 8 in steps and 16 in steps, steps
    store = CheckpointStore(os.path.join(logdir, "checkpoints"))
    n_weights = len(model.weights)
    for info in store.all_infos():
        _, arrays = store.read_arrays(info)
        assert len([k for k in arrays if k.startswith("model/")]) == n_weights, info
    # A second run with a fresh (unbuilt) model resumes from the last
    # checkpoint, once its first train call (4 steps) has built it: those
    # steps are undone by the load, so the third epoch trains 4 steps on.
    model2 = two_input_model()
    model2.fit((xa, xb), y, batch_size=8, epochs=3, verbose=0,
               callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    status = read_status(logdir)
    assert status["state"] == "finished", status.get("error")
    assert status["step"] == 20 and status["epoch"] == 3
    assert float(model2.optimizer.learning_rate) == pytest.approx(0.002)
    assert float(model2.optimizer.momentum) == pytest.approx(0.5)


def test_sequential_without_an_input_layer(tmp_path: Any) -> None:
    """Keras builds such a model in its first step; so must we wait."""
    import keras

    import tb_retune
    from tests.conftest import tiny_data

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = tiny_data(64)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[tb_retune.RetuneCallback(str(tmp_path / "e"), verbose=False)])
    status = read_status(str(tmp_path / "e"))
    assert status["state"] == "finished" and status["step"] == 8
    assert status["checkpoints"]["main"] == [1, 4, 8]
