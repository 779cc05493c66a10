"""What the status calls applied survives a kill -9 (issue 14 item 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import atomic_save, read_status, wait_for

SCRIPT = os.path.join(os.path.dirname(__file__), "trainer_script.py")


def _start(logdir: str, out: Any) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    # A 2500x2500 hidden layer: ~50 MB checkpoints with SGD's momentum slots.
    return subprocess.Popen([sys.executable, SCRIPT, logdir, "--epochs", "1000", "--sleep", "0.005",
                             "--hidden", "2500"], stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_a_change_the_status_shows_survives_a_kill_9(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    control = os.path.join(logdir, "retune.json")
    with open(str(tmp_path / "trainer.log"), "ab") as out:
        proc = _start(logdir, out)
        try:
            wait_for(lambda: (s := read_status(logdir)).get("pid") == proc.pid and s.get("step", 0) > 20,
                     what="the trainer running")
            atomic_save(control, {"hyperparameters": {"learning_rate": 0.02}})
            wait_for(lambda: read_status(logdir).get("hyperparameters", {}).get("learning_rate") == 0.02,
                     interval=0.0005, what="the change in the status")
        finally:
            proc.send_signal(signal.SIGKILL)  # as soon as the status shows it
            proc.wait()
        shown = read_status(logdir)
        assert shown["applied"][-1]["what"] == "learning_rate 0.05 -> 0.02"
        proc = _start(logdir, out)
        try:
            status = wait_for(lambda: (s := read_status(logdir)).get("pid") == proc.pid
                              and s.get("step", 0) > shown["applied"][-1]["step"] and s, what="the resumed trainer")
            # In force after the resume: the change is not lost, and not lost silently.
            assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.02)
            assert status["applied"][-1]["what"] == "learning_rate 0.05 -> 0.02"
            assert "lost" not in status["applied"][-1]
            atomic_save(control, {"hyperparameters": {"learning_rate": 0.02}, "stop": True})
            assert proc.wait(timeout=120) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    status = read_status(logdir)
    assert status["state"] == "stopped" and status["hyperparameters"]["learning_rate"] == pytest.approx(0.02)
    # The final checkpoint holds the change: a later start keeps it too.
    from tb_retune.trainer.checkpoints import CheckpointStore

    store = CheckpointStore(os.path.join(logdir, "checkpoints"))
    meta, _ = store.read_arrays(store.latest(status["branch"]))  # type: ignore[arg-type]
    assert meta["hyperparameters"]["learning_rate"] == pytest.approx(0.02)
    json.dumps(meta)
