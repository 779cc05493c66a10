"""Shared fixtures: real tiny Keras models, real files, no leaked threads."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tb_retune.testing.waiting import wait_for  # noqa: F401 (the tests import it from here)
from tb_retune.trainer.controller import THREAD_NAMES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The Keras backend of this pytest process (Keras reads KERAS_BACKEND once, at
#: import: a test under another backend runs in its own process, as make test does).
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


def only_backend(*names: str) -> pytest.MarkDecorator:
    """Skips a test unless this process runs one of the Keras backends ``names``."""
    return pytest.mark.skipif(BACKEND not in names, reason=f"needs KERAS_BACKEND in {names}, this run is {BACKEND}")


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fails a test that leaves one of our threads (or a watchdog observer) running."""
    before = {t.ident for t in threading.enumerate()}
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [
            t for t in threading.enumerate()
            if t.ident not in before and t.is_alive()
            and (t.name in THREAD_NAMES or "Observer" in type(t).__name__ or "Emitter" in type(t).__name__)
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"leaked threads: {[t.name for t in leaked]}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server for the session (``tb_retune.testing.postgres``): its
    SQLAlchemy URL, ``postgresql+psycopg2://postgres@127.0.0.1:<port>/tbr``. Tests share its
    one database, so each uses study names of its own. Fails (never skips) when the binaries
    are missing: ``make test`` installs them (``make postgresql``)."""
    from tb_retune.testing.postgres import postgres_server

    # Not under pytest's tmp_path: it is private to root, and the server runs as postgres.
    with postgres_server() as url:
        yield url




def read_status(folder: str) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, "retune-status.json")) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def atomic_save(path: str, obj: Any) -> None:
    """Like an editor's atomic save: write elsewhere, then rename onto the file."""
    tmp = path + ".swp"
    with open(tmp, "w") as f:
        f.write(json.dumps(obj) if not isinstance(obj, (bytes, str)) else (obj if isinstance(obj, str) else obj.decode("latin-1")))
    os.replace(tmp, path)


def tiny_model(optimizer: Any = None, *, seed: int = 0, units: int = 8) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(2)])
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def tiny_data(n: int = 256, seed: int = 0) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    return x, y


class SlowBatches:
    """A callback that sleeps per batch, so a fit lasts long enough to edit."""

    def __new__(cls, seconds: float) -> Any:
        import keras

        class _Slow(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                time.sleep(seconds)

        return _Slow()


class Recorder:
    """Records values per step at batch end (synchronously)."""

    def __new__(cls, fn: Callable[[Any], Any]) -> Any:
        import keras

        class _Rec(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.values: list[Any] = []

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                self.values.append(fn(self.model))

        return _Rec()


class FitThread(threading.Thread):
    """Runs model.fit on a thread; re-raises its exception on join_ok()."""

    def __init__(self, model: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(name="test-fit", daemon=True)
        self.model, self.args, self.kwargs = model, args, kwargs
        self.error: BaseException | None = None
        self.history: Any = None

    def run(self) -> None:
        try:
            self.history = self.model.fit(*self.args, **self.kwargs)
        except BaseException as e:  # noqa: BLE001
            self.error = e

    def join_ok(self, timeout: float = 60) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "fit did not finish"
        if self.error:
            raise self.error
        return self.history


@contextlib.contextmanager
def live_fit(logdir: str, *, samples: int = 128, batch_size: int = 8, sleep: float = 0.002,
             **callback_kwargs: Any) -> Iterator[FitThread]:
    """A ``fit`` with RetuneCallback running on a thread until the block ends.

    Yields once the trainer is watching its control file; on the way out it
    stops the fit (if the test has not) and re-raises the fit's error.
    """
    import tb_retune

    model = tiny_model()
    x, y = tiny_data(samples)
    callback = tb_retune.RetuneCallback(logdir, verbose=False, **callback_kwargs)
    fit = FitThread(model, x, y, batch_size=batch_size, epochs=100_000, verbose=0,
                    callbacks=[callback, SlowBatches(sleep)])
    started = time.time()
    fit.start()
    try:
        # This fit's trainer watching, and its status written: not a status file left by an earlier run.
        wait_for(lambda: not fit.is_alive() or (
            callback.controller.watcher is not None and read_status(logdir).get("watcher")
            and read_status(logdir).get("heartbeat", 0) >= started), what="trainer start")
        yield fit
    finally:
        model.stop_training = True
        fit.join_ok()
