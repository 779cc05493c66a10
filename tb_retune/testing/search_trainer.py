"""A real trainer process for the search tests and ``benchmarks/bench_workers.py``:
``python -m tb_retune.testing.search_trainer LOGDIR [--sleep S] [--samples N]``.

A tiny model in ``fit`` with validation data and RetuneCallback; each batch is
padded with ``--sleep`` seconds, which stands for a real model's step time. It
trains until it is stopped (``stop`` in retune.json) or killed. Run by
``tb-retune worker``, the same script is a search worker. ``--samples`` makes
an epoch (its validation pass and checkpoint) longer than a trial, as a real
model's is.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tb_retune  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("logdir")
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--sleep", type=float, default=0.01, help="seconds added to each batch")
    parser.add_argument("--samples", type=int, default=128,
                        help="training samples (batches of 16): the tests' 128 make an epoch of 8 steps")
    parser.add_argument("--storage", default=None, help="the searches' Optuna storage URL")
    parser.add_argument("--heartbeat", default=None, help="heartbeat_interval,grace_period")
    args = parser.parse_args()
    options: dict[str, Any] = {}
    if args.storage:
        options["search_storage"] = args.storage
    if args.heartbeat:
        interval, grace = (int(v) for v in args.heartbeat.split(","))
        options["search_heartbeat"] = (interval, grace)
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    x_val = rng.normal(size=(64, 4)).astype("float32")
    y_val = (x_val[:, 0] + x_val[:, 1] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.05, momentum=0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    class Slow(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
            time.sleep(args.sleep)

    model.fit(x, y, batch_size=16, epochs=args.epochs, verbose=0, shuffle=False, validation_data=(x_val, y_val),
              callbacks=[tb_retune.RetuneCallback(args.logdir, update_freq=4, **options), Slow()])
    print("TRAINER DONE", flush=True)


if __name__ == "__main__":
    main()
