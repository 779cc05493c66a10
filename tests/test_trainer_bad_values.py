"""Values the optimizer's float type cannot hold never crash fit nor brick the experiment."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.conftest import atomic_save, live_fit, read_status, tiny_data, tiny_model, wait_for


def test_out_of_range_values_are_refused_and_a_restart_with_them_starts(tmp_path: Any) -> None:
    import tb_retune

    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    cases = [({"learning_rate": 1e39}, "learning_rate: 1e+39 is too large for the optimizer's float32"),
             ({"learning_rate": 1e-46}, "learning_rate: 1e-46 is too small for the optimizer's float32"),
             ({"weight_decay": 1e39}, "weight_decay: 1e+39 is too large")]
    with live_fit(logdir) as fit:
        for i, (values, needle) in enumerate(cases):
            atomic_save(control, {"hyperparameters": values})
            status = wait_for(lambda i=i: (s := read_status(logdir)) and len(s.get("errors", [])) > i and s,
                              what=f"the error for {values}")
            assert needle in status["errors"][i]["message"], status["errors"][i]
            assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.01)
            assert status["hyperparameters"]["weight_decay"] is None
            assert status["state"] == "training" and fit.is_alive()
        atomic_save(control, {"stop": True})
        fit.join_ok()
    assert read_status(logdir)["state"] == "stopped"
    # A file that holds a bad value at the start: reported, and training starts.
    atomic_save(control, {"hyperparameters": {"weight_decay": 1e39}})
    x, y = tiny_data(64)
    tiny_model().fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    status = read_status(logdir)
    assert status["state"] == "finished" and status["epoch"] == 2
    assert "weight_decay: 1e+39 is too large" in status["errors"][-1]["message"]


def test_a_bad_value_saved_in_a_checkpoint_is_reported_and_the_optimizer_keeps_its_own(tmp_path: Any) -> None:
    import tb_retune
    from tb_retune.trainer.checkpoints import CheckpointStore, Snapshot

    logdir = str(tmp_path / "exp")
    x, y = tiny_data(64)
    tiny_model().fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    store = CheckpointStore(os.path.join(logdir, "checkpoints"))
    info = store.latest("main")
    assert info is not None
    meta, arrays = store.read_arrays(info)
    meta["hyperparameters"]["learning_rate"] = 1e39  # as a tb-retune without the range check saved it
    meta["hyperparameters"]["momentum"] = 0.5
    store.write(Snapshot(info.branch, info.step, info.node, info.kind, meta, list(arrays), list(arrays.values())))
    model = tiny_model()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    status = read_status(logdir)
    assert status["state"] == "finished"
    assert any("resume.learning_rate: 1e+39 is too large" in e["message"] and "keeping the optimizer's" in e["message"]
               for e in status["errors"]), status["errors"]
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert float(model.optimizer.momentum) == pytest.approx(0.5)  # the good saved values are in force
