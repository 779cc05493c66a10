"""One callback, several fits; fresh starts on folders that hold an experiment."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.conftest import atomic_save, read_status, tiny_data, tiny_model


def test_a_stop_ends_one_fit_not_the_next(tmp_path: Any) -> None:
    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    atomic_save(os.path.join(logdir, "retune.json"), {"stop": True})
    x, y = tiny_data(64)  # 8 steps per epoch with batch 8
    callback = tb_retune.RetuneCallback(logdir, verbose=False)
    model = tiny_model()
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback])
    status = read_status(logdir)
    assert status["state"] == "stopped" and status["step"] == 1
    os.unlink(os.path.join(logdir, "retune.json"))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    status = read_status(logdir)
    assert status["state"] == "finished"
    assert status["step"] == 1 + 16  # the cut epoch is trained again, then the second


def test_resume_false_on_an_existing_experiment_is_refused_and_changes_nothing(tmp_path: Any) -> None:
    import tb_retune

    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    atomic_save(os.path.join(logdir, "retune.json"), {"schedule": [{"at_step": 4, "hyperparameters": {"momentum": 0.5}}]})
    x, y = tiny_data(64)
    tiny_model().fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tb_retune.RetuneCallback(logdir, verbose=False)])
    before = read_status(logdir)
    files = sorted(os.listdir(os.path.join(logdir, "main")))
    with pytest.raises(tb_retune.ExperimentExistsError, match=r"already holds an experiment .*resume=True .*new logdir"):
        tiny_model().fit(x, y, batch_size=8, epochs=1, verbose=0,
                         callbacks=[tb_retune.RetuneCallback(logdir, verbose=False, resume=False)])
    after = read_status(logdir)
    assert after["node"] == before["node"] == "main-2" and after["state"] == "finished"
    assert after["step"] == before["step"]
    assert sorted(os.listdir(os.path.join(logdir, "main"))) == files  # no second run's events
