"""One live trainer per experiment (an flock), and a new run in the same
process that starts while the previous one is still ending (its cleanup
thread writing the last files) waits for it instead of being refused."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from tb_retune import ExperimentLockedError
from tb_retune.experiment.atomic import TrainerLock


def test_a_live_trainer_refuses_another_at_once(tmp_path: Any) -> None:
    path = str(tmp_path / ".retune-trainer.lock")
    first = TrainerLock(path)
    first.acquire()
    try:
        with pytest.raises(ExperimentLockedError, match=rf"another trainer \(pid {os.getpid()}\)"):
            TrainerLock(path).acquire()
    finally:
        first.release()


def test_a_run_that_is_ending_is_waited_for(tmp_path: Any) -> None:
    path = str(tmp_path / ".retune-trainer.lock")
    first = TrainerLock(path)
    first.acquire()
    first.closing()  # its end() began; the release comes from another thread a moment later
    released = threading.Event()

    def finish() -> None:
        first.release()
        released.set()

    timer = threading.Timer(0.3, finish)
    timer.start()
    second = TrainerLock(path)
    second.acquire()  # waits for the release instead of raising
    assert released.is_set()
    second.release()
    timer.join()
    # Once released, the mark is gone: a live holder is refused again.
    second.acquire()
    try:
        with pytest.raises(ExperimentLockedError):
            TrainerLock(path).acquire()
    finally:
        second.release()
