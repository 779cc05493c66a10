"""Live control of a real ``fit``: changes take effect in the compiled step."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

from tests.conftest import (
    BACKEND,
    Recorder,
    SlowBatches,
    atomic_save,
    live_fit,
    only_backend,
    read_status,
    tiny_data,
    tiny_model,
    wait_for,
)

pytestmark = pytest.mark.backend  # make test runs these under every Keras backend


def one_weight_model(optimizer: Any) -> Any:
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def kernel(model: Any) -> float:
    return float(model.layers[0].kernel.numpy()[0, 0])


def test_momentum_change_really_changes_the_traced_update(tmp_path: Any) -> None:
    """SGD on L = w^2 (x=1, y=0): after momentum 0.9 -> 0 the next update is plain SGD."""
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 3, "hyperparameters": {"momentum": 0.0}}]}, f)
    model = one_weight_model(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    rec = Recorder(kernel)
    x, y = np.ones((8, 1), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False), rec])

    def trajectory(switch_at: int | None) -> list[float]:
        w, v, out = 1.0, 0.0, []
        for step in range(8):
            g = 2 * w  # d(w^2)/dw
            if switch_at is not None and step >= switch_at:
                w = w - 0.1 * g
            else:
                v = 0.9 * v - 0.1 * g
                w = w + v
            out.append(w)
        return out

    assert rec.values == pytest.approx(trajectory(3), rel=1e-5)
    assert rec.values != pytest.approx(trajectory(None), rel=1e-3)  # the stale trace would give this
    status = read_status(logdir)
    assert status["hyperparameters"]["momentum"] == 0.0
    assert status["applied"][-1]["what"] == "momentum 0.9 -> 0"
    assert status["node"] == "main-2"


def test_clipvalue_and_learning_rate_take_effect(tmp_path: Any) -> None:
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 2, "hyperparameters": {"clipvalue": 0.05, "learning_rate": 0.5}}]}, f)
    model = one_weight_model(keras.optimizers.SGD(learning_rate=0.1))
    rec = Recorder(kernel)
    x, y = np.ones((5, 1), "float32"), np.zeros((5, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False), rec])
    w, expected = 1.0, []
    for step in range(5):
        g = 2 * w
        w = w - 0.1 * g if step < 2 else w - 0.5 * max(-0.05, min(0.05, g))
        expected.append(w)
    assert rec.values == pytest.approx(expected, rel=1e-5)


def test_adam_beta_1_change_is_applied(tmp_path: Any) -> None:
    """Adam's first step after a beta_1 change matches the hand-computed update."""
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 2, "hyperparameters": {"beta_1": 0.5}}]}, f)
    model = one_weight_model(keras.optimizers.Adam(learning_rate=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-7))
    rec = Recorder(kernel)
    x, y = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False), rec])

    def adam(beta1_after: float) -> list[float]:
        w, m, v, out = 1.0, 0.0, 0.0, []
        for t in range(1, 5):
            b1 = 0.9 if t <= 2 else beta1_after
            g = 2 * w
            m = m + (g - m) * (1 - b1)
            v = v + (g * g - v) * (1 - 0.999)
            lr = 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - b1 ** t)
            w = w - lr * m / (np.sqrt(v) + 1e-7)
            out.append(w)
        return out

    assert rec.values == pytest.approx(adam(0.5), rel=1e-4)
    assert rec.values != pytest.approx(adam(0.9), rel=1e-4)


def test_learning_rate_schedule_is_replaced_by_a_constant(tmp_path: Any) -> None:
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 3, "hyperparameters": {"learning_rate": 0.02}}]}, f)
    sched = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model = one_weight_model(keras.optimizers.SGD(learning_rate=sched))
    rec = Recorder(lambda m: float(m.optimizer.learning_rate))
    x, y = np.ones((6, 1), "float32"), np.zeros((6, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False), rec])
    assert rec.values[-1] == pytest.approx(0.02)
    assert read_status(logdir)["hyperparameters"]["learning_rate"] == pytest.approx(0.02)


BAD_REVISIONS: list[tuple[bytes, str]] = [
    (b'{"hyperparameters": {"learning_rate": 0.5', "invalid JSON"),
    (b"", "empty"),
    (b"\x00\x01\xff\xfe binary", "not UTF-8"),
    (b"[1,2,3]", "must be a JSON object"),
    (b'{"learning_rate": 0.5}', "learning_rate: unknown key"),
    (b'{"hyperparameters": {"learnig_rate": 0.5}}', "unknown hyperparameter"),
    (b'{"hyperparameters": {"learning_rate": "fast"}}', "must be a number"),
    (b'{"hyperparameters": {"learning_rate": NaN}}', "NaN"),
    (b'{"hyperparameters": {"learning_rate": 1e400}}', "finite"),
    (b'{"hyperparameters": {"learning_rate": -1}}', "must be > 0, got -1"),
    (b'{"hyperparameters": {"momentum": 2}}', "momentum: must be >= 0 and <= 1, got 2"),
    (b'{"hyperparameters": {"learning_rate": 0.5, "momentum": -0.1}}', "momentum"),  # whole or nothing
    (b'{"restore": {"id": "zz", "branch": "main", "step": 99999}}', "no checkpoint at step 99999"),
    (b'{"hyperparameters": {}, "pad": "' + b"x" * 300_000 + b'"}', "larger than the limit"),
]


def test_bad_revisions_change_nothing_and_training_goes_on(tmp_path: Any) -> None:

    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    with live_fit(logdir, samples=256) as fit:
        model = fit.model
        for i, (data, needle) in enumerate(BAD_REVISIONS):
            step_before = read_status(logdir).get("step", 0)
            with open(control + ".tmp", "wb") as f:
                f.write(data)
            os.replace(control + ".tmp", control)
            status = wait_for(lambda i=i: (s := read_status(logdir)) and len(s.get("errors", [])) > i and s,
                              what=f"error for {data[:40]!r}")
            assert needle in status["errors"][i]["message"], status["errors"][i]
            assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.01)
            assert status["hyperparameters"]["momentum"] == pytest.approx(0.9)
            assert status["state"] == "training"
            wait_for(lambda sb=step_before: read_status(logdir).get("step", 0) > sb, what="training goes on")
        # And a good revision afterwards is applied.
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.05, "momentum": 0.5}})
        wait_for(lambda: read_status(logdir).get("hyperparameters", {}).get("momentum") == 0.5, what="good revision")
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.05, "momentum": 0.5}, "stop": True})
        fit.join_ok()
    # Read after fit: on JAX the variables hold the state only between fits.
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    status = read_status(logdir)
    assert status["state"] == "stopped"
    assert status["step"] in status["checkpoints"][status["branch"]]  # final checkpoint


@pytest.mark.parametrize("how", ["in_place", "atomic_move", "delete_recreate", "polling"])
def test_each_way_of_saving_is_seen(tmp_path: Any, how: str) -> None:

    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    with live_fit(logdir, polling=(how == "polling")):
        assert read_status(logdir)["watcher"] == ("polling" if how == "polling" else "native")
        for lr in (0.02, 0.03):
            payload = json.dumps({"hyperparameters": {"learning_rate": lr}}).encode()
            if how == "in_place":
                with open(control, "wb") as f:  # several writes, like some editors
                    f.write(payload[:10])
                    f.flush()
                    f.write(payload[10:])
            elif how == "delete_recreate":
                if os.path.exists(control):
                    os.unlink(control)
                with open(control, "wb") as f:
                    f.write(payload)
            else:
                atomic_save(control, json.loads(payload))
            wait_for(lambda lr=lr: read_status(logdir).get("hyperparameters", {}).get("learning_rate") == pytest.approx(lr),
                     what=f"lr {lr} via {how}")
    scalars = _read_scalars(os.path.join(logdir, "main"))
    assert {round(v, 4) for _, v in scalars["hyperparameters/learning_rate"]} >= {0.01, 0.02, 0.03}


def _read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    out: dict[str, list[tuple[int, float]]] = {}
    from tensorboard.util import tensor_util

    for tag in acc.Tags()["tensors"]:
        out[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)
                    if not tag.startswith("retune/")]
    return out


def test_scalars_and_tree_nodes_are_written(tmp_path: Any) -> None:
    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 40, "hyperparameters": {"learning_rate": 0.003}},
                                {"at_step": 80, "hyperparameters": {"momentum": 0.5}}]}, f)
    model = tiny_model()
    x, y = tiny_data(256)
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, validation_split=0.25,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False, update_freq=8)])
    scalars = _read_scalars(os.path.join(logdir, "main"))
    for tag in ("loss", "accuracy", "val_loss", "val_accuracy", "hyperparameters/learning_rate", "hyperparameters/momentum"):
        assert tag in scalars, sorted(scalars)
    lr = dict(scalars["hyperparameters/learning_rate"])
    assert lr[40] == pytest.approx(0.003) and lr[24] == pytest.approx(0.01)
    # Nodes: one tag per node, read back by TensorBoard's own loader.
    from tensorboard.backend.event_processing import event_accumulator

    from tb_retune.experiment import metadata

    acc = event_accumulator.EventAccumulator(os.path.join(logdir, "main"), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    node_tags = sorted(t for t in acc.Tags()["tensors"] if t.startswith(metadata.NODE_TAG_PREFIX))
    assert node_tags == ["retune/node/main-1", "retune/node/main-2", "retune/node/main-3"]
    records = {t: metadata.decode_node(acc.Tensors(t)[-1].tensor_proto) for t in node_tags}
    n2 = records["retune/node/main-2"]
    assert n2["parent"] == "main-1" and n2["step"] == 40 and n2["change"] == {"learning_rate": [0.01, 0.003]}
    assert n2["reason"] == "schedule"
    cfg = records["retune/node/main-1"]["config"]
    assert cfg["optimizer"]["class_name"] == "SGD"
    assert cfg["model"]["total_params"] == model.count_params()
    assert cfg["training"]["batch_size"] == 8 and cfg["training"]["epochs"] == 4
    assert cfg["environment"]["backend"] == BACKEND and cfg["environment"]["keras"]
    # Node boundaries are checkpointed just before the change.
    status = read_status(logdir)
    nodes = {c["step"]: c["node"] for c in status["checkpoint_nodes"]["main"]}
    assert nodes[40] == "main-1" and nodes[80] == "main-2"


@only_backend("tensorflow")  # the JAX and torch loops: tests/test_backends_custom_loop.py
def test_custom_training_loop(tmp_path: Any) -> None:
    import keras
    import tensorflow as tf

    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 3, "hyperparameters": {"momentum": 0.0}}]}, f)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    opt = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    controller = tb_retune.RetuneController(logdir, verbose=False)
    controller.begin(model, opt)

    def step(x: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    train_step = controller.function(step)
    weights = []
    x = tf.ones((1, 1))
    for _ in range(6):
        controller.before_step()
        loss = train_step(x)
        controller.after_step({"loss": float(loss)})
        weights.append(kernel(model))
    controller.end_epoch(0, {"loss": float(loss)})
    controller.end()
    w, v, expected = 1.0, 0.0, []
    for s in range(6):
        g = 2 * w
        if s >= 3:
            w -= 0.1 * g
        else:
            v = 0.9 * v - 0.1 * g
            w += v
        expected.append(w)
    assert weights == pytest.approx(expected, rel=1e-5)
    assert read_status(logdir)["state"] == "finished"


def test_stop_is_one_shot_and_a_cut_epoch_is_trained_again(tmp_path: Any) -> None:
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(128)  # 16 steps per epoch with batch 8

    class StopAt(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if int(self.model.optimizer.iterations.numpy()) == 20:
                atomic_save(os.path.join(logdir, "retune.json"), {"stop": True})

    model = tiny_model()
    model.fit(x, y, batch_size=8, epochs=5, verbose=0,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False), StopAt(), SlowBatches(0.01)])
    status = read_status(logdir)
    assert status["state"] == "stopped"
    stopped_at = status["step"]
    assert 20 < stopped_at < 32 and status["epoch"] == 1  # epoch 2 was cut short: not counted
    assert stopped_at in status["checkpoints"]["main"]
    # The file still says stop: a new run is not stopped by it, and trains the cut epoch again.
    model2 = tiny_model()
    model2.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    status = read_status(logdir)
    assert status["state"] == "finished" and status["epoch"] == 5
    assert status["step"] == stopped_at + 4 * 16


def test_fit_raising_elsewhere_ends_the_run_as_failed(tmp_path: Any) -> None:
    """Keras calls no callback when another callback raises: the run is still closed."""
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")

    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch == 1:
                raise RuntimeError("boom")

    x, y = tiny_data(64)
    with pytest.raises(RuntimeError, match="boom"):
        tiny_model().fit(x, y, batch_size=8, epochs=5, verbose=0,
                         callbacks=[tb_retune.RetuneCallback(logdir, verbose=False, heartbeat_s=0.3), Boom()])
    wait_for(lambda: read_status(logdir).get("state") == "failed", timeout=10, what="state failed")
    # The lock is released: a new run on the experiment resumes.
    tiny_model().fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    assert read_status(logdir)["state"] == "finished"
