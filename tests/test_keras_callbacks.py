"""RetuneCallback beside Keras's own callbacks, in real fits (issue 21).

Each case puts a Keras callback next to ours in the same ``fit`` of a tiny
model: other callbacks changing the learning rate, a restore with stateful
monitors (EarlyStopping, ReduceLROnPlateau, ModelCheckpoint), the two resume
mechanisms (BackupAndRestore), the scalar points of a restored branch, and a
second ``fit`` with the same callback.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pytest

from tests.conftest import atomic_save, read_status, tiny_data, tiny_model, wait_for


def _nodes(run_dir: str) -> list[dict[str, Any]]:
    """The node records of one branch's run, by step."""
    from tensorboard.backend.event_processing import event_accumulator

    from tb_retune.experiment import metadata

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    tags = [t for t in acc.Tags()["tensors"] if t.startswith("retune/node/")]
    return sorted((metadata.decode_node(acc.Tensors(t)[-1].tensor_proto) for t in tags), key=lambda r: r["seq"])


def _scalar_steps(run_dir: str, tag: str) -> list[int]:
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return sorted(e.step for e in acc.Tensors(tag)) if tag in acc.Tags()["tensors"] else []


def _retune(logdir: str, **kwargs: Any) -> Any:
    import tb_retune

    return tb_retune.RetuneCallback(logdir, verbose=False, **kwargs)


class _Asker:
    """A callback (placed before ours) that writes ``retune.json`` at one
    batch and waits until the trainer has read it, so that our next batch
    boundary takes it."""

    def __new__(cls, retune: Any, when: Any, content: dict[str, Any]) -> Any:
        import keras

        class _Ask(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.epoch = 0
                self.done = False

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.epoch = epoch

            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                if not self.done and when(self.epoch, batch, retune.controller.branch):
                    self.done = True
                    mailbox = retune.controller.mailbox
                    taken = mailbox.taken
                    atomic_save(os.path.join(retune.logdir, "retune.json"), content)
                    assert mailbox.wait_posted(taken, timeout=120), "the trainer did not read retune.json"

        return _Ask()


# -- other callbacks change hyperparameters too ----------------------------------
@pytest.mark.parametrize("ours_first", [True, False])
def test_reduce_lr_on_plateau_changes_are_events_of_the_tree(tmp_path: Any, ours_first: bool) -> None:
    import keras

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    model = tiny_model(keras.optimizers.SGD(0.1))
    # min_delta so large that every epoch after the first is a plateau.
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=100.0)
    retune = _retune(logdir)
    callbacks = [retune, plateau] if ours_first else [plateau, retune]
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False, callbacks=callbacks)

    lr = float(np.asarray(model.optimizer.learning_rate))
    assert lr == pytest.approx(0.0125)  # halved at the end of epochs 2, 3, 4
    status = read_status(logdir)
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(lr)
    external = [a for a in status["applied"] if a["kind"] == "external"]
    assert [a["set_by"] for a in external] == ["ReduceLROnPlateau"] * 3, status["applied"]
    nodes = [n for n in _nodes(os.path.join(logdir, "main")) if n["reason"] == "external"]
    # Each node starts where the new value is first used: the end of epochs 2, 3, 4 (4 steps each);
    # the last one, set at the end of the last epoch, is recorded at the end of fit.
    assert [n["step"] for n in nodes][:2] == [8, 12]
    assert [n["change"]["learning_rate"] for n in nodes] == [[0.1, 0.05], [0.05, 0.025], [0.025, 0.0125]]
    assert all(n["set_by"] == "ReduceLROnPlateau" for n in nodes)
    # The tree follows: each node's parent holds the value its change started from.
    by_id = {n["id"]: n for n in _nodes(os.path.join(logdir, "main"))}
    for n in nodes:
        assert by_id[n["parent"]]["hyperparameters"]["learning_rate"] == n["change"]["learning_rate"][0]


@pytest.mark.parametrize("ours_first", [True, False])
def test_learning_rate_scheduler_values_start_their_nodes_at_the_epoch_start(tmp_path: Any, ours_first: bool) -> None:
    import keras

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    model = tiny_model(keras.optimizers.SGD(0.1))
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    retune = _retune(logdir)
    callbacks = [retune, scheduler] if ours_first else [scheduler, retune]
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=callbacks)

    nodes = [n for n in _nodes(os.path.join(logdir, "main")) if n["reason"] == "external"]
    assert [n["step"] for n in nodes] == [4, 8]  # epoch 2 and 3 start; no batch ran with the old value
    assert [n["set_by"] for n in nodes] == ["LearningRateScheduler"] * 2
    assert [n["hyperparameters"]["learning_rate"] for n in nodes] == pytest.approx([0.05, 0.1 / 3])
    assert read_status(logdir)["hyperparameters"]["learning_rate"] == pytest.approx(0.1 / 3)


def test_a_persons_value_overridden_by_another_callback_is_reported(tmp_path: Any) -> None:
    """A person's 0.2 is recorded from the value really in force, and when
    ReduceLROnPlateau halves it the person is told."""
    import keras

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    model = tiny_model(keras.optimizers.SGD(0.1))
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=100.0)
    retune = _retune(logdir)
    ask = _Asker(retune, lambda epoch, batch, branch: epoch == 2 and batch == 1,
                 {"hyperparameters": {"learning_rate": 0.2}})
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False, callbacks=[ask, retune, plateau])

    status = read_status(logdir)
    control = [a for a in status["applied"] if a["kind"] == "control"]
    assert len(control) == 1 and control[0]["what"] == "learning_rate 0.05 -> 0.2", status["applied"]
    nodes = {n["id"]: n for n in _nodes(os.path.join(logdir, "main"))}
    person = nodes[control[0]["node"]]
    assert nodes[person["parent"]]["hyperparameters"]["learning_rate"] == pytest.approx(0.05)
    assert person["parent"] != "main-1"  # the parent is ReduceLROnPlateau's node, not the root
    overridden = [e["message"] for e in status["errors"] if "overridden" in e["message"]]
    assert overridden and "your 0.2 from retune.json was overridden by ReduceLROnPlateau" in overridden[0]
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(float(np.asarray(model.optimizer.learning_rate)))


def test_a_value_asked_again_is_applied_although_the_file_says_the_same(tmp_path: Any) -> None:
    """After LearningRateScheduler replaced the person's 0.2, asking for 0.2
    again (``revision.keys`` names it) applies it, though the value in the
    file did not change."""
    import keras

    from tb_retune.experiment.control import TOP_LEVEL_KEYS

    if "revision" not in TOP_LEVEL_KEYS:
        pytest.skip("the control schema does not take the writer's `revision` stamp yet")
    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    model = tiny_model(keras.optimizers.SGD(0.1))
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01)  # at every epoch start
    retune = _retune(logdir)
    first = _Asker(retune, lambda epoch, batch, branch: epoch == 1 and batch == 1,
                   {"hyperparameters": {"learning_rate": 0.2}, "revision": {"id": "a", "keys": ["learning_rate"]}})
    again = _Asker(retune, lambda epoch, batch, branch: epoch == 2 and batch == 1,
                   {"hyperparameters": {"learning_rate": 0.2}, "revision": {"id": "b", "keys": ["learning_rate"]}})
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[scheduler, first, again, retune])
    status = read_status(logdir)
    assert [a["what"] for a in status["applied"] if a["kind"] == "control"] == [
        "learning_rate 0.01 -> 0.2", "learning_rate 0.01 -> 0.2"]
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.2)


# -- branches and stateful callbacks ------------------------------------------------
@pytest.mark.parametrize("ours_first", [True, False])
def test_a_restore_resets_early_stopping_reduce_lr_and_model_checkpoint(tmp_path: Any, ours_first: bool,
                                                                        caplog: Any) -> None:
    """Main trains 6 epochs; a restore to step 0 with a small learning rate
    starts a branch whose losses stay above main's best. Without a reset,
    EarlyStopping would stop after 2 epochs and load main's weights,
    ReduceLROnPlateau would halve the rate and ModelCheckpoint never save."""
    import keras

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    model = tiny_model(keras.optimizers.SGD(0.05))
    retune = _retune(logdir, keep_checkpoints=None)
    weights: dict[str, list[list[np.ndarray]]] = {}
    losses: dict[str, list[float]] = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            weights.setdefault(retune.controller.branch, []).append(self.model.get_weights())
            losses.setdefault(retune.controller.branch, []).append(float(logs["loss"]))

    stopping = keras.callbacks.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5, min_delta=0.0)
    best = keras.callbacks.ModelCheckpoint(str(tmp_path / "mc-{loss:.6f}.weights.h5"), monitor="loss",
                                           save_best_only=True, save_weights_only=True)
    ask = _Asker(retune, lambda epoch, batch, branch: branch == "main" and epoch == 6 and batch == 0,
                 {"restore": {"id": "r1", "branch": "main", "step": 0, "hyperparameters": {"learning_rate": 0.001}}})
    keras_callbacks = [Probe(), stopping, plateau, best]
    caplog.set_level(logging.INFO, logger="tb_retune")
    callbacks = [ask, retune, *keras_callbacks] if ours_first else [ask, *keras_callbacks, retune]
    history = model.fit(x, y, batch_size=16, epochs=12, verbose=0, shuffle=False, callbacks=callbacks)

    status = read_status(logdir)
    assert status["branch"] == "main-s0", status["applied"]
    new = losses["main-s0"]
    assert min(new) > min(losses["main"])  # the situation the reset is for
    assert stopping.stopped_epoch == 0, "EarlyStopping stopped the new branch on the old branch's best"
    assert len(history.epoch) >= 12
    assert stopping.best == pytest.approx(min(new))
    # The weights at the end of fit are the new branch's best, never main's.
    final = model.get_weights()
    assert any(all(np.array_equal(a, b) for a, b in zip(final, w, strict=True)) for w in weights["main-s0"])
    assert not any(all(np.array_equal(a, b) for a, b in zip(final, w, strict=True)) for w in weights["main"])
    # ReduceLROnPlateau compared the new branch with itself: no halving.
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.001)
    assert not [a for a in status["applied"] if a["kind"] == "external"], status["applied"]
    log = [r.getMessage() for r in caplog.records]
    assert any("reset the monitor state of" in m and "EarlyStopping" in m for m in log), log
    assert any("EarlyStopping restores the weights of its best epoch" in m and "branch main-s0" in m for m in log)
    # ModelCheckpoint saved the new branch's best.
    saved = {name for name in os.listdir(tmp_path) if name.startswith("mc-")}
    assert any(f"mc-{loss:.6f}.weights.h5" in saved for loss in new), (saved, new)


def test_a_restore_warns_about_a_monitor_it_does_not_know_and_calls_the_hook(tmp_path: Any) -> None:
    import keras
    from keras.src.callbacks.monitor_callback import MonitorCallback

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    model = tiny_model()
    retune = _retune(logdir)

    class MyMonitor(MonitorCallback):
        def __init__(self) -> None:
            super().__init__(monitor="loss", mode="min")

    class Resettable(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.restores: list[tuple[str, int]] = []

        def on_retune_restore(self, branch: str, step: int) -> None:
            self.restores.append((branch, step))

    resettable = Resettable()
    ask = _Asker(retune, lambda epoch, batch, branch: branch == "main" and epoch == 2 and batch == 0,
                 {"restore": {"id": "r1", "branch": "main", "step": 4}})
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[ask, retune, MyMonitor(), resettable])
    assert resettable.restores == [("main-s4", 4)]
    errors = [e["message"] for e in read_status(logdir)["errors"]]
    assert any("MyMonitor monitors 'loss' and keeps the abandoned branch's best" in m
               and "on_retune_restore(branch, step)" in m for m in errors), errors


def test_a_restore_one_epoch_back_keeps_the_new_branchs_first_epoch_point(tmp_path: Any) -> None:
    import keras

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    retune = _retune(logdir)
    # At the first batch of epoch 3 (step 8), go back one epoch, to step 4.
    ask = _Asker(retune, lambda epoch, batch, branch: branch == "main" and epoch == 2 and batch == 0,
                 {"restore": {"id": "r1", "branch": "main", "step": 4}})
    tiny_model(keras.optimizers.SGD(0.01)).fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[ask, retune])
    assert read_status(logdir)["branch"] == "main-s4"
    assert _scalar_steps(os.path.join(logdir, "main"), "loss") == [4, 8]
    # The branch trains steps 4..8 again: its epoch ends at step 8, which main logged too.
    assert _scalar_steps(os.path.join(logdir, "main-s4"), "loss") == [8]


def _truncate_keeps_the_checkpoint_step(tmp_path: Any) -> bool:
    """Whether this tree's ``truncate_run`` keeps the points at the resume step
    (the checkpoint-store change of issue 21; older ones drop them)."""
    from tb_retune.trainer.summaries import BranchWriter, truncate_run

    run = str(tmp_path / "probe-run")
    writer = BranchWriter(run, start_step=0)
    writer.scalars(5, {"x": 1.0})
    writer.close()
    truncate_run(run, 5)
    return _scalar_steps(run, "x") == [5]


def test_a_resume_logs_every_epoch_point_once(tmp_path: Any) -> None:
    """A run dies at the start of epoch 4 (checkpoint at step 12); the resumed
    fit logs its own epochs, once each, after the points kept."""
    import keras

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)

    class Die(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if epoch == 3:
                raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        tiny_model().fit(x, y, batch_size=16, epochs=10, verbose=0, callbacks=[_retune(logdir), Die()])
    wait_for(lambda: read_status(logdir).get("state") == "failed", what="the interrupted run to end")
    history = tiny_model().fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[_retune(logdir)])
    assert history.epoch == [3, 4]
    steps = _scalar_steps(os.path.join(logdir, "main"), "loss")
    assert len(steps) == len(set(steps)), steps
    assert steps[-2:] == [16, 20] and steps[:2] == [4, 8]
    if _truncate_keeps_the_checkpoint_step(tmp_path):
        assert steps == [4, 8, 12, 16, 20]  # the last completed epoch before the crash stays


# -- two resume mechanisms ------------------------------------------------------------
def _interrupted_fit(tmp_path: Any, logdir: str, *, at_epoch: int, ours: bool, **kwargs: Any) -> Any:
    """A fit with BackupAndRestore (and ours) that dies at the start of ``at_epoch``."""
    import keras

    class Die(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if epoch == at_epoch:
                raise RuntimeError("interrupted")

    x, y = tiny_data(64)
    model = tiny_model()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    callbacks = [backup, _retune(logdir, **kwargs)] if ours else [backup]
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, batch_size=16, epochs=10, verbose=0, callbacks=[*callbacks, Die()])
    if ours:
        wait_for(lambda: read_status(logdir).get("state") == "failed", what="the interrupted run to end")
    return model


def test_backup_and_restore_after_ours_with_a_backup_is_refused(tmp_path: Any) -> None:
    import keras

    _interrupted_fit(tmp_path, str(tmp_path / "unused"), at_epoch=2, ours=False)
    x, y = tiny_data(64)
    model = tiny_model()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(ValueError, match="Put RetuneCallback after BackupAndRestore"):
        model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[_retune(str(tmp_path / "exp")), backup])
    assert not os.path.exists(tmp_path / "exp" / "retune-status.json")  # nothing was started


def test_backup_and_restore_before_ours_resumes_a_new_experiment(tmp_path: Any) -> None:
    import keras

    _interrupted_fit(tmp_path, str(tmp_path / "unused"), at_epoch=2, ours=False)
    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    model = tiny_model()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    at_start: list[int] = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if not at_start:
                at_start.append(read_status(logdir)["epoch"])

    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[backup, _retune(logdir), Probe()])
    assert history.epoch == [2, 3]  # BackupAndRestore's epoch counter
    assert at_start == [2]  # the experiment starts where the backup was
    status = read_status(logdir)
    assert status["epoch"] == 4 and status["state"] == "finished"


def test_our_experiment_wins_over_an_older_backup_and_restore(tmp_path: Any) -> None:
    """Our newest checkpoint is at epoch 2, the backup at epoch 3: ours is
    loaded over the backup and fit's epoch counter follows it."""
    import keras

    logdir = str(tmp_path / "exp")
    _interrupted_fit(tmp_path, logdir, at_epoch=3, ours=True, checkpoint_every_epochs=2)
    x, y = tiny_data(64)
    model = tiny_model(seed=5)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    starts: list[int] = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            starts.append(int(self.model.optimizer.iterations.numpy()))

    history = model.fit(x, y, batch_size=16, epochs=5, verbose=0,
                        callbacks=[backup, _retune(logdir, checkpoint_every_epochs=2), Probe()])
    assert history.epoch == [2, 3, 4]
    assert starts[0] == 8  # the step of our epoch-2 checkpoint, not the backup's 12
    errors = [e["message"] for e in read_status(logdir)["errors"]]
    assert any("BackupAndRestore's backup in" in m and "was not used" in m for m in errors), errors


# -- fit twice --------------------------------------------------------------------------
def test_a_second_fit_continues_with_keras_semantics_and_keeps_the_users_settings(tmp_path: Any) -> None:
    import keras

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    model = tiny_model(keras.optimizers.SGD(0.01, momentum=0.9))
    retune = _retune(logdir)
    first = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[retune])
    assert first.epoch == [0, 1, 2]
    model.optimizer.learning_rate = 0.05  # the user's own setting between the fits
    model.optimizer.momentum = 0.5
    second = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[retune])
    assert second.epoch == [0, 1, 2]  # 3 more epochs, as plain Keras
    assert int(model.optimizer.iterations.numpy()) == 24
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(0.05)
    assert model.optimizer.momentum == 0.5
    third = model.fit(x, y, batch_size=16, epochs=3, initial_epoch=1, verbose=0, callbacks=[retune])
    assert third.epoch == [1, 2]
    status = read_status(logdir)
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.05)
    assert status["hyperparameters"]["momentum"] == pytest.approx(0.5)
    assert status["branch"] == "main" and status["step"] == 32
    nodes = [n for n in _nodes(os.path.join(logdir, "main")) if n["reason"] == "external"]
    assert len(nodes) == 1 and nodes[0]["step"] == 12
    assert nodes[0]["change"] == {"learning_rate": [0.01, 0.05], "momentum": [0.9, 0.5]}
    assert nodes[0]["set_by"] == "your code between fit() calls"
    assert _scalar_steps(os.path.join(logdir, "main"), "loss") == [4, 8, 12, 16, 20, 24, 28, 32]


# -- the other Keras callbacks, side by side -------------------------------------------
@pytest.mark.parametrize("ours_first", [True, False])
def test_csv_logger_tensorboard_and_lambda_beside_ours(tmp_path: Any, ours_first: bool) -> None:
    import keras

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    ends: list[int] = []
    others = [keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
              keras.callbacks.TensorBoard(str(tmp_path / "tb")),
              keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(epoch))]
    callbacks = [_retune(logdir), *others] if ours_first else [*others, _retune(logdir)]
    tiny_model().fit(x, y, batch_size=16, epochs=3, verbose=0, validation_split=0.25, callbacks=callbacks)
    with open(tmp_path / "log.csv") as f:
        assert len(f.read().strip().splitlines()) == 4  # a header and 3 epochs
    assert os.listdir(tmp_path / "tb" / "train") and ends == [0, 1, 2]
    assert read_status(logdir)["state"] == "finished"
    assert _scalar_steps(os.path.join(logdir, "main"), "val_loss") == [3, 6, 9]


def test_terminate_on_nan_beside_ours_ends_the_run_as_finished(tmp_path: Any) -> None:
    import keras

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    x[0, 0] = np.nan  # a NaN loss at the first batch (no relu to hide it)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False,
                        callbacks=[keras.callbacks.TerminateOnNaN(), _retune(logdir)])
    assert len(history.epoch) == 1
    status = read_status(logdir)
    assert status["state"] == "finished" and status["step"] == 1


@pytest.mark.parametrize("ours_first", [True, False])
def test_checkpoints_hold_the_trained_weights_beside_swap_ema_weights(tmp_path: Any, ours_first: bool) -> None:
    """SwapEMAWeights(swap_on_epoch=True) puts the EMA weights in the model at
    each epoch end; the epoch checkpoint must still hold the trained weights
    (a restore there trains on from them)."""
    import keras

    from tb_retune.trainer.checkpoints import CheckpointStore

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    model = tiny_model(keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.5))
    trained: dict[int, list[np.ndarray]] = {}

    class Probe(keras.callbacks.Callback):  # first in the list: before any swap
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            trained[int(self.model.optimizer.iterations.numpy())] = self.model.get_weights()

    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    callbacks = [Probe(), _retune(logdir), swap] if ours_first else [Probe(), swap, _retune(logdir)]
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=callbacks)
    info = CheckpointStore(os.path.join(logdir, "checkpoints"), None).get("main", 4)
    assert info is not None
    fresh = tiny_model(keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.5), seed=3)
    fresh.optimizer.build(fresh.trainable_variables)
    CheckpointStore.load(CheckpointStore(os.path.join(logdir, "checkpoints"), None), fresh, fresh.optimizer, info)
    # Keras's own swap adds and subtracts: its round trip is exact to a float32 ulp, no more.
    for got, want in zip(fresh.get_weights(), trained[4], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# -- tf.distribute ----------------------------------------------------------------------
_MIRRORED = """
import json, os, sys
import numpy as np, tensorflow as tf, keras
import tb_retune
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
with tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]).scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=100.0)
model.fit(x, x[:, :2], batch_size=16, epochs=3, verbose=0,
          callbacks=[plateau, tb_retune.RetuneCallback(sys.argv[1], verbose=False)])
with open(os.path.join(sys.argv[1], "retune-status.json")) as f:
    print("STATUS", json.dumps(json.load(f)))
"""


def test_mirrored_strategy_learning_rate_is_read(tmp_path: Any) -> None:
    """``float()`` refuses a MirroredVariable; the learning rate is read as Keras's callbacks read it."""
    import json
    import subprocess
    import sys

    logdir = str(tmp_path / "exp")
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", _MIRRORED, logdir], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("STATUS "))
    status = json.loads(line[len("STATUS "):])
    assert status["state"] == "finished"
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.025)  # halved twice, both recorded
    assert [a["set_by"] for a in status["applied"] if a["kind"] == "external"] == ["ReduceLROnPlateau"] * 2
