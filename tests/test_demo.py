"""The demos as a person runs them: real processes, real files, a real TensorBoard.

Each test starts ``demo/run.py`` or ``demo/custom_loop.py`` with the test's
Python, in a temporary folder, and reads back what they wrote: the printed
paths, ``retune-status.json``, the checkpoints and the event files (through
TensorBoard's own loader).
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import atomic_save, read_status

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parent.parent / "demo"
ENV = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")


def run_demo(script: str, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEMO / script), *args], cwd=cwd, env=ENV, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


class Demo:
    """A demo running in the background, its output collected by a thread."""

    def __init__(self, script: str, cwd: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(DEMO / script), *args], cwd=cwd, env=ENV, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._drain, args=(s, o), daemon=True)
                         for s, o in ((self.process.stdout, self.out), (self.process.stderr, self.err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _drain(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait(self, timeout: float) -> int:
        rc = self.process.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=5)
        return rc

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    started: list[Demo] = []
    yield started
    for demo in started:
        demo.kill()


def wait_for(what: str, check: Callable[[], Any], timeout: float, demo: Demo | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if demo is not None and demo.process.poll() is not None:
            value = check()
            if value:
                return value
            pytest.fail(f"the demo exited ({demo.process.returncode}) before {what}:\n"
                        f"{demo.stdout}\n{demo.stderr}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}" + (f":\n{demo.stdout}\n{demo.stderr}" if demo else ""))


def summaries(path: str) -> list[tuple[int, str]]:
    """(step, tag) of every summary value in one event file."""
    from tensorboard.backend.event_processing import event_file_loader

    return [(e.step, v.tag) for e in event_file_loader.EventFileLoader(path).Load()
            if e.HasField("summary") for v in e.summary.value]


def event_files(logdir: Path, branch: str = "main") -> list[str]:
    return sorted(glob.glob(str(logdir / branch / "events.out.tfevents.*")), key=os.path.getmtime)


def test_run_trains_then_resumes_then_says_it_is_done(tmp_path: Path) -> None:
    logdir = tmp_path / "runs" / "digits"
    first = run_demo("run.py", tmp_path, "--no-tensorboard", "--epochs", "1", "--minutes", "0",
                     "--logdir", "runs/digits")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Control file: {logdir / 'retune.json'}" in first.stdout
    assert "learning_rate=0.05" in first.stdout and '{"hyperparameters": {"learning_rate": 0.05}}' in first.stdout
    assert "Traceback" not in first.stderr
    one = read_status(str(logdir))
    assert one["state"] == "finished" and one["epoch"] == 1 and one["step"] > 0
    step1 = one["step"]
    assert one["checkpoints"]["main"][0] == 0 and step1 in one["checkpoints"]["main"]
    [events1] = event_files(logdir)
    tags = {tag for _, tag in summaries(events1)}
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "hyperparameters/learning_rate",
            "hyperparameters/momentum", "retune/node/main-1"} <= tags

    second = run_demo("run.py", tmp_path, "--no-tensorboard", "--epochs", "2", "--minutes", "0",
                      "--logdir", "runs/digits")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resumed branch main at step {step1}" in second.stdout
    assert "Epoch 2/2" in second.stdout and "Epoch 1/2" not in second.stdout
    two = read_status(str(logdir))
    assert two["state"] == "finished" and two["epoch"] == 2 and two["step"] == 2 * step1
    assert {step1, 2 * step1} <= set(two["checkpoints"]["main"])
    events2 = [f for f in event_files(logdir) if f != events1]
    assert len(events2) == 1
    steps = [step for step, tag in summaries(events2[0]) if tag == "loss"]
    assert steps and min(steps) > step1  # no restart from 0

    third = run_demo("run.py", tmp_path, "--no-tensorboard", "--epochs", "2", "--logdir", "runs/digits")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "already trained 2 epochs" in third.stdout and "--epochs 4" in third.stdout
    assert read_status(str(logdir))["step"] == 2 * step1


def test_custom_loop_takes_a_learning_rate_change_and_resumes(tmp_path: Path, demos: list[Demo]) -> None:
    logdir = tmp_path / "runs" / "digits-custom"
    demo = Demo("custom_loop.py", tmp_path, "--no-tensorboard", "--epochs", "2", "--minutes", "0.15",
                "--update-freq", "5", "--logdir", str(logdir))
    demos.append(demo)
    wait_for("the control file's path", lambda: f"Control file: {logdir / 'retune.json'}" in demo.stdout,
             60, demo)
    wait_for("training", lambda: read_status(str(logdir)).get("state") == "training" and read_status(str(logdir)).get("step", 0) > 0,
             60, demo)
    atomic_save(str(logdir / "retune.json"), {"hyperparameters": {"learning_rate": 0.05}})
    applied = wait_for("the change in retune-status.json",
                       lambda: [a for a in read_status(str(logdir)).get("applied", []) if "learning_rate" in a["what"]],
                       30, demo)
    assert demo.wait(60) == 0, demo.stdout + demo.stderr
    assert applied[0]["what"] == "learning_rate 0.005 -> 0.05" and applied[0]["kind"] == "control"
    assert re.search(r"retune: step \d+ learning_rate 0.005 -> 0.05", demo.stdout)
    assert "Traceback" not in demo.stderr
    one = read_status(str(logdir))
    assert one["state"] == "finished" and one["epoch"] == 2 and one["node"] == "main-2"
    assert one["hyperparameters"]["learning_rate"] == 0.05
    step1 = one["step"]
    assert 0 < applied[0]["step"] < step1 and applied[0]["step"] in one["checkpoints"]["main"]
    node_steps = [step for step, tag in summaries(event_files(logdir)[0]) if tag == "retune/node/main-2"]
    assert node_steps == [applied[0]["step"]]

    again = run_demo("custom_loop.py", tmp_path, "--no-tensorboard", "--epochs", "3", "--minutes", "0",
                     "--logdir", str(logdir))
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resumed branch main at step {step1}" in again.stdout
    assert f"epoch 3/3 step {step1 + step1 // 2}" in again.stdout and "epoch 1/3" not in again.stdout
    two = read_status(str(logdir))
    assert two["state"] == "finished" and two["epoch"] == 3 and two["step"] == step1 + step1 // 2
    assert two["hyperparameters"]["learning_rate"] == 0.05  # the change outlives the restart
    assert len(two["applied"]) == 1


def test_restore_through_tensorboard_then_ctrl_c_stops_both(tmp_path: Path, demos: list[Demo]) -> None:
    logdir = tmp_path / "runs" / "digits"
    demo = Demo("run.py", tmp_path, "--epochs", "10", "--minutes", "3", "--logdir", "runs/digits")
    demos.append(demo)
    started = wait_for("TensorBoard's pid",
                       lambda: re.search(r"Starting TensorBoard on (\S+) \(pid (\d+)\)", demo.stdout), 60, demo)
    url, tb_pid = started.group(1), int(started.group(2))
    try:
        wait_for("the instructions", lambda: "Ctrl-C stops" in demo.stdout, 90, demo)
        assert f"TensorBoard:  {url}#retune" in demo.stdout
        assert f"Control file: {logdir / 'retune.json'}" in demo.stdout
        with urllib.request.urlopen(url + "data/plugins_listing", timeout=10) as r:
            assert "retune" in json.loads(r.read())
        wait_for("training", lambda: read_status(str(logdir)).get("step", 0) > 0, 60, demo)
        # What the tab's Restore button does, through the demo's TensorBoard.
        request = urllib.request.Request(
            url + "data/plugin/retune/restore", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment": "digits", "branch": "main", "step": 0}).encode())
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200
        wait_for("the restore", lambda: read_status(str(logdir)).get("branch") == "main-s0", 30, demo)
        demo.process.send_signal(signal.SIGINT)
        rc = demo.wait(60)
        assert rc in (0, 130), demo.stdout + demo.stderr
        assert "Traceback" not in demo.stderr, demo.stderr
        assert "stopping after this batch" in demo.stdout
        final = read_status(str(logdir))
        assert final["state"] in ("stopped", "finished")
        assert final["branch"] == "main-s0" and final["step"] in final["checkpoints"]["main-s0"]
        wait_for("TensorBoard to be gone", lambda: not _alive(tb_pid), 10)
    finally:
        demo.kill()
        if _alive(tb_pid):  # the demo's TensorBoard, left behind by a failure
            os.kill(tb_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
