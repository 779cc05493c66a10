"""A trainer killed (SIGKILL) in the first moments of ``fit`` leaves an experiment that a restart takes up.

The start hands its slow work to the writer's thread (issue 20): git, the root node's record, the
trainer state and the step-0 checkpoint's durable write. The kill comes as soon as the status file
shows the run, while that thread is still at work (the step-0 checkpoint of this model is ~50 MB).
"""

from __future__ import annotations

import glob
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
    # A 2500x2500 hidden layer: the step-0 checkpoint (weights and SGD's momentum) is ~50 MB.
    return subprocess.Popen([sys.executable, SCRIPT, logdir, "--epochs", "1000", "--sleep", "0.005",
                             "--hidden", "2500"], stdout=out, stderr=subprocess.STDOUT, env=env)


def _node_records(run_dir: str) -> list[dict[str, Any]]:
    """The node records in a run's event files, in the order written."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from tb_retune.experiment import metadata

    records = []
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.tag.startswith("retune/node/"):
                    records.append(metadata.decode_node(value.tensor))
    return records


def _trusted_checkpoints_load(logdir: str) -> dict[str, list[int]]:
    """Every checkpoint the store lists passes its checks (a half-written one is never listed)."""
    from tb_retune.trainer.checkpoints import CheckpointStore

    store = CheckpointStore(os.path.join(logdir, "checkpoints"))
    for branch in store.steps():
        for info in store.infos(branch):
            meta, arrays = store.read_arrays(info)  # checks every CRC; raises for a damaged file
            assert meta["step"] == info.step and arrays
    return store.steps()


def _writing_step_0(logdir: str) -> bool:
    """The first checkpoint's temporary file exists (none is published yet): its write is under way."""
    folder = os.path.join(logdir, "checkpoints", "main")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return any(n.startswith(".tmp-") for n in names) and not any(n.endswith(".ckpt") and not n.startswith(".")
                                                                  for n in names)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["status", "checkpoint"])
def test_a_kill_right_after_fit_began_leaves_an_experiment_that_a_restart_continues(tmp_path: Any,
                                                                                     moment: str) -> None:
    logdir = str(tmp_path / "exp")
    with open(str(tmp_path / "trainer.log"), "ab") as out:
        proc = _start(logdir, out)
        try:
            # The first status this trainer writes (the run has begun), or the
            # step-0 checkpoint half-written (its temporary file is there).
            wait_for(lambda: read_status(logdir).get("pid") == proc.pid, interval=0.001, what="the run's status")
            if moment == "checkpoint":
                wait_for(lambda: _writing_step_0(logdir), interval=0.0005, what="the step-0 checkpoint's write")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        shown = read_status(logdir)
        assert shown["state"] == "training" and shown["node"] == "main-1"

        # What the status showed is on disk: the trainer state names the root node,
        # and the root node's record (with its environment) is in main's event files.
        with open(os.path.join(logdir, ".retune-trainer-state.json")) as f:
            state = json.load(f)
        assert state["node"] == "main-1" and state["node_seq"] == {"main": 1}
        roots = [r for r in _node_records(os.path.join(logdir, "main")) if r["id"] == "main-1"]
        assert roots and roots[-1]["parent"] is None and roots[-1]["reason"] == "root"
        assert "python" in roots[-1]["config"]["environment"]
        # The step-0 checkpoint is there whole, or not at all (a leftover temporary file is not listed).
        half_written = glob.glob(os.path.join(logdir, "checkpoints", "main", ".tmp-*"))
        before = _trusted_checkpoints_load(logdir)
        assert before in ({}, {"main": [0]}), before
        if moment == "checkpoint":  # mid-write (its temporary file left, not listed), or just after it
            assert (half_written and before == {}) or before == {"main": [0]}, (half_written, before)

        proc = _start(logdir, out)
        try:
            status = wait_for(lambda: (s := read_status(logdir)).get("pid") == proc.pid and s.get("step", 0) > 10
                              and s, what="the restarted trainer training")
            assert status["branch"] == "main" and status["node"] == "main-1" and status["errors"] == []
            atomic_save(os.path.join(logdir, "retune.json"), {"stop": True})
            assert proc.wait(timeout=120) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    status = read_status(logdir)
    assert status["state"] == "stopped" and status["node"] == "main-1" and status["errors"] == []
    # One experiment: one root (a record written again at step 0 is the same node), main's
    # checkpoints from step 0 on, all of them whole.
    records = _node_records(os.path.join(logdir, "main"))
    assert {r["id"] for r in records} == {"main-1"}
    assert all(r["parent"] is None and r["step"] == 0 for r in records)
    after = _trusted_checkpoints_load(logdir)
    assert after["main"][0] == 0 and after["main"][-1] == status["step"] > 10
