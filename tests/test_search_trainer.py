"""A search in a real trainer process: asked for in ``retune.json`` and with
``tb-retune search``, its trials as branches (TensorBoard runs that start at
the source step), ``searches[id]`` in the status, training going on with the
best, changes refused while it runs, and a trainer killed with SIGKILL in
the middle of it resuming with exactly ``trials`` trials (issue 17)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import atomic_save, read_status, wait_for

#: The trainer's (and a worker's) command: a real fit with RetuneCallback (``tb_retune/testing/search_trainer.py``).
SCRIPT = ["-m", "tb_retune.testing.search_trainer"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIAL_KEYS = {"number", "branch", "hyperparameters", "value", "state", "worker"}

pytestmark = pytest.mark.slow


class ScriptProcess:
    """A command in a process of its own, its output in a log file beside the experiment."""

    def __init__(self, argv: list[str], log_path: str) -> None:
        self.log_path = log_path
        self.log = open(log_path, "a")
        env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self.log.close()


class Trainer(ScriptProcess):
    """``tb_retune/testing/search_trainer.py`` in a process of its own."""

    def __init__(self, logdir: str, sleep: float, extra: list[str] | None = None) -> None:
        self.logdir = logdir
        super().__init__([sys.executable, *SCRIPT, logdir, "--sleep", str(sleep), *(extra or [])],
                         os.path.join(os.path.dirname(logdir), f"trainer-{os.path.basename(logdir)}.log"))

    def wait_metrics(self) -> dict[str, Any]:
        """Until the status names the metrics fit logs (the first epoch ended)."""
        return wait_for(lambda: self._alive() and "val_loss" in (read_status(self.logdir).get("metrics") or [])
                        and read_status(self.logdir), timeout=180, what="the first epoch's metrics")

    def _alive(self) -> bool:
        assert self.proc.poll() is None, f"the trainer exited {self.proc.returncode}:\n{self.output()[-3000:]}"
        return True

    def stop(self) -> None:
        with open(os.path.join(self.logdir, "retune.json")) as f:
            control = json.load(f)
        control["stop"] = True
        atomic_save(os.path.join(self.logdir, "retune.json"), control)
        assert self.proc.wait(timeout=180) == 0, self.output()[-3000:]


@pytest.fixture
def trainers() -> Iterator[list[Trainer]]:
    started: list[Trainer] = []
    yield started
    for t in started:
        t.close()


def search_of(logdir: str, search_id: str) -> dict[str, Any] | None:
    entry = (read_status(logdir).get("searches") or {}).get(search_id)
    return entry if isinstance(entry, dict) else None


def done(logdir: str, search_id: str) -> dict[str, Any] | None:
    entry = search_of(logdir, search_id)
    if entry is not None and entry["state"] != "running":
        return entry
    return None


def branch_records(logdir: str, branch: str) -> tuple[list[dict[str, Any]], dict[str, list[int]]]:
    """The node records (the last of each tag) and the scalar steps of a branch's run."""
    from tensorboard.backend.event_processing import event_accumulator

    from tb_retune.experiment import metadata

    acc = event_accumulator.EventAccumulator(os.path.join(logdir, branch),
                                             size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    records = [metadata.decode_node(acc.Tensors(t)[-1].tensor_proto) for t in tags
               if t.startswith(metadata.NODE_TAG_PREFIX)]
    steps = {t: [e.step for e in acc.Tensors(t)] for t in tags if not t.startswith("retune/")}
    return records, steps


SPACE = {"learning_rate": {"low": 1e-3, "high": 0.3, "log": True}, "momentum": {"low": 0.0, "high": 0.9}}


def test_a_search_in_retune_json_runs_its_trials_as_branches_and_goes_on_with_the_best(
        tmp_path: Any, trainers: list[Trainer]) -> None:
    logdir = str(tmp_path / "exp")
    trainer = Trainer(logdir, sleep=0.01)
    trainers.append(trainer)
    trainer.wait_metrics()
    atomic_save(os.path.join(logdir, "retune.json"), {"search": {
        "id": "s-1", "space": SPACE, "trials": 4, "steps_per_trial": 12,
        "objective": {"metric": "val_loss"}, "sampler": "random"}})
    entry = wait_for(lambda: trainer._alive() and done(logdir, "s-1"), timeout=180, what="the search's end")
    assert entry["state"] == "done", entry
    source = entry["source"]
    assert source["branch"] == "main" and source["step"] > 0
    trials = entry["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    for t in trials:
        assert TRIAL_KEYS <= set(t), t
        assert t["state"] == "complete" and t["value"] > 0 and t["step"] == source["step"] + 12
        assert t["worker"] == {"host": os.uname().nodename, "pid": trainer.proc.pid}
        assert t["branch"] == f"main-s-1-t{t['number']}"
        # Its own TensorBoard run, whose points lie in (source step, end step].
        records, steps = branch_records(logdir, t["branch"])
        assert steps["loss"] and all(source["step"] < s <= t["step"] for s in steps["loss"]), steps["loss"]
        first = min(records, key=lambda r: r["seq"])
        assert first["step"] == source["step"] and first["restore"]["branch"] == "main"
        assert first["search"]["id"] == "s-1" and first["search"]["trial"] == t["number"]
        assert first["search"]["state"] == "complete" and first["search"]["value"] == pytest.approx(t["value"])
        assert first["search"]["hyperparameters"] == t["hyperparameters"]
    assert trials[0]["baseline"] and trials[0]["hyperparameters"] == {"learning_rate": pytest.approx(0.05),
                                                                      "momentum": pytest.approx(0.5)}
    best = entry["best"]
    assert set(best) == {"number", "branch", "value", "hyperparameters"}
    assert best["value"] == min(t["value"] for t in trials)
    # Training goes on from the best trial's end, with its settings, as a branch of its own.
    assert entry["outcome"]["branch"] == "main-s-1-best"
    assert entry["outcome"]["from"] == {"branch": best["branch"], "step": source["step"] + 12}
    status = wait_for(lambda: (s := read_status(logdir))["branch"] == "main-s-1-best"
                      and s["step"] > source["step"] + 30 and s, timeout=120, what="training on the best")
    for name, value in best["hyperparameters"].items():
        assert status["hyperparameters"][name] == pytest.approx(value)
    assert status["errors"] == []
    trainer.stop()


def test_tb_retune_search_and_changes_refused_while_it_runs(tmp_path: Any, trainers: list[Trainer]) -> None:
    logdir = str(tmp_path / "exp")
    trainer = Trainer(logdir, sleep=0.03)
    trainers.append(trainer)
    trainer.wait_metrics()
    env = {**os.environ, "PYTHONPATH": ROOT}
    cli = subprocess.Popen(
        [sys.executable, "-m", "tb_retune.cli", "search", logdir, "--id", "s-cli", "--space",
         "learning_rate=1e-3:0.3:log", "--space", "nesterov=true,false", "--trials", "3", "--steps", "40",
         "--objective", "val_loss", "--pruner", "none", "--wait", "--timeout", "300"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: trainer._alive() and any(t["number"] >= 1 for t in (search_of(logdir, "s-cli") or {})
                                               .get("trials", [])), timeout=180, what="the second trial")
    lr_before = read_status(logdir)["hyperparameters"]["learning_rate"]
    with open(os.path.join(logdir, "retune.json")) as f:
        control = json.load(f)
    control["hyperparameters"] = {"learning_rate": 0.9}
    source = search_of(logdir, "s-cli")["source"]  # type: ignore[index]
    control["restore"] = {"id": "r-during", "branch": "main", "step": source["step"]}
    atomic_save(os.path.join(logdir, "retune.json"), control)
    error = wait_for(lambda: [e["message"] for e in read_status(logdir)["errors"]
                              if "hyperparameters.learning_rate=0.9" in e["message"]], timeout=120,
                     what="the refusal")
    assert error[0].startswith("search: search s-cli is running"), error
    assert f"restore main@{source['step']} (id r-during)" in error[0]
    out, _ = cli.communicate(timeout=300)
    assert cli.returncode == 0, out
    assert "search s-cli: done, 3/3 trials done" in out and "training goes on as branch main-s-cli-best" in out
    entry = search_of(logdir, "s-cli")
    assert entry is not None and entry["state"] == "done"
    # The change was refused for good: no trial and not the branch after the search got 0.9.
    assert all(t["hyperparameters"]["learning_rate"] != 0.9 for t in entry["trials"])
    assert read_status(logdir)["hyperparameters"]["learning_rate"] != 0.9
    assert lr_before != 0.9
    # The restore was refused for good too: its id counts as used, no branch came of it.
    status = read_status(logdir)
    assert "r-during" in status["restores_done"]
    assert not [b for b, info in status["branches"].items() if info.get("request_id") == "r-during"]
    trainer.stop()  # stop still stops (written after the search, through the same file)


def test_a_trainer_killed_mid_search_resumes_it_with_exactly_trials_trials(
        tmp_path: Any, trainers: list[Trainer]) -> None:
    logdir = str(tmp_path / "exp")
    first = Trainer(logdir, sleep=0.04)
    trainers.append(first)
    first.wait_metrics()
    atomic_save(os.path.join(logdir, "retune.json"), {"search": {
        "id": "s-k", "space": SPACE, "trials": 5, "steps_per_trial": 40,
        "objective": {"metric": "val_loss"}, "sampler": "random"}})

    def second_trial_running() -> bool:
        entry = search_of(logdir, "s-k") or {"trials": []}
        return any(t["number"] == 1 and t["state"] == "running" for t in entry["trials"])

    wait_for(lambda: first._alive() and second_trial_running(), timeout=180, interval=0.01, what="trial 1")
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=60)
    second = Trainer(logdir, sleep=0.01)
    trainers.append(second)
    entry = wait_for(lambda: second._alive() and done(logdir, "s-k"), timeout=240, what="the resumed search")
    assert entry["state"] == "done", entry
    interrupted = [t for t in entry["trials"] if t.get("interrupted")]
    counted = [t for t in entry["trials"] if not t.get("interrupted")]
    assert len(counted) == 5, entry["trials"]
    # The status lags the trainer by up to a heartbeat: the trial killed is trial 1 or a later one.
    assert len(interrupted) == 1 and interrupted[0]["number"] >= 1 and interrupted[0]["state"] == "failed"
    retry = [t for t in counted if t.get("retry_of") == interrupted[0]["number"]]
    assert len(retry) == 1 and retry[0]["hyperparameters"] == interrupted[0]["hyperparameters"]
    assert all(t["state"] == "complete" for t in counted)
    assert {t["worker"]["pid"] for t in counted} <= {first.proc.pid, second.proc.pid}
    assert "search s-k resumes" in second.output()
    wait_for(lambda: read_status(logdir)["branch"] == "main-s-k-best", timeout=120, what="training on the best")
    second.stop()
