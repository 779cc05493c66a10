"""A revision is planned, validated whole, then committed: whole or nothing."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.conftest import atomic_save, live_fit, read_status, wait_for


def _errors(logdir: str) -> list[str]:
    return [e["message"] for e in read_status(logdir).get("errors", [])]


def test_a_schedule_conflicting_with_the_same_revision_changes_nothing(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    with live_fit(logdir) as fit:
        atomic_save(control, {"hyperparameters": {"clipnorm": 1.0},
                              "schedule": [{"at_step": 0, "hyperparameters": {"clipvalue": 0.5}}]})
        wait_for(lambda: _errors(logdir), what="the error")
        message = _errors(logdir)[-1]
        assert "schedule(at_step=0)" in message and "only one of clipnorm" in message, message
        status = read_status(logdir)
        assert status["hyperparameters"]["clipnorm"] is None and status["hyperparameters"]["clipvalue"] is None
        assert fit.model.optimizer.clipnorm is None
        assert status["control"]["result"] == "rejected"
        atomic_save(control, {"stop": True})


def test_a_failing_restore_leaves_the_schedule_of_its_revision_unplanned(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    with live_fit(logdir, batch_size=16, sleep=0.005) as fit:
        wait_for(lambda: len(read_status(logdir).get("checkpoints", {}).get("main", [])) >= 2, what="checkpoints")
        first = read_status(logdir)["checkpoints"]["main"][0]
        folder = os.path.join(logdir, "checkpoints", "main")
        [name] = [n for n in os.listdir(folder) if n.startswith(f"step-{first:010d}-")]
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"not a checkpoint")  # damaged after it was listed
        at = read_status(logdir)["step"] + 40
        schedule = [{"at_step": at, "hyperparameters": {"learning_rate": 0.0321}}]
        atomic_save(control, {"restore": {"id": "r-bad", "branch": "main", "step": first}, "schedule": schedule})
        wait_for(lambda: _errors(logdir), what="the restore's error")
        assert f"main@{first}" in _errors(logdir)[-1] or name in _errors(logdir)[-1], _errors(logdir)
        status = read_status(logdir)
        assert status["branch"] == "main" and status["restores_done"] == []
        # The same schedule in a valid revision is planned and fires.
        atomic_save(control, {"schedule": schedule})
        wait_for(lambda: read_status(logdir)["hyperparameters"]["learning_rate"] == pytest.approx(0.0321),
                 what="the schedule entry")
        assert read_status(logdir)["step"] >= at
        assert float(fit.model.optimizer.learning_rate) == pytest.approx(0.0321)
        atomic_save(control, {"schedule": schedule, "stop": True})
