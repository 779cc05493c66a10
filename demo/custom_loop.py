"""tb-retune demo with a custom training loop (``tf.GradientTape``).

The same MLP on handwritten digits as ``demo/run.py``, trained by hand with
``tb_retune.RetuneController`` instead of ``model.fit`` (TensorFlow backend; the
JAX and PyTorch loops: ``custom_loop_jax.py``, ``custom_loop_torch.py``):

    controller.begin(model, optimizer)            # starts or resumes
    step = controller.function(train_step)       # traced again on changes
    for each batch:
        controller.before_step()                  # applies pending changes
        logs = step(x, y)
        controller.after_step(logs)               # batch scalars
    controller.end_epoch(epoch, logs)             # epoch scalars, checkpoint
    controller.end()                              # final checkpoint, status

    python demo/custom_loop.py --minutes 1 --no-tensorboard
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import _common


def main(argv: list[str] | None = None) -> int:
    args = _common.parse_args(
        "Train a small MLP on handwritten digits in a custom loop with tb_retune.RetuneController.",
        "runs/digits-custom", argv)

    def prepare() -> Callable[[_common.GracefulStop], None]:
        import keras
        import numpy as np
        import tensorflow as tf

        import tb_retune

        x_train, y_train, x_val, y_val = _common.load_data(args.seed)
        model = _common.build_model(args.seed)
        optimizer = _common.make_optimizer()
        loss_fn = keras.losses.SparseCategoricalCrossentropy()
        train_loss = keras.metrics.Mean(name="loss")
        train_acc = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        val_acc = keras.metrics.SparseCategoricalAccuracy(name="val_accuracy")
        pacer = _common.Pacer(_common.seconds_per_batch(args, len(x_train)))

        def train_step(x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                probabilities = model(x, training=True)
                loss = loss_fn(y, probabilities)
            grads = tape.gradient(loss, model.trainable_variables)
            # momentum and nesterov are Python values baked in here: the
            # controller's function() traces this again when they change.
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            train_loss.update_state(loss)
            train_acc.update_state(y, probabilities)
            return {"loss": train_loss.result(), "accuracy": train_acc.result()}

        @tf.function
        def val_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            probabilities = model(x, training=False)
            val_acc.update_state(y, probabilities)
            return loss_fn(y, probabilities)

        def batches(epoch: int) -> list[tuple[tf.Tensor, tf.Tensor]]:
            order = np.random.default_rng([args.seed, epoch]).permutation(len(x_train))
            # Only full batches: one input shape, one trace per change.
            n = len(order) // args.batch_size * args.batch_size
            return [(tf.constant(x_train[order[i:i + args.batch_size]]),
                     tf.constant(y_train[order[i:i + args.batch_size]]))
                    for i in range(0, n, args.batch_size)]

        def train(stopper: _common.GracefulStop) -> None:
            controller = tb_retune.RetuneController(args.logdir, update_freq=args.update_freq)
            step = controller.function(train_step)  # traced again when a baked-in value changes
            controller.begin(model, optimizer, params=_common.training_params(args))

            def reset() -> None:
                train_loss.reset_state()
                train_acc.reset_state()

            def epoch_logs() -> dict[str, float]:
                val_acc.reset_state()
                val_loss = float(val_step(tf.constant(x_val), tf.constant(y_val)))
                return {"loss": float(train_loss.result()), "accuracy": float(train_acc.result()),
                        "val_loss": val_loss, "val_accuracy": float(val_acc.result())}

            _common.train_custom_loop(args, stopper, pacer, controller, batches=batches, step=step,
                                      epoch_logs=epoch_logs, reset=reset)

        return train

    return _common.run_demo(
        args, "tb-retune demo: an MLP on handwritten digits, SGD + momentum, custom tf.GradientTape loop",
        prepare)


if __name__ == "__main__":
    sys.exit(main())
