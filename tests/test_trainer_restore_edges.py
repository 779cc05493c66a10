"""Restores at the edges: the current step, a periodic checkpoint, a reused id."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from tests.conftest import atomic_save, read_status


def _loop(logdir: str, **kwargs: Any) -> tuple[Any, Any, Any]:
    import keras
    import tensorflow as tf

    import tb_retune

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.1, momentum=0.9)
    controller = tb_retune.RetuneController(logdir, verbose=False, **kwargs)
    controller.begin(model, opt)
    x = tf.ones((4, 2))

    def train_step() -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - 1.0))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                strict=True))
        return loss

    return controller, model, controller.function(train_step)


@pytest.mark.parametrize("background", [True, False])
def test_restore_to_the_current_step_on_a_periodic_checkpoint(tmp_path: Any, background: bool) -> None:
    logdir = str(tmp_path / "exp")
    controller, model, step = _loop(logdir, background_checkpoints=background)
    try:
        for _ in range(4):
            controller.before_step()
            loss = step()
        controller.end_epoch(0, {"loss": float(loss)})  # an epoch checkpoint at step 4, a periodic kind
        weights = [np.array(w.numpy()) for w in model.weights]
        atomic_save(os.path.join(logdir, "retune.json"), {"restore": {"id": "r-now", "branch": "main", "step": 4}})
        assert controller.mailbox.wait_posted(controller.mailbox.taken, timeout=120)
        controller.before_step()  # the restore, at step 4, to step 4
        assert controller.branch == "main-s4", read_status(logdir)["errors"]
        for w, saved in zip(model.weights, weights, strict=True):
            np.testing.assert_array_equal(w.numpy(), saved)
        step()
        controller.after_step({"loss": 0.0})
    finally:
        controller.end()
    status = read_status(logdir)
    assert status["state"] == "finished" and status["restores_done"] == ["r-now"]
    assert 4 in status["checkpoints"]["main"] and 4 in status["checkpoints"]["main-s4"]
    assert not [e for e in status["errors"]], status["errors"]
