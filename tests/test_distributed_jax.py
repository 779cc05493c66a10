"""Two JAX processes (``keras.distribution.DataParallel``, gloo on 127.0.0.1)
share one experiment: every change and restore takes effect at the same step
in both, proven by bit-for-bit equal weights; only process 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_jax_script.py")
pytest.importorskip("jax")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_two(logdir: str, *args: str, timeout: float = 150, every: int = 1) -> None:
    """Starts both processes of the job and waits for both; a failure of either fails."""
    port = str(_free_port())
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2", TB_RETUNE_TEST_AGREE_EVERY=str(every))
    procs = [subprocess.Popen([sys.executable, SCRIPT, logdir, port, str(i), *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i} failed:\n{outputs[i][-4000:]}"


def _load(root: Any, i: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with open(root / f"process-{i}.json") as f:
        return dict(np.load(root / f"process-{i}.npz")), json.load(f)


@pytest.mark.slow
def test_two_processes_apply_every_change_and_restore_at_the_same_step(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    run_two(logdir, "6")
    (w0, seen0), (w1, seen1) = _load(tmp_path, 0), _load(tmp_path, 1)
    assert sorted(w0) == sorted(w1) and len(w0) >= 4
    for key in w0:
        assert np.array_equal(w0[key], w1[key]), f"{key} differs between the processes"
    assert seen0 == seen1  # the same changes at the same steps, on the same branch
    with open(os.path.join(logdir, "retune-status.json")) as f:
        status = json.load(f)
    applied = [(a["step"], a["kind"], a["what"].split(";")[0]) for a in status["applied"]]
    assert applied == [
        (3, "control", "learning_rate 0.05 -> 0.01"),
        (9, "control", "momentum 0 -> 0.5"),
        (8, "restore", "restored main@8 as branch main-s8"),
        (8, "control", "learning_rate 0.01 -> 0.02"),
        (12, "control", "learning_rate 0.02 -> 0.03"),
    ]
    assert [(a["step"], a["kind"]) for a in seen0["applied"]] == [(s, k) for s, k, _ in applied]
    assert status["state"] == "finished" and status["branch"] == "main-s8" and status["step"] == seen0["step"]
    assert status["pid"] != os.getpid() and status["restores_done"] == ["r-1"]
    # Only process 0 wrote: one status (its pid), one set of event files per branch.
    events = [n for b in ("main", "main-s8") for n in os.listdir(os.path.join(logdir, b))
              if n.startswith("events.out.tfevents")]
    assert len(events) == 2, events

    # Restart both: both resume on the same branch and step, and stay equal.
    run_two(logdir, "7", "quiet")
    (r0, again0), (r1, again1) = _load(tmp_path, 0), _load(tmp_path, 1)
    for key in r0:
        assert np.array_equal(r0[key], r1[key]), f"{key} differs after the resume"
    assert again0["branch"] == again1["branch"] == "main-s8"
    assert again0["step"] == again1["step"] > seen0["step"]


@pytest.mark.slow
def test_agreeing_every_three_steps_applies_changes_only_there(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    run_two(logdir, "6", every=3)
    (w0, seen0), (w1, seen1) = _load(tmp_path, 0), _load(tmp_path, 1)
    for key in w0:
        assert np.array_equal(w0[key], w1[key]), f"{key} differs between the processes"
    assert seen0 == seen1
    kinds = [a["kind"] for a in seen0["applied"]]
    assert kinds.count("restore") == 1 and kinds.count("control") == 4
    restore_at = kinds.index("restore")
    # A change on its own waits for the next boundary that is a multiple of 3 (the one that comes
    # with the restore is applied with it, at the restored step).
    for i, a in enumerate(seen0["applied"]):
        if a["kind"] == "control" and i != restore_at + 1:
            assert a["step"] % 3 == 0, seen0["applied"]


@pytest.mark.slow
def test_a_killed_process_ends_the_job_and_a_restart_resumes_both_alike(tmp_path: Any) -> None:
    import time

    logdir = str(tmp_path / "exp")
    port = str(_free_port())
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
    procs = [subprocess.Popen([sys.executable, SCRIPT, logdir, port, str(i), "500", "quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in (0, 1)]
    status_path = os.path.join(logdir, "retune-status.json")

    def status() -> dict[str, Any]:
        try:
            with open(status_path) as f:
                return dict(json.load(f))
        except (OSError, ValueError):
            return {}

    try:
        deadline = time.monotonic() + 120
        while len(status().get("checkpoints", {}).get("main", [])) < 3:
            assert time.monotonic() < deadline and procs[0].poll() is None, "the job did not start"
            time.sleep(0.1)
        procs[1].kill()  # kill -9 of one process
        procs[1].wait()
        # The other one's next collective fails: the job ends, the status says why.
        deadline = time.monotonic() + 120
        while status().get("state") != "failed":
            assert time.monotonic() < deadline, status()
            time.sleep(0.1)
        assert status().get("error"), status()
    finally:
        for p in procs:  # process 0 aborts by itself once JAX's runtime notices; do not wait for it
            if p.poll() is None:
                p.kill()
            p.wait()
    last = status()["checkpoints"]["main"][-1]
    # Restart both: they resume from the last checkpoint, on the same branch and step, and stay equal.
    run_two(logdir, str(last // 4 + 2), "quiet")
    (r0, again0), (r1, again1) = _load(tmp_path, 0), _load(tmp_path, 1)
    for key in r0:
        assert np.array_equal(r0[key], r1[key]), f"{key} differs after the resume"
    assert again0["branch"] == again1["branch"] == "main"
    assert again0["step"] == again1["step"] == (last // 4 + 2) * 4
    assert status()["state"] == "finished", status()
