"""A 12-trial search on 1, 2 and 3 processes: the trainer alone, then with
``tb-retune worker`` processes joining it (issue 18).

Everything is the real thing, as ``tests/test_search_workers.py`` runs it: one
trainer process (``tb_retune/testing/search_trainer.py``, the tests' script:
a tiny model in ``fit``, RetuneCallback, ``--heartbeat 1,5``) trains for the
whole benchmark; for each search, N - 1 workers (``python -m tb_retune.cli worker
EXP --wait-for-search 600 -- python -m tb_retune.testing.search_trainer EXP``) are
started and awaited until they print that they wait for a search (so their
TensorFlow import and model build are not in the figure), then the search request
is saved into ``retune.json`` (atomically) and the clock runs until
``retune-status.json`` says ``searches[id].state == "done"``.

Each batch of every process sleeps ``--sleep`` seconds: that sleep stands for a
real model's step time (an accelerator's, or other machines' cores), which a
trial is dominated by. Two CPU cores cannot run three CPU-bound TensorFlow
processes in parallel, but they can run three processes that mostly wait.

The configurations are interleaved (1, 2, 3, then 3, 2, 1, ...); the value is the
median over rounds of the per-round speed-up t1 / tN.

```sh
.venv/bin/python benchmarks/bench_workers.py --quick --json bench-workers.json
```
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import log as _log  # noqa: E402
from benchmarks._common import median, quiet, spread, write_result  # noqa: E402
from tb_retune.testing.waiting import wait_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = ["-m", "tb_retune.testing.search_trainer"]
TRIALS = 12
PROCESSES = (1, 2, 3)
SPACE = {"learning_rate": {"low": 1e-3, "high": 0.3, "log": True}, "momentum": {"low": 0.0, "high": 0.9}}
#: What a waiting worker prints (``tb_retune.trainer.worker``), as the tests wait for it.
WAITING = "waiting for a search"


def read_status(logdir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(logdir, "retune-status.json")) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except (OSError, ValueError):
        return {}


def atomic_save(path: str, obj: Any) -> None:
    tmp = path + ".swp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)




class Process:
    """A child process with its output in a log file."""

    def __init__(self, argv: list[str], log_path: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "a")
        env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.proc.args[1]} exited {self.proc.returncode}:\n{self.output()[-3000:]}")
        return True

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self._log.close()


#: Training samples of the script: an epoch of 128 steps, so most trials cross no epoch end (with the
#: tests' 128 samples, every 8 steps: a validation pass and a durable checkpoint 4 times in a trial).
SAMPLES = 2048


def _trainer(logdir: str, sleep: float) -> Process:
    return Process([sys.executable, *SCRIPT, logdir, "--sleep", str(sleep), "--samples", str(SAMPLES),
                    "--heartbeat", "1,5"],
                   os.path.join(os.path.dirname(logdir), "trainer.log"))


def _worker(logdir: str, sleep: float, name: str) -> Process:
    return Process([sys.executable, "-m", "tb_retune.cli", "worker", logdir, "--wait-for-search", "600", "--",
                    sys.executable, *SCRIPT, logdir, "--sleep", str(sleep), "--samples", str(SAMPLES)],
                   os.path.join(os.path.dirname(logdir), f"worker-{name}.log"))


def _gaps(trials: list[dict[str, Any]]) -> list[float]:
    """Seconds from one trial's end to the next one's start, in one process."""
    ordered = sorted(trials, key=lambda t: t["started"])
    return [b["started"] - a["ended"] for a, b in zip(ordered, ordered[1:], strict=False)]


def one_search(logdir: str, trainer: Process, search_id: str, processes: int, *, steps: int,
               sleep: float) -> dict[str, Any]:
    """One search of ``TRIALS`` trials on the trainer and ``processes - 1`` workers; seconds and the trials."""
    workers = [_worker(logdir, sleep, f"{search_id}-{i}") for i in range(processes - 1)]
    try:
        t_ready = time.perf_counter()
        for w in workers:
            wait_for(lambda w=w: w.alive() and WAITING in w.output(), 300, what="a worker waiting for a search")
        ready_s = time.perf_counter() - t_ready
        request = {"search": {"id": search_id, "space": SPACE, "trials": TRIALS, "steps_per_trial": steps,
                              "objective": {"metric": "val_loss"}, "sampler": "random", "pruner": "none"}}
        path = os.path.join(logdir, "retune.json")
        tmp = path + ".swp"
        with open(tmp, "w") as f:
            json.dump(request, f)
        wall0, t0 = time.time(), time.perf_counter()
        os.replace(tmp, path)  # the clock starts at the request

        def finished() -> dict[str, Any] | None:
            trainer.alive()
            entry = (read_status(logdir).get("searches") or {}).get(search_id)
            return entry if isinstance(entry, dict) and entry.get("state") != "running" else None

        entry = wait_for(finished, 300, what=f"search {search_id} to end")
        took = time.perf_counter() - t0
        for w in workers:
            if w.proc.wait(timeout=120) != 0:
                raise RuntimeError(f"a worker exited {w.proc.returncode}:\n{w.output()[-3000:]}")
    finally:
        for w in workers:
            w.close()
    if entry["state"] != "done":
        raise RuntimeError(f"search {search_id} ended {entry['state']}: {entry.get('outcome')}")
    counted = [t for t in entry["trials"] if not t.get("interrupted")]
    if len(counted) != TRIALS:
        raise RuntimeError(f"search {search_id}: {len(counted)} trials counted, not {TRIALS}")
    pid = trainer.proc.pid
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for t in counted:
        by_pid.setdefault(t["worker"]["pid"], []).append(t)
    mine = by_pid.get(pid, [])
    return {
        "processes": processes,
        "wall_s": round(took, 3),
        "workers_ready_s": round(ready_s, 1),
        "trials_per_process": sorted((len(v) for v in by_pid.values()), reverse=True),
        "trials_by_trainer": len(mine),
        # From the request to the first trial's start, per process (the trainer first).
        "first_start_s": [round(min(t["started"] for t in v) - wall0, 3)
                          for _, v in sorted(by_pid.items(), key=lambda kv: kv[0] != pid)],
        "last_end_to_done_seen_s": round(wall0 + took - max(t["ended"] for t in counted), 3),
        "trial_s": [round(t["ended"] - t["started"], 3) for t in counted],
        "trainer_trial_s": [round(t["ended"] - t["started"], 3) for t in mine],
        "trainer_gap_s": [round(g, 3) for g in _gaps(mine)],
    }


def compare(*, rounds: int, steps: int = 24, sleep: float = 0.05, log: Callable[[str], None] = _log,
            keep: str | None = None) -> dict[str, Any]:
    """``rounds`` rounds of a search on 1, 2 and 3 processes, interleaved (1 2 3, 3 2 1, ...);
    in a temporary folder, or in ``keep`` (left there, with the processes' logs)."""
    runs: list[dict[str, Any]] = []
    with contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="tbr-bench-workers-") as tmp:
        logdir = os.path.join(tmp, "exp")
        trainer = _trainer(logdir, sleep)
        try:
            t0 = time.perf_counter()
            wait_for(lambda: trainer.alive() and "val_loss" in (read_status(logdir).get("metrics") or []), 300,
                     what="the trainer's first epoch")
            log(f"  trainer ready after {time.perf_counter() - t0:.1f}s")
            n = 0
            for r in range(rounds):
                for processes in (PROCESSES if r % 2 == 0 else PROCESSES[::-1]):
                    n += 1
                    run = one_search(logdir, trainer, f"s-{n}", processes, steps=steps, sleep=sleep)
                    run["round"] = r
                    runs.append(run)
                    log(f"  round {r}: {processes} process(es): {run['wall_s']:.2f}s, trials per process "
                        f"{run['trials_per_process']} (workers ready in {run['workers_ready_s']}s)")
            status = read_status(logdir)
            control = {"stop": True}
            atomic_save(os.path.join(logdir, "retune.json"), control)
            try:
                trainer.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pass
        finally:
            trainer.close()
    out = summarize(runs, rounds=rounds, steps=steps, sleep=sleep, searches=len(status.get("searches") or {}))
    log(summary(out))
    return out


def summarize(runs: list[dict[str, Any]], *, rounds: int, steps: int, sleep: float, searches: int) -> dict[str, Any]:
    wall = {p: [r["wall_s"] for r in sorted(runs, key=lambda r: r["round"]) if r["processes"] == p]
            for p in PROCESSES}
    speedup = {p: [a / b for a, b in zip(wall[1], wall[p], strict=True)] for p in PROCESSES[1:]}
    ideal = TRIALS * steps * sleep  # the sleeps alone, in one process
    solo = [r for r in runs if r["processes"] == 1]
    # A trial of the trainer alone, from its start to its end (status times), beyond its sleeps:
    # the switch (restore, a retrace for a new momentum), the steps' own compute, the evaluation
    # at its end, its end checkpoint and Optuna's tell.
    over = [s - steps * sleep for r in solo for s in r["trainer_trial_s"]]
    gaps = [g for r in solo for g in r["trainer_gap_s"]]
    per_trial_over = [(w - ideal) / TRIALS for w in wall[1]]
    trial_s = {p: [s for r in runs if r["processes"] == p for s in r["trial_s"]] for p in PROCESSES}
    worker_join = [s for r in runs for s in r["first_start_s"][1:]]
    out: dict[str, Any] = {
        "workers_speedup_2_processes": round(median(speedup[2]), 3),
        "workers_speedup_3_processes": round(median(speedup[3]), 3),
        "workers_search_s_1_process": round(median(wall[1]), 2),
        "workers_search_s_2_processes": round(median(wall[2]), 2),
        "workers_search_s_3_processes": round(median(wall[3]), 2),
        "workers_trial_overhead_ms": round(median(over) * 1e3, 1),
        "details": {
            "rounds": rounds, "trials": TRIALS, "steps_per_epoch": SAMPLES // 16, "steps_per_trial": steps,
            "sleep_per_batch_s": sleep, "sleep_per_trial_s": round(steps * sleep, 3),
            "sleep_per_search_s": round(ideal, 3),
            "searches_run": searches,
            "wall_s": {p: {"median": median(v), "spread": spread(v), "rounds": v} for p, v in wall.items()},
            "speedup": {p: {"median": round(median(v), 3), "spread": spread(v), "rounds": [round(x, 3) for x in v]}
                        for p, v in speedup.items()},
            "trial_s": {p: {"median": median(v), "spread": spread(v)} for p, v in trial_s.items()},
            "one_process_trial_over_sleeps_ms": {"median": round(median(over) * 1e3, 1), "spread": spread(over)},
            "one_process_gap_between_trials_ms": {"median": round(median(gaps) * 1e3, 1), "spread": spread(gaps)},
            "one_process_search_over_sleeps_ms_per_trial": {"median": round(median(per_trial_over) * 1e3, 1),
                                                            "spread": spread(per_trial_over)},
            # From the request to a worker's first trial: it polls for a search once a second.
            "worker_first_trial_after_s": {"median": median(worker_join), "spread": spread(worker_join)},
            "runs": runs,
        },
    }
    return out


def summary(result: dict[str, Any]) -> str:
    d = result["details"]
    lines = [f"a search of {d['trials']} trials x {d['steps_per_trial']} steps, {d['sleep_per_batch_s']}s sleep per "
             f"batch ({d['sleep_per_search_s']}s of sleeps in all), {d['rounds']} rounds, interleaved:"]
    for p in PROCESSES:
        w, t = d["wall_s"][p], d["trial_s"][p]
        extra = "" if p == 1 else (f"; speed-up t1/t{p} {d['speedup'][p]['median']:.2f}x "
                                   f"(rounds {d['speedup'][p]['spread']})")
        lines.append(f"  {p} process(es): {w['median']:.2f}s (rounds {w['spread']}), a trial {t['median']:.2f}s "
                     f"({t['spread']}){extra}")
    o, g = d["one_process_trial_over_sleeps_ms"], d["one_process_gap_between_trials_ms"]
    lines.append(f"  the trainer alone: a trial lasts {o['median']:.0f} ms ({o['spread']} s) more than its "
                 f"{d['sleep_per_trial_s']}s of sleeps, {g['median']:.0f} ms between trials; "
                 f"(search - sleeps) / trials = {d['one_process_search_over_sleeps_ms_per_trial']['median']:.0f} ms")
    j = d["worker_first_trial_after_s"]
    lines.append(f"  a worker's first trial starts {j['median']:.2f}s ({j['spread']}) after the request")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 3")
    parser.add_argument("--rounds", type=int, help="rounds of 1, 2 and 3 processes")
    parser.add_argument("--steps", type=int, default=24, help="steps per trial")
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds of sleep per batch")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--keep", metavar="FOLDER", help="run in FOLDER and leave the experiment and logs there")
    args = parser.parse_args(argv)
    quiet()
    rounds = args.rounds or (2 if args.quick else 3)
    result = compare(rounds=rounds, steps=args.steps, sleep=args.sleep, keep=args.keep)  # logs its summary on stderr
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
