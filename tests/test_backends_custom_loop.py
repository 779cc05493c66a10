"""Custom training loops with RetuneController, one documented pattern per backend.

TensorFlow: a ``tf.GradientTape`` step wrapped by ``controller.function``.
JAX: a ``jax.jit`` step over ``optimizer.stateless_apply``, jitted again when
``controller.trace_version`` changes, its state handed to the controller by
``state_sync`` and read back when ``controller.state_version`` changes.
PyTorch: a plain eager step. Each is proven against hand-computed updates and
against a restore, and each demo in ``demo/`` is run as a person runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import BACKEND, atomic_save, only_backend, read_status, wait_for

pytestmark = pytest.mark.backend

DEMO = Path(__file__).resolve().parent.parent / "demo"


class Loop:
    """The model, its optimizer and one training step, in this backend's pattern."""

    def __init__(self, controller: Any, optimizer: Any, *, units: int = 1) -> None:
        import keras

        keras.utils.set_random_seed(0)
        if units == 1:
            layers = [keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")]
        else:
            layers = [keras.layers.Dense(units, activation="relu"), keras.layers.Dense(1)]
        self.model = keras.Sequential([keras.Input((1,)), *layers])
        self.optimizer = optimizer
        self.optimizer.build(self.model.trainable_variables)
        self.controller = controller
        self.step: Callable[[Any], Any] = getattr(self, f"_{BACKEND}_step")()

    def begin(self) -> None:
        sync = self._write_state if BACKEND == "jax" else None
        self.controller.begin(self.model, self.optimizer, state_sync=sync)

    # -- TensorFlow: tf.GradientTape, retraced by controller.function -----------
    def _tensorflow_step(self) -> Callable[[Any], Any]:
        import tensorflow as tf

        def step(x: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self.model(x)))
            grads = tape.gradient(loss, self.model.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
            return loss

        return self.controller.function(step)

    # -- JAX: jax.jit + stateless_apply, re-jitted on trace_version -------------
    def _groups(self) -> list[list[Any]]:
        return [self.model.trainable_variables, self.model.non_trainable_variables, self.optimizer.variables]

    def _write_state(self) -> None:
        for group, values in zip(self._groups(), self._state, strict=True):
            for variable, value in zip(group, values, strict=True):
                variable.assign(value)

    def _jax_step(self) -> Callable[[Any], Any]:
        import jax
        import jax.numpy as jnp

        model, optimizer = self.model, self.optimizer

        def loss_of(trainable: Any, non_trainable: Any, x: Any) -> Any:
            y, non_trainable = model.stateless_call(trainable, non_trainable, x)
            return jnp.mean(jnp.square(y)), non_trainable

        grad_fn = jax.value_and_grad(loss_of, has_aux=True)

        def train_step(state: Any, x: Any) -> Any:
            trainable, non_trainable, optimizer_variables = state
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x)
            trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
            return loss, (trainable, non_trainable, optimizer_variables)

        seen = {"state": None, "trace": None}
        jitted: dict[str, Any] = {}

        def step(x: Any) -> Any:
            if seen["state"] != self.controller.state_version:
                self._state = tuple([v.value for v in group] for group in self._groups())
                seen["state"] = self.controller.state_version
            if seen["trace"] != self.controller.trace_version:
                # A new function object: jax.jit(train_step) again would reuse the old trace.
                jitted["fn"] = jax.jit(lambda state, x: train_step(state, x))
                seen["trace"] = self.controller.trace_version
            loss, self._state = jitted["fn"](self._state, x)
            return loss

        return step

    def weights(self) -> list[np.ndarray]:
        """The model's weights now (between steps; on JAX from the loop's state)."""
        if BACKEND == "jax":
            return [np.asarray(a) for a in self._state[0]]
        return [np.asarray(v.numpy()) for v in self.model.trainable_variables]

    # -- PyTorch: a plain eager step --------------------------------------------
    def _torch_step(self) -> Callable[[Any], Any]:
        import torch

        def step(x: Any) -> Any:
            loss = torch.mean(torch.square(self.model(x)))
            self.model.zero_grad()
            loss.backward()
            variables = self.model.trainable_weights
            with torch.no_grad():
                self.optimizer.apply([v.value.grad for v in variables], variables)
            return loss.detach()

        return step


def _ones() -> Any:
    import keras

    return keras.ops.ones((1, 1))


def test_a_momentum_change_is_in_force_from_the_next_step(tmp_path: Any) -> None:
    """SGD on L = w^2: momentum 0.9 -> 0 at step 3 and lr 0.1 -> 0.05 at step 5, by hand."""
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 3, "hyperparameters": {"momentum": 0.0}},
                                {"at_step": 5, "hyperparameters": {"learning_rate": 0.05}}]}, f)
    controller = tb_retune.RetuneController(logdir, verbose=False, update_freq=2)
    loop = Loop(controller, keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    loop.begin()
    x, got = _ones(), []
    for _ in range(8):
        controller.before_step()
        loss = loop.step(x)
        controller.after_step({"loss": loss})
        got.append(float(loop.weights()[0][0, 0]))
    controller.end_epoch(0, {"loss": float(loss)})
    controller.end()
    w, v, expected = 1.0, 0.0, []
    for step in range(8):
        g, lr = 2 * w, (0.1 if step < 5 else 0.05)
        if step >= 3:
            w -= lr * g
        else:
            v = 0.9 * v - lr * g
            w += v
        expected.append(w)
    assert got == pytest.approx(expected, rel=1e-5)
    status = read_status(logdir)
    assert status["state"] == "finished" and status["step"] == 8 and status["node"] == "main-3"
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.05)


def test_a_restore_in_a_custom_loop_gives_the_checkpoints_state_and_its_future(tmp_path: Any) -> None:
    """Restore main@3 after step 6: the branch's checkpoints at 4..6 equal main's, bit for bit."""
    import keras

    import tb_retune
    from tb_retune.trainer.checkpoints import CheckpointStore

    logdir = str(tmp_path / "exp")
    controller = tb_retune.RetuneController(logdir, verbose=False, checkpoint_every_steps=1,
                                            keep_checkpoints=None, background_checkpoints=False)
    loop = Loop(controller, keras.optimizers.Adam(0.05), units=4)
    loop.begin()
    x = _ones()
    for i in range(10):
        if i == 6:
            atomic_save(os.path.join(logdir, "retune.json"), {"restore": {"id": "r-loop", "branch": "main", "step": 3}})
            wait_for(lambda: controller.mailbox.due(), timeout=120, what="the request read")
        controller.before_step()
        loop.step(x)
    controller.end()
    status = read_status(logdir)
    assert status["branch"] == "main-s3" and status["step"] == 7, (status["applied"], status["errors"])
    store = CheckpointStore(os.path.join(logdir, "checkpoints"), keep_last=None)
    for step in (4, 5, 6):
        ours, theirs = (store.read_arrays(store.get(b, step))[1] for b in ("main-s3", "main"))  # type: ignore[arg-type]
        assert list(ours) == list(theirs)
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"step {step} {key}")


@only_backend("jax", "torch")
def test_controller_function_names_the_backend_and_the_alternative(tmp_path: Any) -> None:
    import tb_retune
    from tb_retune.trainer.backend import BackendError

    controller = tb_retune.RetuneController(str(tmp_path / "exp"), verbose=False)
    with pytest.raises(BackendError, match=rf"needs KERAS_BACKEND=tensorflow; this process runs the '{BACKEND}' "
                                           rf"backend\. Instead, .*demo/custom_loop_{BACKEND}\.py"):
        controller.function(lambda x: x)


def _run_demo(script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(DEMO / script), "--no-tensorboard", "--minutes", "0", *args],
                          cwd=cwd, env=env, text=True, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.slow
@only_backend("jax", "torch")
def test_the_backends_demo_takes_a_change_and_resumes(tmp_path: Path) -> None:
    script = f"custom_loop_{BACKEND}.py"
    logdir = tmp_path / "runs" / "digits"
    logdir.mkdir(parents=True)
    (logdir / "retune.json").write_text(json.dumps(
        {"schedule": [{"at_step": 10, "hyperparameters": {"momentum": 0.0, "learning_rate": 0.05}}]}))
    one = _run_demo(script, tmp_path, "--epochs", "1", "--update-freq", "5", "--logdir", str(logdir))
    assert one.returncode == 0, one.stdout + one.stderr
    assert "retune: step 10 learning_rate 0.005 -> 0.05, momentum 0.5 -> 0" in one.stdout
    status = read_status(str(logdir))
    assert status["state"] == "finished" and status["node"] == "main-2" and status["epoch"] == 1
    step1 = status["step"]
    two = _run_demo(script, tmp_path, "--epochs", "2", "--logdir", str(logdir))
    assert two.returncode == 0, two.stdout + two.stderr
    assert f"resumed branch main at step {step1}" in two.stdout and "epoch 1/2" not in two.stdout
    status = read_status(str(logdir))
    assert status["epoch"] == 2 and status["step"] == 2 * step1
    assert status["hyperparameters"]["momentum"] == 0.0 and status["node"] == "main-2"
