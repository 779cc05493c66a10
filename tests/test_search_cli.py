"""``tb-retune search``: the request it writes, what it refuses, and ``--wait``
following a real search (real engine, real Optuna, a real loop on a thread,
the command line in its own process); ``tb-retune status`` shows searches."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tb_retune.cli import main
from tests.search_loop import FileTrainer, LoopHost

ISSUE_COMMAND = ["--from", "main@400", "--space", "learning_rate=1e-4:0.3:log", "--space", "nesterov=true,false",
                 "--trials", "8", "--steps", "200", "--objective", "val_loss", "--sampler", "tpe",
                 "--pruner", "hyperband"]


def write_status(folder: str, **extra: Any) -> None:
    import time

    status = {"pid": os.getpid(), "heartbeat": time.time(), "state": "training", "branch": "main",
              "node": "main-1", "step": 450,
              "hyperparameters": {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False},
              "checkpoints": {"main": [0, 200, 400]}, "metrics": ["loss", "val_loss"], "errors": []}
    status.update(extra)
    with open(os.path.join(folder, "retune-status.json"), "w") as f:
        json.dump(status, f)


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def control(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, "retune.json")) as f:
        return json.load(f)


def test_the_issue_command_writes_the_request(tmp_path: Any) -> None:
    folder = str(tmp_path)
    write_status(folder)
    code, out, err = cli("search", folder, *ISSUE_COMMAND, "--id", "s-1")
    assert (code, err) == (0, "")
    assert control(folder)["search"] == {
        "id": "s-1", "from": {"branch": "main", "step": 400},
        "space": {"learning_rate": {"low": 1e-4, "high": 0.3, "log": True},
                  "nesterov": {"choices": [True, False]}},
        "trials": 8, "steps_per_trial": 200, "objective": {"metric": "val_loss"},
        "sampler": "tpe", "pruner": "hyperband", "then": "best"}
    assert "requested search s-1: 8 trials of 200 steps" in out
    # Without --id, a new id; the step alone means the branch in force; ranges in steps.
    code, out, err = cli("search", folder, "--from", "200", "--space", "momentum=0:0.9:step=0.3",
                         "--trials", "5", "--steps", "50", "--objective", "loss", "--sampler", "grid", "--json")
    assert code == 0, err
    request = control(folder)["search"]
    assert request["id"].startswith("s-") and request["id"] == json.loads(out)["id"]
    assert request["from"] == {"branch": "main", "step": 200}
    assert request["space"] == {"momentum": {"low": 0, "high": 0.9, "step": 0.3}}


@pytest.mark.parametrize("args, needle", [
    (["--space", "lerning_rate=1e-4:0.3"], "search.space.lerning_rate: unknown hyperparameter"),
    (["--space", "learning_rate=1e-4"], None),  # one choice is fine
    (["--space", "learning_rate"], "--space 'learning_rate': expected NAME=LOW:HIGH"),
    (["--space", "learning_rate=1:2:3:4"], "at most one of :log or :step=S"),
    (["--space", "learning_rate=1e-4:0.3:cubic"], "'cubic' is neither log nor step=S"),
    (["--space", "learning_rate=0.3:1e-4"], "search.space.learning_rate: low 0.3 must be <= high 0.0001"),
    (["--space", "momentum=0:1", "--space", "momentum=0:0.5"], "--space momentum: given twice"),
    (["--space", "momentum=0:1", "--from", "main@401"], "search.from.step: branch \"main\" has no checkpoint at step 401"),
    (["--space", "momentum=0:1", "--from", "main@x"], "--from 'main@x': expected BRANCH@STEP"),
    (["--space", "momentum=0:1", "--objective", "val_accuracy"], "search.objective.metric: fit does not log"),
    (["--space", "momentum=0:1", "--trials", "0"], "search.trials: must be the number of trials between 1"),
])
def test_a_refused_request_writes_nothing(tmp_path: Any, args: list[str], needle: str | None) -> None:
    folder = str(tmp_path)
    write_status(folder)
    base = {"--trials": "4", "--steps": "20", "--objective": "val_loss"}
    for i, a in enumerate(args):
        if a in base and i + 1 < len(args):
            base.pop(a)
    full = [*args] + [x for kv in base.items() for x in kv]
    code, out, err = cli("search", folder, *full)
    if needle is None:
        assert code == 0, err
        return
    assert code == 1 and needle in err, err
    assert err.startswith("tb-retune: error: ") and err.count("\n") == 1
    assert not os.path.exists(os.path.join(folder, "retune.json"))


def test_wait_follows_a_real_search_to_its_end_and_status_shows_it(tmp_path: Any) -> None:
    folder = str(tmp_path)
    host = LoopHost()
    for _ in range(30):
        host.train_step()
    host.save()
    with FileTrainer(folder, host, step_s=0.01):
        proc = subprocess.run(
            [sys.executable, "-m", "tb_retune.cli", "search", folder, "--from", "main@30",
             "--space", "learning_rate=1e-3:1.5:log", "--space", "nesterov=true,false", "--trials", "3",
             "--steps", "40", "--objective", "val_loss", "--pruner", "median", "--id", "s-cli", "--wait"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("requested search s-cli: 3 trials of 40 steps")
        running = [line for line in lines if line.startswith("search s-cli: running, ")]
        assert running and all("(1 running, " in line for line in running), lines
        assert running[0].endswith("time left not known yet") or running[0].endswith("s left")
        assert any(line.endswith("s left") and ", about " in line for line in running), lines
        assert lines[-1].startswith("search s-cli: done, 3/3 trials done (0 running")
        assert "best val_loss" in lines[-1] and "training goes on as branch main-s-cli-best" in lines[-1]
        code, out, _ = cli("status", folder)
    assert code == 0
    assert "search s-cli: done, 3/3 trials done" in out


def test_a_search_id_in_use_is_refused(tmp_path: Any) -> None:
    folder = str(tmp_path)
    write_status(folder, searches={"s-1": {"state": "done", "trials": []}})
    code, _, err = cli("search", folder, *ISSUE_COMMAND, "--id", "s-1")
    assert code == 1
    assert err == ("tb-retune: error: search.id: 's-1' already names a search of this experiment (state done); "
                   "give the new search a new id\n")


def test_wait_says_when_the_trainer_refuses_the_search(tmp_path: Any) -> None:
    folder = str(tmp_path)
    host = LoopHost()
    for _ in range(10):
        host.train_step()  # logs loss and val_loss
    host.save()
    # A status without the metrics list: only the trainer can check the objective.
    with FileTrainer(folder, host, publish_metrics=False):
        proc = subprocess.run(
            [sys.executable, "-m", "tb_retune.cli", "search", folder, "--space", "momentum=0:0.5",
             "--trials", "2", "--steps", "10", "--objective", "val_accuracy", "--id", "s-bad", "--wait",
             "--timeout", "60"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 1
    assert proc.stderr == ("tb-retune: error: the trainer refused search s-bad: search.objective.metric: fit does "
                           "not log \"val_accuracy\"; it logs: loss, val_loss\n")


def test_status_lines_for_running_and_failed_searches(tmp_path: Any) -> None:
    import time

    folder = str(tmp_path)
    now = time.time()
    running = {"state": "running", "total": 4, "objective": {"metric": "val_loss", "mode": "min"},
               "trials": [{"number": 0, "state": "complete", "value": 0.5, "started": now - 30, "ended": now - 20,
                           "hyperparameters": {"learning_rate": 0.01}},
                          {"number": 1, "state": "pruned", "value": None, "started": now - 20, "ended": now - 10,
                           "hyperparameters": {"learning_rate": 0.3}},
                          {"number": 2, "state": "running", "value": None, "started": now - 4, "ended": None,
                           "hyperparameters": {"learning_rate": 0.001}}],
               "best": {"number": 0, "branch": "main-s-1-t0", "value": 0.5, "hyperparameters": {"learning_rate": 0.01}}}
    failed = {"state": "failed", "total": 2, "trials": [], "best": None,
              "outcome": {"error": "search s-2: OSError: disk full; training goes on from where it is"}}
    write_status(folder, searches={"s-1": running, "s-2": failed})
    code, out, _ = cli("status", folder)
    assert code == 0
    lines = out.splitlines()
    # 2 finished in 10 s each: one left to start (10 s) and one running for 4 s (6 s more).
    assert ("search s-1: running, 2/4 trials done (1 running, 1 pruned), best val_loss 0.5 (trial 0: "
            "learning_rate=0.01), about 16s left") in lines
    assert ("search s-2: failed, 0/2 trials done (0 running, 0 pruned); search s-2: OSError: disk full; "
            "training goes on from where it is") in lines


def test_the_progress_line_says_how_many_processes_run_trials() -> None:
    from tb_retune.cli._search import progress_line

    def trial(n: int, state: str, pid: int) -> dict[str, Any]:
        return {"number": n, "state": state, "worker": {"host": "h", "pid": pid}, "started": 1.0, "ended": None}

    entry = {"state": "running", "total": 6, "trials": [trial(0, "running", 1), trial(1, "running", 2),
                                                        trial(2, "running", 2)]}
    assert "(3 running on 2 processes, 0 pruned)" in progress_line("s-1", entry, 2.0)
    entry["trials"] = [trial(0, "running", 1)]
    assert "(1 running, 0 pruned)" in progress_line("s-1", entry, 2.0)
