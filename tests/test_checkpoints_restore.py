"""Checkpoints, restore-as-branch, retention, one trainer per experiment."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

from tests.conftest import SlowBatches, atomic_save, live_fit, read_status, tiny_data, tiny_model, wait_for

pytestmark = pytest.mark.backend  # make test runs these under every Keras backend


def _state(model: Any) -> dict[str, np.ndarray]:
    out = {f"model/{v.path}": np.array(v.numpy()) for v in model.weights}
    lr = model.optimizer._learning_rate
    out.update({f"optimizer/{v.path}": np.array(v.numpy()) for v in model.optimizer.variables if v is not lr})
    return out


def test_restore_gives_back_the_real_state_as_a_new_branch(tmp_path: Any) -> None:
    """Restore step S: weights, every optimizer variable and the loss equal those at S."""
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    model = tiny_model(keras.optimizers.Adam(0.01))
    snapshots: dict[int, dict[str, np.ndarray]] = {}
    losses: dict[str, dict[int, float]] = {}
    restore_at = 5

    class Probe(keras.callbacks.Callback):
        """Records the state before each step, the loss after; asks for a restore."""

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            step = int(self.model.optimizer.iterations.numpy())
            self._branch = read_status(logdir).get("branch", "main")
            self._step = step
            if self._branch == "main":
                snapshots[step] = _state(self.model)
            else:
                snapshots.setdefault(-step, _state(self.model))  # first state of the branch
            if step == 12 and self._branch == "main":
                atomic_save(os.path.join(logdir, "retune.json"),
                            {"restore": {"id": "r-test", "branch": "main", "step": restore_at}})

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            losses.setdefault(self._branch, {})[self._step] = float(logs["loss"])

    # One batch per epoch, no shuffle: "the same batch" at every step.
    model.fit(x, y, batch_size=64, epochs=40, shuffle=False, verbose=0,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False, keep_checkpoints=None), Probe(), SlowBatches(0.01)])
    status = read_status(logdir)
    new_branch = "main-s5"
    assert status["branch"] == new_branch, status["applied"]
    assert status["restores_done"] == ["r-test"]
    restored = snapshots[-restore_at]
    expected = snapshots[restore_at]
    assert restored.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(restored[key], expected[key], err_msg=key)
    assert losses[new_branch][restore_at] == pytest.approx(losses["main"][restore_at], rel=1e-6)
    # The branch is its own run, counting from the restored step.
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(os.path.join(logdir, new_branch),
                                             size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    steps = [e.step for e in acc.Tensors("hyperparameters/learning_rate")]
    assert min(steps) == restore_at
    node = [t for t in acc.Tags()["tensors"] if t.startswith("retune/node/")]
    assert node == [f"retune/node/{new_branch}-1"]
    from tb_retune.experiment import metadata

    record = metadata.decode_node(acc.Tensors(node[0])[-1].tensor_proto)
    assert record["parent"] == "main-1" and record["restore"] == {"branch": "main", "step": 5, "node": "main-1"}
    assert record["request_id"] == "r-test"
    # The new branch's first checkpoint is the restored one; main kept where it left.
    assert restore_at in status["checkpoints"][new_branch]
    assert any(s > 12 for s in status["checkpoints"]["main"])


def test_restore_with_hyperparameters_and_exactly_once(tmp_path: Any) -> None:

    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    # All checkpoints kept: a periodic one that the status lists may otherwise be pruned by
    # the time the restore is taken (that error is the test's last case).
    with live_fit(logdir, batch_size=16, sleep=0.003, keep_checkpoints=None) as fit:
        wait_for(lambda: len(read_status(logdir).get("checkpoints", {}).get("main", [])) >= 3, what="checkpoints")
        step = read_status(logdir)["checkpoints"]["main"][1]
        request = {"restore": {"id": "r-1", "branch": "main", "step": step,
                               "hyperparameters": {"learning_rate": 0.001}}}
        atomic_save(control, request)
        status = wait_for(lambda: (s := read_status(logdir)).get("restores_done") == ["r-1"] and s, what="restore")
        assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.001)
        assert status["branch"] == f"main-s{step}"
        # Rewriting the file with the same id (and another key) does not restore again.
        request["hyperparameters"] = {"momentum": 0.5}
        atomic_save(control, request)
        wait_for(lambda: read_status(logdir).get("hyperparameters", {}).get("momentum") == 0.5, what="momentum")
        status = read_status(logdir)
        assert status["branch"] == f"main-s{step}"
        assert [a["kind"] for a in status["applied"]].count("restore") == 1
        # A restore to a step that has no checkpoint: a clear error, training goes on.
        atomic_save(control, {"restore": {"id": "r-2", "branch": "main", "step": step + 1}})
        status = wait_for(lambda: (s := read_status(logdir)).get("errors") and s, what="error")
        assert f"has no checkpoint at step {step + 1}" in status["errors"][-1]["message"]
        atomic_save(control, {"stop": True})
        fit.join_ok()


def test_retention_keeps_boundaries_and_last_k(tmp_path: Any) -> None:
    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 7, "hyperparameters": {"learning_rate": 0.02}}]}, f)
    model = tiny_model()
    x, y = tiny_data(64)
    model.fit(x, y, batch_size=8, epochs=6, verbose=0,
              callbacks=[tb_retune.RetuneCallback(logdir, verbose=False, checkpoint_every_steps=2,
                                                  checkpoint_every_epochs=None, keep_checkpoints=3)])
    status = read_status(logdir)
    steps = status["checkpoints"]["main"]
    assert 0 in steps and 7 in steps  # branch start and the boundary before the change
    periodic = [s for s in steps if s not in (0, 7, 48)]
    assert periodic == [42, 44, 46], steps
    files = os.listdir(os.path.join(logdir, "checkpoints", "main"))
    assert len(files) == len(steps)
    assert not [f for f in files if f.startswith(".")]


def test_unfinished_checkpoint_files_are_never_used(tmp_path: Any) -> None:
    from tb_retune.trainer.checkpoints import CheckpointStore

    model = tiny_model()
    model.optimizer.build(model.trainable_variables)
    store = CheckpointStore(str(tmp_path / "ck"))
    info = store.save(model, model.optimizer, branch="main", step=3, node="main-1", kind="epoch",
                      meta={"epoch": 1, "hyperparameters": {}})
    # A crash in the middle of a write leaves a hidden temporary file.
    with open(os.path.join(os.path.dirname(info.path), ".tmp-abc.npz"), "wb") as f:
        f.write(b"PK\x03\x04 half")
    store2 = CheckpointStore(str(tmp_path / "ck"))
    assert store2.steps() == {"main": [3]}
    assert os.listdir(os.path.dirname(info.path)) == [os.path.basename(info.path)]
    meta = store2.load(model, model.optimizer, store2.get("main", 3))  # type: ignore[arg-type]
    assert meta["step"] == 3


def test_a_second_trainer_is_refused(tmp_path: Any) -> None:
    import tb_retune

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    with live_fit(logdir, samples=64):
        other = tiny_model(seed=1)
        with pytest.raises(tb_retune.ExperimentLockedError, match=rf"another trainer \(pid {os.getpid()}\)"):
            other.fit(x, y, epochs=1, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])


def test_steps_are_counted_right_after_a_mid_epoch_restore(tmp_path: Any) -> None:
    """Batch scalars and the status step follow optimizer.iterations on the new branch."""
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(320)  # 10 batches of 32
    cb = tb_retune.RetuneCallback(logdir, update_freq=1, verbose=False)
    seen: list[tuple[str, int, int]] = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if int(self.model.optimizer.iterations.numpy()) == 15 and cb.controller.branch == "main":
                atomic_save(os.path.join(logdir, "retune.json"), {"restore": {"id": "r1", "branch": "main", "step": 10}})
                assert cb.controller.mailbox.wait_posted(cb.controller.mailbox.taken, timeout=120), "revision read"

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            seen.append((cb.controller.branch, int(self.model.optimizer.iterations.numpy()), cb.controller.current_step()))

    tiny_model().fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[Probe(), cb])
    assert any(b == "main-s10" for b, _, _ in seen)
    assert [s for s in seen if s[1] != s[2]] == []
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(os.path.join(logdir, "main-s10"), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    assert min(e.step for e in acc.Tensors("loss")) == 11  # the batch from 10 to 11
