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


def test_request_tracking_applies_named_keys_and_records_each_outcome(tmp_path: Any) -> None:
    """Interface 1: (a) values changed in the file, (b) keys named by the writer's stamp."""
    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")

    def control_is(rid: str) -> Any:
        return wait_for(lambda: (c := read_status(logdir).get("control")) and c.get("revision") == rid and c,
                        what=f"control for {rid}")

    with live_fit(logdir, batch_size=16, sleep=0.003) as fit:
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.05},
                              "revision": {"id": "w-000000000001", "keys": ["learning_rate"]}})
        assert control_is("w-000000000001")["result"] == "applied"
        wait_for(lambda: len(read_status(logdir).get("checkpoints", {}).get("main", [])) >= 2, what="checkpoints")
        step = read_status(logdir)["checkpoints"]["main"][0]
        # A restore brings back the learning rate of its checkpoint; the file still says 0.05.
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.05},
                              "restore": {"id": "r-1", "branch": "main", "step": step},
                              "revision": {"id": "w-000000000002", "keys": []}})
        assert control_is("w-000000000002")["result"] == "applied"
        assert read_status(logdir)["hyperparameters"]["learning_rate"] == pytest.approx(0.01)
        # Typing back the value the file already holds: (b) applies it.
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.05},
                              "restore": {"id": "r-1", "branch": "main", "step": step},
                              "revision": {"id": "w-000000000003", "keys": ["learning_rate"]}})
        record = control_is("w-000000000003")
        assert record["result"] == "applied" and record["error"] is None
        assert read_status(logdir)["hyperparameters"]["learning_rate"] == pytest.approx(0.05)
        assert float(fit.model.optimizer.learning_rate) == pytest.approx(0.05)
        # The same request again: nothing to do.
        atomic_save(control, {"hyperparameters": {"learning_rate": 0.05},
                              "restore": {"id": "r-1", "branch": "main", "step": step},
                              "revision": {"id": "w-000000000004", "keys": ["learning_rate"]}})
        assert control_is("w-000000000004")["result"] == "unchanged"
        # A bad one is rejected, with its error.
        atomic_save(control, {"hyperparameters": {"learning_rate": -1},
                              "revision": {"id": "w-000000000005", "keys": ["learning_rate"]}})
        record = control_is("w-000000000005")
        assert record["result"] == "rejected" and "learning_rate" in record["error"]
        assert len(record["sha256"]) == 64
        atomic_save(control, {"stop": True})
