"""The hand-computed proofs, on whichever Keras backend this process runs.

``make test`` runs this file under ``KERAS_BACKEND=tensorflow``, ``jax`` and
``torch`` (Keras picks its backend once, at import: one pytest process each).
No test here reads the model during an epoch: on JAX that would sync Keras's
training state on every batch and hide what the callback must do itself.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

from tests.conftest import BACKEND, atomic_save, read_status, tiny_data, tiny_model, wait_for

pytestmark = pytest.mark.backend


def _control(logdir: str, obj: Any) -> None:
    os.makedirs(logdir, exist_ok=True)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump(obj, f)


def _one_weight(optimizer: Any) -> Any:
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _checkpoint_arrays(logdir: str, branch: str, step: int) -> dict[str, np.ndarray]:
    from tb_retune.trainer.checkpoints import CheckpointStore

    store = CheckpointStore(os.path.join(logdir, "checkpoints"), keep_last=None)
    info = store.get(branch, step)
    assert info is not None, store.steps()
    return store.read_arrays(info)[1]


def test_the_backend_under_test_is_the_one_keras_runs() -> None:
    import keras

    assert keras.backend.backend() == BACKEND


def test_momentum_change_gives_exactly_the_plain_sgd_update(tmp_path: Any) -> None:
    """SGD on L = w^2 (x=1, y=0): momentum 0.9 -> 0 at step 3, nothing reads the model mid-epoch."""
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    _control(logdir, {"schedule": [{"at_step": 3, "hyperparameters": {"momentum": 0.0}}]})
    model = _one_weight(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    x, y = np.ones((8, 1), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])

    def final_weight(switch_at: int | None) -> float:
        w, v = 1.0, 0.0
        for step in range(8):
            g = 2 * w
            if switch_at is not None and step >= switch_at:
                w -= 0.1 * g
            else:
                v = 0.9 * v - 0.1 * g
                w += v
        return w

    got = float(model.layers[0].kernel.numpy()[0, 0])
    assert got == pytest.approx(final_weight(3), rel=1e-5)
    assert got != pytest.approx(final_weight(None), rel=1e-2)  # what a stale compiled step gives
    status = read_status(logdir)
    assert status["hyperparameters"]["momentum"] == 0.0 and status["node"] == "main-2"
    assert status["step"] == 8 and 3 in status["checkpoints"]["main"]


def test_adam_beta_1_change_gives_the_hand_computed_update(tmp_path: Any) -> None:
    """Adam on L = w^2: beta_1 0.9 -> 0.5 at step 2 (mid-epoch), only the final weight is read."""
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    _control(logdir, {"schedule": [{"at_step": 2, "hyperparameters": {"beta_1": 0.5}}]})
    model = _one_weight(keras.optimizers.Adam(learning_rate=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-7))
    x, y = np.ones((5, 1), "float32"), np.zeros((5, 1), "float32")
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])

    def final_weight(beta1_after: float) -> float:
        w, m, v = 1.0, 0.0, 0.0
        for t in range(1, 6):
            b1, g = (0.9 if t <= 2 else beta1_after), 2 * w
            m += (g - m) * (1 - b1)
            v += (g * g - v) * (1 - 0.999)
            w -= 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + 1e-7)
        return w

    got = float(model.layers[0].kernel.numpy()[0, 0])
    assert got == pytest.approx(final_weight(0.5), rel=1e-4)
    assert got != pytest.approx(final_weight(0.9), rel=1e-3)


def test_learning_rate_near_zero_freezes_the_weights(tmp_path: Any) -> None:
    """From the change on, every weight stays what the boundary checkpoint holds."""
    import tb_retune

    logdir = str(tmp_path / "exp")
    _control(logdir, {"schedule": [{"at_step": 10, "hyperparameters": {"learning_rate": 1e-12, "momentum": 0.0}}]})
    model = tiny_model()
    x, y = tiny_data(256)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    assert read_status(logdir)["step"] == 64
    at_change = _checkpoint_arrays(logdir, "main", 10)
    at_start = _checkpoint_arrays(logdir, "main", 0)
    weights = [np.asarray(w) for w in model.get_weights()]
    saved = [a for k, a in at_change.items() if k.startswith("model/")]
    start = [a for k, a in at_start.items() if k.startswith("model/")]
    assert len(saved) == len(weights) == 4
    for now, then in zip(weights, saved, strict=True):
        np.testing.assert_allclose(now, then, rtol=0, atol=1e-9)  # 54 steps of lr 1e-12: frozen
    assert max(float(np.max(np.abs(t - f))) for t, f in zip(saved, start, strict=True)) > 1e-3  # it did train before


def test_restore_gives_the_checkpoint_bit_for_bit_and_the_same_future(tmp_path: Any) -> None:
    """Restore main@5 at step 12: the branch's state at every later step equals main's, bit for bit."""
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(32)
    x, y = np.concatenate([x, x]), np.concatenate([y, y])  # two batches per epoch, the same two
    model = tiny_model(keras.optimizers.Adam(0.01))
    callback = tb_retune.RetuneCallback(logdir, verbose=False, keep_checkpoints=None, checkpoint_every_steps=1)
    controller = callback.controller

    class AskForRestore(keras.callbacks.Callback):
        """Writes the request at step 12 of main; reads nothing from the model."""

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if controller.branch == "main" and controller.current_step() == 12:
                # A checkpoint is restorable once durable (the writer has its own thread).
                wait_for(lambda: 5 in read_status(logdir).get("checkpoints", {}).get("main", []), timeout=120,
                         what="the checkpoint at step 5 to be written")
                atomic_save(os.path.join(logdir, "retune.json"),
                            {"restore": {"id": "r-bits", "branch": "main", "step": 5}})
                wait_for(lambda: controller.mailbox.due() or read_status(logdir).get("errors"),
                         timeout=120,
                         what="the watcher to read the request")

    # No shuffle and the same batch at every step, so the branch from 5 must
    # retrace main's steps 6..12 exactly; every other step is mid-epoch, where
    # JAX's fit keeps the state outside the variables.
    model.fit(x, y, batch_size=32, epochs=10, shuffle=False, verbose=0, callbacks=[AskForRestore(), callback])
    status = read_status(logdir)
    assert status["branch"] == "main-s5" and status["restores_done"] == ["r-bits"], (status["applied"], status["errors"])
    main_steps = set(status["checkpoints"]["main"])
    branch_steps = set(status["checkpoints"]["main-s5"])
    common = sorted(s for s in main_steps & branch_steps if s > 5)
    assert common[:3] == [6, 7, 8] and common[-1] >= 12, (main_steps, branch_steps)
    for step in common:
        ours, theirs = _checkpoint_arrays(logdir, "main-s5", step), _checkpoint_arrays(logdir, "main", step)
        assert list(ours) == list(theirs)
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"step {step} {key}")


def test_jax_state_is_synced_only_on_batches_where_something_is_due(tmp_path: Any) -> None:
    """On JAX, fit keeps the state outside the variables: a quiet batch costs no sync."""
    if BACKEND != "jax":
        pytest.skip("only JAX keeps fit's state outside the variables")
    import tb_retune

    logdir = str(tmp_path / "exp")
    _control(logdir, {"schedule": [{"at_step": 20, "hyperparameters": {"learning_rate": 0.02}}]})
    model = tiny_model()
    real_syncs: list[int] = []
    inner = model.jax_state_sync

    def counting_sync() -> None:
        if not model._jax_state_synced:
            real_syncs.append(1)
        inner()

    model.jax_state_sync = counting_sync
    x, y = tiny_data(256)  # 32 batches of 8
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    # One sync for the change at step 20, one at the epoch's end (Keras's own).
    assert len(real_syncs) == 2, real_syncs
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)


def test_reading_fits_state_unsynced_says_what_to_do() -> None:
    """A purged JAX variable read gives a BackendError that names the way out, not a TypeError."""
    if BACKEND != "jax":
        pytest.skip("only JAX purges variables during fit")
    import keras

    from tb_retune.trainer import backend

    model = tiny_model()
    errors: list[BaseException] = []

    class ReadRaw(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if batch == 2:
                try:
                    backend.to_int(self._model.optimizer.iterations, "optimizer.iterations")  # no sync
                except backend.BackendError as e:
                    errors.append(e)

    x, y = tiny_data(64)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[ReadRaw()])
    assert len(errors) == 1
    assert "optimizer.iterations" in str(errors[0]) and "state_sync" in str(errors[0])


def test_an_unsupported_backend_is_refused_at_train_begin(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import tb_retune
    from tb_retune.trainer import backend

    monkeypatch.setattr(backend, "name", lambda: "numpy")
    x, y = tiny_data(16)
    with pytest.raises(backend.BackendError, match=r"KERAS_BACKEND='numpy'.*tensorflow, jax, torch"):
        tiny_model().fit(x, y, epochs=1, verbose=0,
                         callbacks=[tb_retune.RetuneCallback(str(tmp_path / "exp"), verbose=False)])
    assert not os.path.exists(tmp_path / "exp" / "retune-status.json")  # refused before anything started
