"""Two real processes asking one journal study at once get distinct trials:
the groundwork for a search's workers (issue 18)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import optuna
import pytest

from tb_retune.trainer.search import journal_path
from tb_retune.trainer.search._study import open_storage

ASKER = textwrap.dedent("""
    import json, os, sys, time
    import optuna
    from tb_retune.trainer.search._study import open_storage

    logdir, name, count, go, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(logdir))
    deadline = time.monotonic() + 120
    while not os.path.exists(go):  # both start asking together
        if time.monotonic() > deadline:
            sys.exit("no go file")
        time.sleep(0.005)
    got = []
    for _ in range(count):
        trial = study.ask()
        x = trial.suggest_float("x", -1.0, 1.0)
        got.append({"number": trial.number, "x": x, "enqueued": trial.user_attrs.get("enqueued")})
        study.tell(trial, x * x)
    with open(out, "w") as f:
        json.dump({"pid": os.getpid(), "trials": got}, f)
""")


@pytest.mark.slow
def test_two_processes_asking_one_journal_study_get_distinct_trials(tmp_path: Any) -> None:
    logdir = str(tmp_path)
    study = optuna.create_study(study_name="s-par", storage=open_storage(logdir))
    enqueued = 6
    for i in range(enqueued):  # like a baseline and retries: each must be taken by one process only
        study.enqueue_trial({"x": i / 10}, user_attrs={"enqueued": i})
    go = os.path.join(logdir, "go")
    each = 12
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", ASKER, logdir, "s-par", str(each), go,
                               os.path.join(logdir, f"out-{i}.json")], env=env, stderr=subprocess.PIPE)
             for i in range(2)]
    time.sleep(1.0)  # both are up and waiting (the go file is what they wait on, not this sleep)
    open(go, "w").close()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    results = []
    for i in range(2):
        with open(os.path.join(logdir, f"out-{i}.json")) as f:
            results.append(json.load(f))
    assert results[0]["pid"] != results[1]["pid"]
    numbers = [t["number"] for r in results for t in r["trials"]]
    assert len(numbers) == 2 * each
    assert sorted(numbers) == list(range(2 * each)), numbers  # distinct, none lost
    taken = sorted(t["enqueued"] for r in results for t in r["trials"] if t["enqueued"] is not None)
    assert taken == list(range(enqueued))  # every queued trial ran once, in one process
    final = optuna.load_study(study_name="s-par", storage=open_storage(logdir))
    assert len(final.trials) == 2 * each
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in final.trials)
    assert os.path.isfile(journal_path(logdir))


TRAINER = textwrap.dedent("""
    import json, os, sys, time
    from tb_retune.experiment import atomic
    from tb_retune.experiment.search import parse_search
    from tb_retune.trainer.search import SearchEngine
    from tests.search_loop import LoopHost

    logdir, ask = sys.argv[1], sys.argv[2] == "ask"
    host = LoopHost(checkpoint_dir=os.path.join(logdir, "ckpt"))
    if ask:
        for _ in range(30):
            host.train_step()
        host.save()
    engine = SearchEngine(logdir, host)
    if ask:
        engine.submit(parse_search({"id": "s-kill", "from": {"branch": "main", "step": 30},
                                    "space": {"learning_rate": {"low": 1e-3, "high": 1.0, "log": True},
                                              "nesterov": {"choices": [True, False]}},
                                    "trials": 5, "steps_per_trial": 40, "objective": {"metric": "val_loss"}}))
    for _ in range(100000):
        logs, host.pending_logs = host.pending_logs, {}
        action = engine.on_boundary(host.step, logs or None)
        atomic.atomic_write_json(os.path.join(logdir, "progress.json"),
                                 {"pid": os.getpid(), "step": host.step, "branch": host.branch,
                                  "searches": engine.searches(), "errors": host.errors})
        if action.kind == "done":
            break
        host.train_step()
        time.sleep(0.003)
""")


def _progress(logdir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(logdir, "progress.json")) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_in_a_new_process_with_exactly_its_trials(tmp_path: Any) -> None:
    logdir = str(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    first = subprocess.Popen([sys.executable, "-c", TRAINER, logdir, "ask"], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:  # until trial 2 is well under way
        trials = (_progress(logdir).get("searches") or {}).get("s-kill", {}).get("trials", [])
        if len(trials) == 3 and trials[2]["state"] == "running" and _progress(logdir)["step"] >= 30 + 10:
            break
        assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
        assert time.monotonic() < deadline, "trial 2 never ran"
        time.sleep(0.01)
    first.kill()  # SIGKILL, mid-trial
    first.wait(timeout=60)
    before = trials
    second = subprocess.run([sys.executable, "-c", TRAINER, logdir, "resume"], env=env, capture_output=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr.decode()
    progress = _progress(logdir)
    assert progress["errors"] == []
    entry = progress["searches"]["s-kill"]
    assert entry["state"] == "done"
    counted = [t for t in entry["trials"] if not t.get("interrupted")]
    assert len(counted) == 5 and all(t["state"] == "complete" for t in counted)
    assert counted[:2] == before[:2]
    assert [t["number"] for t in entry["trials"] if t.get("interrupted")] == [2]
    retry = [t for t in counted if t.get("retry_of") == 2]
    assert len(retry) == 1 and retry[0]["hyperparameters"] == before[2]["hyperparameters"]
    assert {t["worker"]["pid"] for t in counted[:2]} == {first.pid}
    assert {t["worker"]["pid"] for t in counted[2:]} == {progress["pid"]} != {first.pid}
    # The journal, read by plain Optuna, agrees.
    study = optuna.load_study(study_name="s-kill", storage=open_storage(logdir))
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 5 and states.count("FAIL") == 1
