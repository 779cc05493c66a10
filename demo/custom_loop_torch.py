"""tb-retune demo with a custom training loop on PyTorch (a plain eager loop).

The same MLP on handwritten digits as ``demo/run.py``, trained by hand: the
forward pass, ``loss.backward()`` and the Keras optimizer's ``apply``, as
Keras's own torch trainer does it. The step runs eagerly, so it reads every
hyperparameter (momentum, nesterov, ...) at each call: nothing to retrace.

    controller.begin(model, optimizer)    # starts or resumes
    for each batch:
        controller.before_step()          # applies pending changes
        logs = train_step(x, y)
        controller.after_step(logs)       # batch scalars
    controller.end_epoch(epoch, logs); controller.end()

If you ``torch.compile`` the step, compile it again whenever
``controller.trace_version`` changes, as the JAX demo re-jits.

    python demo/custom_loop_torch.py --minutes 1 --no-tensorboard
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported, here or in _common

import _common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = _common.parse_args(
        "Train a small MLP on handwritten digits in a PyTorch loop with tb_retune.RetuneController.",
        "runs/digits-torch", argv)

    def prepare() -> Callable[[_common.GracefulStop], None]:
        import keras
        import numpy as np
        import torch

        import tb_retune

        x_train, y_train, x_val, y_val = _common.load_data(args.seed)
        model = _common.build_model(args.seed)
        optimizer = _common.make_optimizer()
        loss_fn = keras.losses.SparseCategoricalCrossentropy()
        train_loss = keras.metrics.Mean(name="loss")
        train_acc = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        pacer = _common.Pacer(_common.seconds_per_batch(args, len(x_train)))

        def train_step(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
            probabilities = model(x, training=True)
            loss = loss_fn(y, probabilities)
            model.zero_grad()
            loss.backward()
            variables = model.trainable_weights
            with torch.no_grad():
                optimizer.apply([v.value.grad for v in variables], variables)
            train_loss.update_state(loss.detach())
            train_acc.update_state(y, probabilities.detach())
            return {"loss": train_loss.result(), "accuracy": train_acc.result()}

        def batches(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
            order = np.random.default_rng([args.seed, epoch]).permutation(len(x_train))
            n = len(order) // args.batch_size * args.batch_size
            return [(torch.from_numpy(x_train[order[i:i + args.batch_size]]),
                     torch.from_numpy(y_train[order[i:i + args.batch_size]]))
                    for i in range(0, n, args.batch_size)]

        def reset() -> None:
            train_loss.reset_state()
            train_acc.reset_state()

        def epoch_logs() -> dict[str, float]:
            with torch.no_grad():
                probabilities = model(torch.from_numpy(x_val), training=False)
            predicted = keras.ops.convert_to_numpy(probabilities)
            return {"loss": float(train_loss.result()), "accuracy": float(train_acc.result()),
                    "val_loss": float(loss_fn(y_val, predicted)),
                    "val_accuracy": float(np.mean(np.argmax(predicted, axis=-1) == y_val))}

        def train(stopper: _common.GracefulStop) -> None:
            controller = tb_retune.RetuneController(args.logdir, update_freq=args.update_freq)
            controller.begin(model, optimizer, params=_common.training_params(args))
            _common.train_custom_loop(args, stopper, pacer, controller, batches=batches, step=train_step,
                                      epoch_logs=epoch_logs, reset=reset)

        return train

    return _common.run_demo(
        args, "tb-retune demo: an MLP on handwritten digits, SGD + momentum, custom PyTorch loop", prepare)


if __name__ == "__main__":
    sys.exit(main())
