"""A run that dies says so: ``failed`` with the error, at once, also when the process is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.conftest import read_status, tiny_data, tiny_model, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_process_that_crashes_in_fit_leaves_failed_with_the_error(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    script = textwrap.dedent(f"""
        import keras, numpy as np, tb_retune
        from tests.conftest import tiny_data, tiny_model

        class Boom(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                raise RuntimeError("the data loader broke at epoch " + str(epoch))

        x, y = tiny_data(64)
        tiny_model().fit(x, y, batch_size=8, epochs=5, verbose=0,
                         callbacks=[tb_retune.RetuneCallback({logdir!r}, verbose=False, heartbeat_s=30), Boom()])
    """)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "the data loader broke" in proc.stderr
    status = read_status(logdir)  # written before the process ended: no waiting
    assert status["state"] == "failed", status
    assert "RuntimeError: the data loader broke at epoch 0" in status["error"]


def test_an_exception_in_the_train_step_is_reported_with_its_message(tmp_path: Any) -> None:
    import keras

    import tb_retune

    class Broken(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x: Any) -> Any:
            return self.dense(x)

        def train_step(self, data: Any) -> Any:
            raise ValueError("shapes (8, 4) and (3,) do not fit")

    model = Broken()
    model.compile(optimizer="sgd", loss="mse")
    x, y = tiny_data(32)
    logdir = str(tmp_path / "exp")
    with pytest.raises(ValueError, match="do not fit"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    status = read_status(logdir)
    assert status["state"] == "failed" and "ValueError: shapes (8, 4) and (3,) do not fit" in status["error"]


def test_fit_raising_in_another_callback_is_failed_within_a_heartbeat(tmp_path: Any) -> None:
    import keras

    import tb_retune

    class Boom(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if batch == 2:
                raise KeyError("boom")

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    with pytest.raises(KeyError):
        tiny_model().fit(x, y, batch_size=8, epochs=2, verbose=0,
                         callbacks=[tb_retune.RetuneCallback(logdir, verbose=False, heartbeat_s=0.2), Boom()])
    status = wait_for(lambda: (s := read_status(logdir)).get("state") == "failed" and s, what="failed")
    assert "fit() ended without on_train_end" in status["error"]


_WATCH_UNDER_CHURN = textwrap.dedent("""
    import sys, threading
    from tb_retune.trainer.liveness import FitWatch

    sys.setswitchinterval(1e-6)  # the other thread runs between any two steps of ours
    stop, started = threading.Event(), threading.Event()
    frames = []

    def batches(depth):  # generators in generators, as a data loader's sampler
        if depth:
            yield from batches(depth - 1)
        else:
            for i in range(50):
                sys._getframe()
                yield i

    def step(depth):
        if depth:
            return step(depth - 1)
        for _ in batches(8):
            pass

    def fit():
        frames.append(sys._getframe())
        started.set()
        while not stop.is_set():
            step(10)

    trainer = threading.Thread(target=fit)
    trainer.start()
    started.wait()
    watch = FitWatch()
    watch.watch(trainer.ident, frames.pop())
    try:
        for n in range(CHECKS):
            assert not watch.gone(), f"fit taken for gone after {n} checks while it runs"
    finally:
        stop.set()
        trainer.join()
    assert watch.gone(), "the thread ended: fit is gone"
    print("ok")
""")


def test_the_watch_of_fits_frame_never_takes_a_running_fit_for_gone() -> None:
    """The heartbeat's look at the training thread's stack. Following ``f_back``
    from ``sys._current_frames()`` (before) took a running fit for gone within a
    few hundred looks when the stack held generators (a data loader's), and
    crashed Python 3.11 once in the torch suite (a segfault in the walk)."""
    script = "CHECKS = 10000\n" + _WATCH_UNDER_CHURN
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr
