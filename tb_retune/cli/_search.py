"""``search``: ask the trainer to try K settings from a checkpoint, keep the best.

The request is checked with the trainer's own schema
(:func:`tb_retune.experiment.search.parse_search`, against the status's
hyperparameters, checkpoints and logged metrics) and written into
``retune.json`` through :func:`tb_retune.experiment.control_file.write_control`,
as the Retune tab writes it. ``--wait`` then follows ``searches[id]`` in the
status with a live progress line. See ``docs/search.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from tb_retune.cli._experiment import CliError
from tb_retune.experiment.control import format_value
from tb_retune.experiment.search_request import new_search_id

SUMMARY = "try K settings from a checkpoint (Optuna), then go on with the best"
DESCRIPTION = (
    "Writes a one-shot search request into retune.json. The trainer restores the checkpoint at "
    "--from once per trial, trains each trial for --steps steps as its own branch (the first trial with "
    "the source's own settings), lets Optuna choose the settings and prune, then goes on from the best "
    "trial's end state (--then best) or from the source (--then source)."
)
EPILOG = (
    "space:\n"
    "  NAME=LOW:HIGH          a range, e.g. momentum=0:0.99\n"
    "  NAME=LOW:HIGH:log      on a log scale, e.g. learning_rate=1e-4:0.3:log\n"
    "  NAME=LOW:HIGH:step=S   in steps of S (the grid sampler needs a step or choices)\n"
    "  NAME=A,B,...           choices, e.g. nesterov=true,false\n"
    "examples:\n"
    "  tb-retune search runs/digits --from main@400 --space learning_rate=1e-4:0.3:log \\\n"
    "      --space nesterov=true,false --trials 8 --steps 200 --objective val_loss \\\n"
    "      --sampler tpe --pruner hyperband --wait"
)
#: Seconds between two reads of the status file while waiting.
POLL_S = 0.25


def configure(p: argparse.ArgumentParser) -> None:
    """The ``search`` subcommand's own options (``--wait``, ``--timeout`` and
    ``--json`` are added by the caller, as for ``set`` and ``restore``)."""
    from tb_retune.experiment.search import PRUNERS, SAMPLERS, THEN

    p.add_argument("--from", dest="source", metavar="BRANCH@STEP",
                   help="the checkpoint to search from, e.g. main@400 (default: the state now)")
    p.add_argument("--space", action="append", required=True, metavar="NAME=SPEC",
                   help="a hyperparameter and its range or choices (repeat for each)")
    p.add_argument("--trials", type=int, required=True, help="how many trials, the baseline included")
    p.add_argument("--steps", type=int, required=True, help="training steps of each trial")
    p.add_argument("--objective", required=True, metavar="METRIC", help="a metric that fit logs, e.g. val_loss")
    p.add_argument("--mode", choices=("min", "max"), help="default: min for losses, max for accuracies")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="default: tpe")
    p.add_argument("--pruner", choices=PRUNERS, default="none", help="default: none")
    p.add_argument("--then", choices=THEN, default="best", help="default: best")
    p.add_argument("--id", help="the search's id (default: a new one)")
    p.add_argument("--wait", action="store_true",
                   help="follow the search with a live progress line until it is done (exit 1 if the "
                        "trainer refuses it or it fails)")
    p.add_argument("--timeout", type=_positive_seconds, metavar="S",
                   help="seconds to wait with --wait (default: until the search is done)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _positive_seconds(text: str) -> float:
    from tb_retune.cli import _positive_seconds as check

    return check(text)


# -- parsing the command line -----------------------------------------------------


def _value(text: str) -> Any:
    from tb_retune.cli._requests import parse_value

    return parse_value(text)


def parse_space_item(text: str) -> tuple[str, dict[str, Any]]:
    """``learning_rate=1e-4:0.3:log`` -> ``("learning_rate", {"low": 1e-4, "high": 0.3, "log": True})``;
    ``nesterov=true,false`` -> ``("nesterov", {"choices": [True, False]})``."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise CliError(f"--space {text!r}: expected NAME=LOW:HIGH[:log|:step=S] or NAME=A,B,... "
                           "(e.g. learning_rate=1e-4:0.3:log)")
    if ":" not in spec:
        return name, {"choices": [_value(v) for v in spec.split(",")]}
    parts = spec.split(":")
    if len(parts) > 3:
        raise CliError(f"--space {text!r}: a range is LOW:HIGH with at most one of :log or :step=S")
    out: dict[str, Any] = {"low": _value(parts[0]), "high": _value(parts[1])}
    if len(parts) == 3:
        extra = parts[2].strip().lower()
        if extra == "log":
            out["log"] = True
        elif extra.startswith("step="):
            out["step"] = _value(extra[len("step="):])
        else:
            raise CliError(f"--space {text!r}: {parts[2]!r} is neither log nor step=S")
    return name, out


def parse_source(text: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """``main@400`` -> ``{"branch": "main", "step": 400}``; ``400`` means the branch in force."""
    branch, sep, step = text.rpartition("@")
    if not sep:
        branch, step = str(status.get("branch") or "main"), text
    try:
        number = int(step)
    except ValueError:
        raise CliError(f"--from {text!r}: expected BRANCH@STEP, e.g. main@400") from None
    return {"branch": branch, "step": number}


def build_request(args: argparse.Namespace, status: Mapping[str, Any]) -> dict[str, Any]:
    space: dict[str, Any] = {}
    for item in args.space:
        name, spec = parse_space_item(item)
        if name in space:
            raise CliError(f"--space {name}: given twice")
        space[name] = spec
    objective: dict[str, Any] = {"metric": args.objective}
    if args.mode:
        objective["mode"] = args.mode
    request: dict[str, Any] = {
        "id": args.id or new_search_id(),
        "space": space, "trials": args.trials, "steps_per_trial": args.steps, "objective": objective,
        "sampler": args.sampler, "pruner": args.pruner, "then": args.then,
    }
    if args.source:
        request["from"] = parse_source(args.source, status)
    return request


# -- progress ---------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def time_left(entry: Mapping[str, Any], now: float) -> float | None:
    """Seconds until the search ends, from the mean duration of its finished
    trials; None before one has finished."""
    trials = [t for t in entry.get("trials") or [] if not t.get("interrupted")]
    finished = [t["ended"] - t["started"] for t in trials
                if t.get("state") in ("complete", "pruned", "failed")
                and isinstance(t.get("started"), (int, float)) and isinstance(t.get("ended"), (int, float))]
    if not finished:
        return None
    mean = sum(finished) / len(finished)
    total = int(entry.get("total") or len(trials))
    running = [t for t in trials if t.get("state") == "running"]
    # The trials left share the processes that run trials now (the trainer and its workers).
    left = max(0, total - len(finished) - len(running)) * mean / max(1, len(running))
    remaining = [max(0.0, mean - (now - t["started"])) if isinstance(t.get("started"), (int, float)) else mean
                 for t in running]
    return left + (max(remaining) if remaining else 0.0)


def progress_line(search_id: str, entry: Mapping[str, Any], now: float) -> str:
    """``search s-1: running, 3/8 trials done (1 running, 1 pruned), best val_loss 0.2143
    (trial 2, learning_rate=0.01), about 2m10s left``."""
    trials = [t for t in entry.get("trials") or [] if not t.get("interrupted")]
    states = [t.get("state") for t in trials]
    done = sum(s in ("complete", "pruned", "failed") for s in states)
    total = entry.get("total") or len(trials)
    workers = {(w.get("host"), w.get("pid")) for t in trials if t.get("state") == "running"
               for w in [t.get("worker") or {}]}
    on = f" on {len(workers)} processes" if len(workers) > 1 else ""  # a trainer and its workers
    parts = [f"{states.count('running')} running{on}", f"{states.count('pruned')} pruned"]
    if states.count("failed"):
        parts.append(f"{states.count('failed')} failed")
    text = f"search {search_id}: {entry.get('state')}, {done}/{total} trials done ({', '.join(parts)})"
    best = entry.get("best")
    metric = (entry.get("objective") or {}).get("metric") or "value"
    if isinstance(best, dict) and isinstance(best.get("value"), (int, float)):
        hps = ", ".join(f"{k}={format_value(v)}" for k, v in (best.get("hyperparameters") or {}).items())
        text += f", best {metric} {best['value']:.4g} (trial {best.get('number')}: {hps})"
    if entry.get("state") == "running":
        left = time_left(entry, now)
        text += f", about {_duration(left)} left" if left is not None else ", time left not known yet"
    outcome = entry.get("outcome") or {}
    if entry.get("state") == "done" and outcome.get("branch"):
        text += f"; training goes on as branch {outcome['branch']}"
    if entry.get("state") == "failed" and outcome.get("error"):
        text += f"; {outcome['error']}"
    return text


def wait_for_search(experiment: Any, search_id: str, *, timeout: float | None, out: TextIO,
                    clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Prints the progress of ``searches[search_id]`` until it is done; raises
    CliError when it fails, the trainer refuses it or stops, or ``timeout`` passes."""
    from tb_retune.cli._views import entries
    from tb_retune.reader.tree import trainer_liveness

    before = {repr(e) for e in entries(experiment.status(), "errors")}
    deadline = None if timeout is None else clock() + timeout
    tty = out.isatty()
    shown = ""
    while True:
        status = experiment.status() or {}
        now = time.time()
        entry = (status.get("searches") or {}).get(search_id)
        # Until the search is under way, a new error about a search is its refusal;
        # after that its state says how it goes (an error about a change refused
        # while it runs is not about it).
        for e in entries(status, "errors") if not isinstance(entry, dict) else ():
            message = str(e.get("message", ""))
            if repr(e) not in before and "search" in message:
                raise CliError(f"the trainer refused search {search_id}: {message}")
        if isinstance(entry, dict):
            line = progress_line(search_id, entry, now)
            if tty:
                out.write("\r\x1b[2K" + line)
            elif line.split(", about")[0] != shown.split(", about")[0]:
                out.write(line + "\n")
            out.flush()
            shown = line
            if entry.get("state") == "done":
                if tty:
                    out.write("\n")
                return entry
            if entry.get("state") == "failed":
                why = (entry.get("outcome") or {}).get("error") or "see `tb-retune status`"
                raise CliError(f"search {search_id} failed: {why}")
        live = trainer_liveness(status, now)
        if not live["alive"]:
            raise CliError(
                f"the trainer is not running (state {live['state']}) and search {search_id} is not done; "
                f"the trainer takes it up when training runs again (the request stays in retune.json)")
        if deadline is not None and clock() >= deadline:
            raise CliError(f"timed out after {timeout:g} s waiting for search {search_id}; "
                               "it goes on in the trainer")
        time.sleep(POLL_S)


def run(args: argparse.Namespace) -> int:
    """``tb-retune search``."""
    from tb_retune._errors import ControlError
    from tb_retune.cli import _dump, _emit
    from tb_retune.cli._experiment import Experiment
    from tb_retune.experiment.search_request import write_search

    exp = Experiment(args.experiment)
    folder = exp.require_writable()
    status = exp.require_status()
    request = build_request(args, status)
    try:
        write_search(folder, request)
    except ControlError as e:
        raise CliError(str(e)) from None
    result: dict[str, Any] = {"id": request["id"], "written": {"search": request}, "search": None}
    if not args.json:
        _emit(f"requested search {request['id']}: {request['trials']} trials of {request['steps_per_trial']} "
              "steps; the trainer starts it at its next batch"
              + (" (Ctrl-C stops waiting, not the search)" if args.wait else " (add --wait to follow it)"))
    if args.wait:
        timeout = float(args.timeout) if args.timeout is not None else None
        result["search"] = wait_for_search(exp, request["id"], timeout=timeout,
                                           out=sys.stderr if args.json else sys.stdout)
    if args.json:
        _emit(_dump(result))
    return 0


def lines_for_status(searches: Any, now: float) -> Sequence[str]:
    """The ``status`` subcommand's lines about searches (newest last)."""
    if not isinstance(searches, dict):
        return []
    return [progress_line(str(sid), entry, now) for sid, entry in searches.items() if isinstance(entry, dict)]
