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


def test_a_restore_says_how_many_epochs_the_branch_gets_and_a_restart_gives_the_rest(tmp_path: Any) -> None:
    import keras

    import tb_retune
    from tests.conftest import tiny_data, tiny_model

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)  # 8 steps per epoch
    callback = tb_retune.RetuneCallback(logdir, verbose=False)

    class RestoreAt(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if int(self.model.optimizer.iterations.numpy()) == 28 and callback.controller.branch == "main":
                atomic_save(os.path.join(logdir, "retune.json"), {"restore": {"id": "r-8", "branch": "main", "step": 8}})
                assert callback.controller.mailbox.wait_posted(callback.controller.mailbox.taken, timeout=120)

    tiny_model().fit(x, y, batch_size=8, epochs=6, verbose=0, callbacks=[callback, RestoreAt()])
    status = read_status(logdir)
    assert status["branch"] == "main-s8"
    # main@8 is the end of epoch 1; fit was in epoch 3 (0-based) and counts on to 6.
    assert status["epochs_planned"]["main-s8"] == {"epochs": 6, "this_fit": 3, "left_for_a_restart": 2}
    assert status["epoch"] == 4
    restore = [a for a in status["applied"] if a["kind"] == "restore"][-1]
    assert "this fit gives it 3 more; run the script again to train the other 2" in restore["what"]
    # The restart resumes the branch and trains the two epochs it is owed.
    tiny_model().fit(x, y, batch_size=8, epochs=6, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    status = read_status(logdir)
    assert status["branch"] == "main-s8" and status["epoch"] == 6 and status["state"] == "finished"
    assert status["epochs_planned"]["main-s8"] == {"epochs": 6, "this_fit": 2, "left_for_a_restart": 0}


def test_a_reused_restore_id_is_reported(tmp_path: Any) -> None:
    from tests.conftest import live_fit, wait_for

    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    with live_fit(logdir, batch_size=16, sleep=0.003) as fit:
        wait_for(lambda: len(read_status(logdir).get("checkpoints", {}).get("main", [])) >= 3, what="checkpoints")
        first, second = read_status(logdir)["checkpoints"]["main"][:2]
        atomic_save(control, {"restore": {"id": "r-1", "branch": "main", "step": first}})
        wait_for(lambda: read_status(logdir).get("restores_done") == ["r-1"], what="the restore")
        atomic_save(control, {"restore": {"id": "r-1", "branch": "main", "step": second}})
        status = wait_for(lambda: (s := read_status(logdir)).get("errors") and s, what="the error")
        message = status["errors"][-1]["message"]
        assert f"restore.id: 'r-1' was already carried out (main@{first} as branch main-s{first})" in message
        assert f"main@{second} is not carried out: give the restore a new id" in message
        assert status["branch"] == f"main-s{first}" and status["control"]["result"] == "rejected"
        atomic_save(control, {"stop": True})
        fit.join_ok()
