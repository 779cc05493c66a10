"""tb-retune demo with a custom training loop on JAX (``jax.jit`` + ``stateless_apply``).

The same MLP on handwritten digits as ``demo/run.py``, trained by a jitted,
stateless step: the weights and the optimizer's variables travel as arrays
(``state``) and the Keras variables hold them only when the controller asks.

    controller.begin(model, optimizer, state_sync=write_state)   # starts or resumes
    for each batch:
        controller.before_step()          # O(1); when a change is due it calls
                                          # write_state(), then applies it
        if controller.state_version changed: state = read_state()   # what it assigned
        if controller.trace_version changed:                         # re-jit a new
            step = jax.jit(lambda *a: train_step(*a))                 # function object
        loss, state = step(state, x, y)
        controller.after_step({"loss": loss})
    controller.end_epoch(epoch, logs); controller.end()

The learning rate is a variable (it is part of ``state``); momentum, nesterov
and the other hyperparameters are Python values that ``jax.jit`` bakes into the
step, hence the re-jit when ``trace_version`` changes.

    python demo/custom_loop_jax.py --minutes 1 --no-tensorboard
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported, here or in _common

import _common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = _common.parse_args(
        "Train a small MLP on handwritten digits in a jax.jit loop with tb_retune.RetuneController.",
        "runs/digits-jax", argv)

    def prepare() -> Callable[[_common.GracefulStop], None]:
        import jax
        import jax.numpy as jnp
        import keras
        import numpy as np

        import tb_retune

        x_train, y_train, x_val, y_val = _common.load_data(args.seed)
        model = _common.build_model(args.seed)
        optimizer = _common.make_optimizer()
        optimizer.build(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy()
        pacer = _common.Pacer(_common.seconds_per_batch(args, len(x_train)))

        def compute_loss(trainable: Any, non_trainable: Any, x: Any, y: Any) -> Any:
            probabilities, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(y, probabilities), (probabilities, non_trainable)

        grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

        def train_step(state: Any, x: Any, y: Any) -> tuple[dict[str, Any], Any]:
            trainable, non_trainable, optimizer_variables = state
            (loss, (probabilities, non_trainable)), grads = grad_fn(trainable, non_trainable, x, y)
            trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
            accuracy = jnp.mean(jnp.argmax(probabilities, axis=-1) == y)
            return {"loss": loss, "accuracy": accuracy}, (trainable, non_trainable, optimizer_variables)

        @jax.jit
        def predict(state: Any, x: Any) -> Any:
            trainable, non_trainable, _ = state
            return model.stateless_call(trainable, non_trainable, x)[0]

        def groups() -> list[list[Any]]:
            return [model.trainable_variables, model.non_trainable_variables, optimizer.variables]

        def read_state() -> Any:
            """The Keras variables -> the arrays the jitted step takes."""
            return tuple([v.value for v in group] for group in groups())

        loop: dict[str, Any] = {"state": None, "state_version": None, "step": None, "trace_version": None}

        def write_state() -> None:
            """The arrays -> the Keras variables (the controller's state_sync)."""
            for group, values in zip(groups(), loop["state"], strict=True):
                for variable, value in zip(group, values, strict=True):
                    variable.assign(value)

        def step(x: Any, y: Any) -> dict[str, Any]:
            if loop["state_version"] != controller.state_version:  # the controller assigned variables
                loop["state"], loop["state_version"] = read_state(), controller.state_version
            if loop["trace_version"] != controller.trace_version:  # a baked-in value changed: re-jit
                # jax.jit keeps one trace per function object: jit a new one (a fresh lambda),
                # or jax.jit(train_step) would hand back the old trace and the old momentum.
                loop["step"] = jax.jit(lambda state, x, y: train_step(state, x, y))
                loop["trace_version"] = controller.trace_version
            logs, loop["state"] = loop["step"](loop["state"], x, y)
            seen.append(logs)
            return logs

        seen: list[dict[str, Any]] = []

        def batches(epoch: int) -> list[tuple[Any, Any]]:
            order = np.random.default_rng([args.seed, epoch]).permutation(len(x_train))
            n = len(order) // args.batch_size * args.batch_size  # one shape, one jit per change
            return [(jnp.asarray(x_train[order[i:i + args.batch_size]]), jnp.asarray(y_train[order[i:i + args.batch_size]]))
                    for i in range(0, n, args.batch_size)]

        def epoch_logs() -> dict[str, float]:
            probabilities = np.asarray(predict(loop["state"], jnp.asarray(x_val)))
            return {"loss": float(np.mean([float(s["loss"]) for s in seen])),
                    "accuracy": float(np.mean([float(s["accuracy"]) for s in seen])),
                    "val_loss": float(loss_fn(y_val, probabilities)),
                    "val_accuracy": float(np.mean(np.argmax(probabilities, axis=-1) == y_val))}

        controller = tb_retune.RetuneController(args.logdir, update_freq=args.update_freq)

        def train(stopper: _common.GracefulStop) -> None:
            controller.begin(model, optimizer, params=_common.training_params(args), state_sync=write_state)
            _common.train_custom_loop(args, stopper, pacer, controller, batches=batches, step=step,
                                      epoch_logs=epoch_logs, reset=seen.clear)

        return train

    return _common.run_demo(
        args, "tb-retune demo: an MLP on handwritten digits, SGD + momentum, custom jax.jit loop", prepare)


if __name__ == "__main__":
    sys.exit(main())
