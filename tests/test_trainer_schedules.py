"""Learning-rate schedules: shown as in force, recorded as schedules, restored as schedules."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.conftest import atomic_save, read_status, tiny_data, tiny_model


def _nodes(run_dir: str) -> dict[str, dict[str, Any]]:
    from tensorboard.backend.event_processing import event_accumulator

    from tb_retune.experiment import metadata

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return {t.rsplit("/", 1)[1]: metadata.decode_node(acc.Tensors(t)[-1].tensor_proto)
            for t in acc.Tags()["tensors"] if t.startswith(metadata.NODE_TAG_PREFIX)}


def test_a_schedule_is_shown_in_force_recorded_as_a_schedule_and_restored(tmp_path: Any) -> None:
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=10, decay_rate=0.5)
    control: dict[str, Any] = {"schedule": [{"at_step": 10, "hyperparameters": {"momentum": 0.5}}]}
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump(control, f)
    callback = tb_retune.RetuneCallback(logdir, verbose=False)

    class Person(keras.callbacks.Callback):
        """Replaces the schedule by a constant at 20, then restores step 10 at 30."""

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            step = int(self.model.optimizer.iterations.numpy())
            if callback.controller.branch != "main" or step not in (20, 30):
                return
            control["hyperparameters"] = {"learning_rate": 0.0005}
            if step == 30:
                control["restore"] = {"id": "r-back", "branch": "main", "step": 10}
            atomic_save(os.path.join(logdir, "retune.json"), control)
            assert callback.controller.mailbox.wait_posted(callback.controller.mailbox.taken, timeout=120)

    model = tiny_model(keras.optimizers.SGD(learning_rate=schedule, momentum=0.9))
    x, y = tiny_data(64)  # 8 steps per epoch
    model.fit(x, y, batch_size=8, epochs=6, verbose=0, callbacks=[callback, Person()])
    status = read_status(logdir)
    assert status["branch"] == "main-s10", status["errors"]
    end = status["step"]
    assert end == 10 + 17  # restored at the batch after step 30, then the 17 batches left
    # The branch trains with the schedule in force at step 10, not a constant.
    assert float(model.optimizer.learning_rate) == pytest.approx(float(schedule(end)), rel=1e-5)
    assert status["learning_rate_schedule"]["class_name"] == "ExponentialDecay"
    # The status shows the value in force, not the schedule's initial value.
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(float(schedule(end)), rel=1e-4)
    main = _nodes(os.path.join(logdir, "main"))
    # Only momentum was changed at 10: the schedule's decay is no change.
    assert main["main-2"]["change"] == {"momentum": [0.9, 0.5]}
    assert main["main-2"]["learning_rate_schedule"] == main["main-1"]["learning_rate_schedule"] is not None
    assert main["main-2"]["hyperparameters"]["learning_rate"] == pytest.approx(float(schedule(10)), rel=1e-5)
    assert main["main-3"]["learning_rate_schedule"] is None
    assert main["main-3"]["change"]["learning_rate"][1] == pytest.approx(0.0005)
    branch = _nodes(os.path.join(logdir, "main-s10"))["main-s10-1"]
    assert branch["learning_rate_schedule"]["class_name"] == "ExponentialDecay"
    assert "learning_rate" not in branch["change"]
    # The tree's labels say only what was changed.
    from tb_retune.reader.tree import build_tree

    tree = build_tree("exp", [*main.values(), branch])
    labels = {n["id"]: n["label"] for n in tree["nodes"]}
    assert "lr" not in labels["main-2"] and "mom" in labels["main-2"], labels
    assert "lr" not in labels["main-s10-1"], labels


def test_a_cnn_with_adam_and_a_schedule_is_stopped_and_resumed_with_its_schedule(tmp_path: Any) -> None:
    import keras
    import numpy as np

    import tb_retune

    def cnn() -> Any:
        keras.utils.set_random_seed(0)
        schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=5, decay_rate=0.9)
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                                  keras.layers.Flatten(), keras.layers.Dense(3)])
        model.compile(optimizer=keras.optimizers.Adam(schedule),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model, schedule

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=64)
    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    atomic_save(os.path.join(logdir, "retune.json"), {"schedule": [{"at_step": 6, "hyperparameters": {"beta_1": 0.8}}]})
    model, schedule = cnn()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    model, schedule = cnn()  # a new process would build it again the same way
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    status = read_status(logdir)
    assert status["state"] == "finished" and status["step"] == 20
    assert status["learning_rate_schedule"]["class_name"] == "ExponentialDecay"
    assert float(model.optimizer.learning_rate) == pytest.approx(float(schedule(20)), rel=1e-5)
    assert float(model.optimizer.beta_1) == pytest.approx(0.8)
