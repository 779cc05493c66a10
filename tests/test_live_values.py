"""The schema's new rules with a real fit(): float32 bounds and learning_rate 0 (issue 14 item 3,
issue 13 bug 11), and errors that stay small in the status (issue 14 item 8)."""

from __future__ import annotations

import os
from typing import Any

from tb_retune.experiment import control_file
from tests.conftest import atomic_save, live_fit, read_status, wait_for


def messages(logdir: str) -> list[str]:
    return [str(e.get("message")) for e in read_status(logdir).get("errors", []) if isinstance(e, dict)]


def test_values_float32_cannot_hold_are_refused_and_zero_freezes(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    with live_fit(logdir) as fit:
        for doc, needle in [
            ({"hyperparameters": {"learning_rate": 1e39}}, "hyperparameters.learning_rate: 1e+39 is too large"),
            ({"hyperparameters": {"learning_rate": 1e-46}}, "hyperparameters.learning_rate: 1e-46 is too small"),
            ({"hyperparameters": {"weight_decay": 1e39}}, "hyperparameters.weight_decay: 1e+39 is too large"),
        ]:
            atomic_save(control, doc)
            wait_for(lambda n=needle: any(n in m for m in messages(logdir)), timeout=120, what=needle)
        assert fit.is_alive() and read_status(logdir)["state"] == "training"
        assert read_status(logdir)["hyperparameters"]["learning_rate"] == 0.01
        atomic_save(control, {"hyperparameters": {"learning_rate": 0}})
        wait_for(lambda: read_status(logdir)["hyperparameters"]["learning_rate"] == 0, timeout=120,
                 what="learning_rate 0 in force")
    # The experiment starts again with what its file holds (learning_rate 0 is no longer "must be > 0").
    with live_fit(logdir):
        wait_for(lambda: read_status(logdir).get("step", 0) > 0, timeout=120, what="a resumed run")
        assert not [m for m in messages(logdir) if "must be > 0" in m]


def test_errors_stay_small_whatever_is_saved(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    with live_fit(logdir):
        for i in range(25):
            atomic_save(control, {f"{i:02d}" + "k" * 200_000: 1})
            wait_for(lambda i=i: any(f"{i:02d}kkk" in m[:10] for m in messages(logdir)), timeout=120,
                     what=f"the error of save {i}")
        size = os.path.getsize(os.path.join(logdir, "retune-status.json"))
        assert size < 64 * 1024, size  # 25 saves of 200 KB made it 5 MB
        assert all(len(m) <= 500 for m in messages(logdir))
        status, error = control_file.read_status_checked(logdir)
        assert error is None and status is not None
