"""``tb-retune worker EXPERIMENT -- COMMAND``: one more process for a running search.

Runs the user's own training command with :data:`~tb_retune.experiment.worker.ENV_VAR`
set, so that the ``RetuneCallback`` in it joins the running search of the
experiment instead of training the experiment's branch (``trainer/worker.py``).
Optuna's shared study is the only coordination: the trainer and every worker
ask it for trials. The command runs again while the search has trials left
for it and the last run finished at least one (a ``fit`` shorter than the
search); it ends with status 0 when no trial is left.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from tb_retune.cli._experiment import CliError
from tb_retune.experiment import worker as spec_mod

SUMMARY = "run your training command as one more worker of a running search"
DESCRIPTION = (
    "Runs COMMAND (your own training script, the one that trains EXPERIMENT with RetuneCallback) so that "
    "its RetuneCallback joins the search running in EXPERIMENT instead of training the experiment's branch: "
    "it restores the search's source checkpoint, asks the shared Optuna study for a trial, trains it for "
    "steps_per_trial as a branch of its own, reports it, and repeats until the study has no trial left; "
    "then fit ends and so does this command, with status 0. With no search running it waits for one. "
    "Every machine must share the experiment folder (checkpoints, event files); the study is the "
    "experiment's journal file, or --storage for a database."
)
EPILOG = (
    "examples:\n"
    "  tb-retune worker runs/digits -- python train.py\n"
    "  tb-retune worker runs/digits --wait-for-search 600 -- python train.py --epochs 50\n"
    "  tb-retune worker /shared/runs/digits --storage postgresql://optuna@db:5432/searches -- python train.py\n"
    "\n"
    "exit status: 0 when the search has no trial left (or none ran), 1 when the command failed or\n"
    "no search started within --wait-for-search, 2 on a usage error; the command's own status when\n"
    "it exits with an error."
)

def configure(p: argparse.ArgumentParser) -> None:
    from tb_retune.cli import _positive_seconds

    p.usage = ("tb-retune worker [-h] EXPERIMENT [--storage URL] [--wait-for-search SECONDS] [--search ID] "
               "-- COMMAND [ARGS...]")

    p.add_argument("--storage", metavar="URL", default=None,
                   help="an Optuna storage URL (e.g. postgresql://user@host/db) where the search's study "
                        "lives, for machines whose shared filesystem has no reliable file locks; "
                        "default: the journal file EXPERIMENT/searches/journal.log")
    p.add_argument("--wait-for-search", metavar="SECONDS", type=_positive_seconds, default=None,
                   dest="wait_for_search",
                   help="wait at most SECONDS for a search to start (default: forever)")
    p.add_argument("--search", metavar="ID", default=None,
                   help="join this search (default: the one running)")
    # COMMAND is what follows "--" (main() splits it off before parsing, so
    # that options may come after EXPERIMENT and COMMAND may have options of its own).
    p.set_defaults(func=run, worker_command=[])


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``(tb-retune's own arguments, COMMAND)`` for ``worker ... -- COMMAND``;
    COMMAND is None for the other commands."""
    if "--" not in argv:
        return argv, None
    i = argv.index("--")
    if "worker" not in argv[:i]:
        return argv, None
    return argv[:i], argv[i + 1:]


def run(args: argparse.Namespace) -> int:
    command = list(args.worker_command)
    if not command:
        print("tb-retune worker: error: give your training command after --, e.g. "
              "tb-retune worker runs/digits -- python train.py", file=sys.stderr)
        return 2
    experiment = os.path.abspath(args.experiment)
    wait_until = None if args.wait_for_search is None else time.time() + args.wait_for_search
    if not _wait_for_folder(args.experiment, experiment, wait_until):
        raise CliError(f"{args.experiment}: no such experiment folder; give the folder that the trainer's "
                       "RetuneCallback writes (e.g. runs/digits), shared with this machine")
    folder = os.path.join(spec_mod.workers_folder(experiment), f"{socket.gethostname()}-{os.getpid()}")
    report_path = os.path.join(folder, "report.json")
    out = sys.stdout
    trials: list[int] = []
    runs = 0
    search = args.search
    os.makedirs(folder, exist_ok=True)
    while True:
        # The command waits for a search itself (in RetuneCallback), so it is ready when one starts.
        spec = spec_mod.WorkerSpec(experiment=experiment, storage=args.storage, search=search,
                                   folder=folder, report=report_path, wait_until=wait_until)
        if os.path.exists(report_path):
            os.unlink(report_path)
        runs += 1
        rc = _run_command(command, spec)
        report = spec_mod.WorkerReport.read(report_path)
        if rc != 0:
            detail = f": {report.error}" if report is not None and report.error else ""
            print(f"tb-retune worker: the command exited with status {rc}{detail}; if it was running a trial, that trial is "
                  "queued again for another process", file=sys.stderr)
            return rc if rc > 0 else 1
        if report is None:
            print("tb-retune worker: the command ended without a fit with RetuneCallback (nothing joined the "
                  f"search); COMMAND must be the script that trains {args.experiment} with RetuneCallback",
                  file=sys.stderr)
            return 1
        trials.extend(report.trials)
        ran = ", ".join(map(str, trials)) or "none"
        if report.reason == spec_mod.REASON_NO_SEARCH and not trials:
            print(f"tb-retune worker: no search started in {args.experiment}"
                  + (f" within {args.wait_for_search:g}s" if args.wait_for_search is not None else "")
                  + "; start one with `tb-retune search` (or the tab), then run the worker again", file=sys.stderr)
            return 1
        if report.reason in (spec_mod.REASON_DONE, spec_mod.REASON_NO_SEARCH):
            print(f"tb-retune worker: search {report.search or search}: no trial left; this worker ran "
                  f"trials {ran} in {runs} run(s) of the command", file=out, flush=True)
            return 0
        if report.reason == spec_mod.REASON_FAILED:
            print(f"tb-retune worker: {report.error or 'the worker failed'}", file=sys.stderr)
            return 1
        if not report.trials:
            print(f"tb-retune worker: the command's fit ended before it finished a trial of search "
                  f"{report.search or search} (a trial takes the search's steps_per_trial steps); give fit "
                  "more epochs or steps", file=sys.stderr)
            return 1
        search = report.search or search  # the next run joins the same search
        print(f"tb-retune worker: the command's fit ended with trials left in search {search}; "
              "running it again", file=out, flush=True)


def _wait_for_folder(given: str, experiment: str, wait_until: float | None) -> bool:
    """Waits for the trainer to create the experiment folder (a worker may start first)."""
    said = False
    while not os.path.isdir(experiment):
        if os.path.exists(experiment) or (wait_until is not None and time.time() >= wait_until):
            return False
        if not said:
            print(f"tb-retune worker: {given} does not exist yet; waiting for the trainer to create it "
                  "(check the path if it never does)", flush=True)
            said = True
        time.sleep(1.0 if wait_until is None else max(0.0, min(1.0, wait_until - time.time())))
    return True


def _run_command(command: list[str], spec: spec_mod.WorkerSpec) -> int:
    env = {**os.environ, spec_mod.ENV_VAR: spec.to_env()}
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as e:
        raise CliError(f"cannot run {command[0]!r}: {e.strerror or e}") from None
    previous: Any = signal.getsignal(signal.SIGTERM)

    def forward(signum: int, frame: Any) -> None:
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to the command too: let it end its fit
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
