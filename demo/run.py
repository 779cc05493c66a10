"""tb-retune demo: retune a Keras model on handwritten digits while it trains.

Trains a small MLP on scikit-learn's 8x8 digits with SGD + momentum, slowly
(about --minutes), with ``tb_retune.RetuneCallback("runs/digits")``, and starts
TensorBoard on ``runs/`` with the Retune tab. Change the learning rate,
momentum or nesterov while it runs, restore an earlier step as a new branch,
and compare the branches in the Scalars dashboard. Ctrl-C stops after the
current batch with a checkpoint; running it again resumes.

    python demo/run.py                      # or: make demo
    python demo/run.py --minutes 1 --epochs 20 --no-tensorboard
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import _common


def main(argv: list[str] | None = None) -> int:
    args = _common.parse_args(
        "Train a small MLP on handwritten digits with tb-retune; retune it from TensorBoard.",
        "runs/digits", argv)

    def prepare() -> Callable[[_common.GracefulStop], None]:
        import keras

        import tb_retune

        x_train, y_train, x_val, y_val = _common.load_data(args.seed)
        model = _common.build_model(args.seed)
        model.compile(optimizer=_common.make_optimizer(), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        pacer = _common.Pacer(_common.seconds_per_batch(args, len(x_train)))

        class Pace(keras.callbacks.Callback):
            """A pause per batch, so that there is time to retune."""

            def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
                pacer.wait()

        def train(stopper: _common.GracefulStop) -> None:
            retune = tb_retune.RetuneCallback(args.logdir, update_freq=args.update_freq)

            def stop() -> None:
                # fit checks stop_training after each batch; the callback
                # then records the run as "stopped", with a final checkpoint.
                model.stop_training = True
                retune.controller.stop_requested = True
                pacer.stop()

            stopper.on_request = stop
            # Pace first: a Ctrl-C during its pause is seen by the callback at once.
            try:
                model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                          validation_data=(x_val, y_val), callbacks=[Pace(), retune],
                          verbose=1 if sys.stdout.isatty() else 2)
            except KeyboardInterrupt:
                # A second Ctrl-C: still a final checkpoint of the weights as
                # they are between two batches (a no-op if the callback did it).
                retune.controller.end("stopped")
                raise

        return train

    return _common.run_demo(args, "tb-retune demo: an MLP on handwritten digits, SGD + momentum, model.fit",
                            prepare)


if __name__ == "__main__":
    sys.exit(main())
