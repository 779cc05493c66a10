"""``tb-retune``: retune an experiment from the command line.

Everything that the Retune tab does without a browser: set hyperparameters,
restore a checkpoint as a new branch, show the trainer's status, print and
export the experiment tree, and turn a path of the tree into a schedule that
trains it again unattended. See ``docs/cli.md``.

Exit status: 0 on success, 1 when a request is refused (a bad value, an
unknown experiment or node, a timeout), 2 on a usage error. Errors are one
line on stderr.

Example:

```
tb-retune set runs/digits learning_rate=3e-4 momentum=0.8 --wait
tb-retune restore runs/digits --branch main --step 1200 --set learning_rate=1e-4 --wait
tb-retune tree runs/digits
tb-retune replay runs/digits --node main-s1200-2 -o schedule.json
tb-retune search runs/digits --from main@400 --space learning_rate=1e-4:0.3:log --trials 8 --steps 200 --objective val_loss
tb-retune worker runs/digits -- python train.py
```
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
import time
import types
from collections.abc import Sequence
from typing import Any, NoReturn, TypeGuard

from tb_retune._errors import RetuneError
from tb_retune._version import __version__
from tb_retune.cli._experiment import CliError, Experiment

PROG = "tb-retune"
#: Seconds that ``--wait`` waits by default.
DEFAULT_TIMEOUT_S = 60.0

__all__ = ["CliError", "main"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text!r}")
    return value


def _step(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a step number (an integer >= 0), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a step number (an integer >= 0), got {text!r}")
    return value


def _assignment(text: str) -> str:
    from tb_retune.cli._requests import split_assignment

    try:
        split_assignment(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Retune a running Keras model: set hyperparameters, restore checkpoints as "
                    "branches, and read, export or replay the experiment tree.",
        epilog="EXPERIMENT is the experiment's folder, the logdir given to RetuneCallback "
               "(e.g. runs/digits). Exit status: 0 ok, 1 refused, 2 usage error. See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    def add(name: str, summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=textwrap.fill(description, 78), epilog=epilog,
                           formatter_class=fmt)
        p.add_argument("experiment", metavar="EXPERIMENT", help="the experiment folder, e.g. runs/digits")
        return p

    p = add("set", "set hyperparameters of the running training",
            "Validates the values against the optimizer's hyperparameters (from retune-status.json) "
            "and merges them into retune.json; the trainer applies them at its next batch.",
            "examples:\n  tb-retune set runs/digits learning_rate=3e-4 momentum=0.8\n"
            "  tb-retune set runs/digits nesterov=true weight_decay=null --wait --timeout 30")
    p.add_argument("assignments", nargs="+", metavar="NAME=VALUE", type=_assignment,
                   help="a hyperparameter and its value: a number, true, false or null")
    _add_request_options(p)
    p.set_defaults(func=_cmd_set)

    p = add("restore", "go back to a checkpoint and train on as a new branch",
            "Writes a one-shot restore request (with a new id) into retune.json. The trainer loads "
            "the checkpoint at STEP of BRANCH and trains on from there as a new branch.",
            "examples:\n  tb-retune restore runs/digits --branch main --step 1200\n"
            "  tb-retune restore runs/digits --step 1200 --set learning_rate=1e-4 --wait")
    p.add_argument("--branch", help="the branch of the checkpoint (default: the branch in force)")
    p.add_argument("--step", type=_step, required=True,
                   help="a step with a checkpoint (`tb-retune status` lists them)")
    p.add_argument("--set", dest="assignments", action="extend", nargs="+", default=[],
                   metavar="NAME=VALUE", type=_assignment,
                   help="hyperparameters to apply right after the restore")
    _add_request_options(p)
    p.set_defaults(func=_cmd_restore)

    p = add("stop", "end the running training after its current batch",
            "Writes `stop: true` into retune.json; the trainer ends fit after the current batch, with "
            "a final checkpoint (state `stopped`). Running the training script again resumes.",
            "examples:\n  tb-retune stop runs/digits\n  tb-retune stop runs/digits --wait")
    _add_request_options(p)
    p.set_defaults(func=_cmd_stop)

    p = add("note", "attach a short note to a node of the tree",
            "Writes the note into retune.json's `notes`; the trainer records it in the event files with "
            "the tree, and the Retune tab shows it on the node. An empty TEXT removes the note.",
            "examples:\n  tb-retune note runs/digits main-2 \"lr too high: diverged at 1500\"\n"
            "  tb-retune note runs/digits main-2 \"\"")
    p.add_argument("node", metavar="NODE", help="the node id, e.g. main-2 (see `tree`)")
    p.add_argument("text", metavar="TEXT", help="the note, at most 500 characters; \"\" removes it")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_note)

    p = add("status", "show the trainer's state, step and hyperparameters",
            "Reads retune-status.json: whether the trainer is training, finished or not responding, "
            "its step, branch and node, the hyperparameters in force and the last errors.",
            "examples:\n  tb-retune status runs/digits\n  tb-retune status runs/digits --json | jq .step")
    p.add_argument("--json", action="store_true", help="print the status file, with liveness, as JSON")
    p.set_defaults(func=_cmd_status)

    p = add("tree", "print the experiment tree",
            "Prints every node of the tree, as tree(1) does: id (* for the node in force), branch, "
            "step range, what changed, and the latest loss.",
            "example:\n  tb-retune tree runs/digits")
    p.add_argument("--ascii", action="store_true", help="draw with ASCII characters only")
    p.set_defaults(func=_cmd_tree)

    p = add("export", "export the whole tree as JSON, CSV or Graphviz DOT",
            "JSON: every node and branch as the Retune tab reads them. CSV: one row per node, with "
            "hyperparameters (hp.NAME) and latest metrics (metric.TAG) as columns. DOT: a digraph "
            "with nodes coloured by branch and edges labelled with the change.",
            "examples:\n  tb-retune export runs/digits --format csv -o tree.csv\n"
            "  tb-retune export runs/digits --format dot | dot -Tsvg > tree.svg")
    p.add_argument("--format", choices=("json", "csv", "dot"), default="json", help="default: json")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=_cmd_export)

    p = add("replay", "turn the path to a node into a schedule that trains it again",
            "Prints the path from the root to NODE as a retune.json with a step-indexed `schedule`: "
            "all hyperparameters at the root's step, then each change at its step, with restores "
            "folded away (a restored branch continues its parent's path up to the restored step). "
            "Start a new experiment with it as its retune.json to retrain the path unattended.",
            "example:\n  tb-retune replay runs/digits --node main-s1200-2 -o runs/again/retune.json")
    p.add_argument("--node", required=True, help="the node id, e.g. main-s1200-2 (see `tree`)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=_cmd_replay)

    from tb_retune.cli import _search

    p = add("search", _search.SUMMARY, _search.DESCRIPTION, _search.EPILOG)
    _search.configure(p)

    from tb_retune.cli import _worker

    p = add("worker", _worker.SUMMARY, _worker.DESCRIPTION, _worker.EPILOG)
    _worker.configure(p)
    return parser


def _add_request_options(p: argparse.ArgumentParser) -> None:
    """``--wait``, ``--timeout`` and ``--json``: the options of ``set`` and ``restore``."""
    p.add_argument("--wait", action="store_true",
                   help="wait until the trainer has applied it (exit 1 if it refuses it)")
    p.add_argument("--timeout", type=_positive_seconds, metavar="S",
                   help=f"seconds to wait with --wait (default: {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


# -- output ---------------------------------------------------------------------


def _to_file(output: str | None) -> TypeGuard[str]:
    """Whether ``-o OUTPUT`` names a file (``-`` is stdout)."""
    return bool(output) and output != "-"


def _emit(text: str, output: str | None = None) -> None:
    """Prints ``text``, or writes it atomically to ``output``."""
    if _to_file(output):
        from tb_retune.experiment import atomic as _atomic

        _atomic.atomic_write_bytes(output, text.encode("utf-8"), durable=False)
        return
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str) + "\n"


def _unicode_ok() -> bool:
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"  # None: a text buffer
    try:
        "├──│└→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _format_hps(values: dict[str, Any]) -> str:
    from tb_retune.experiment.control import format_value

    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())


# -- the subcommands --------------------------------------------------------------


def _timeout(args: argparse.Namespace) -> float:
    return float(args.timeout) if args.timeout is not None else DEFAULT_TIMEOUT_S


def _cmd_set(args: argparse.Namespace) -> int:
    from tb_retune.cli._requests import set_hyperparameters

    exp = Experiment(args.experiment)
    result = set_hyperparameters(exp, args.assignments, wait=args.wait, timeout=_timeout(args))
    if args.json:
        _emit(_dump(result))
        return 0
    lines = [f"wrote {os.path.join(args.experiment, 'retune.json')}: "
             f"{_format_hps(result['written']['hyperparameters'])}"]
    if args.wait:
        applied = result["applied"]
        if applied and result["state"] == "applied":
            lines.append(f"applied at step {applied.get('step')}: {applied.get('what')} (node {applied.get('node')})")
        else:
            lines.append(f"in force at step {result['step']} (the trainer already ran with these values)")
    else:
        lines.append("the trainer applies it at its next batch (add --wait to wait for it)")
    _emit("\n".join(lines))
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from tb_retune.cli._requests import request_restore

    exp = Experiment(args.experiment)
    result = request_restore(exp, branch=args.branch, step=args.step, assignments=args.assignments,
                             wait=args.wait, timeout=_timeout(args))
    if args.json:
        _emit(_dump(result))
        return 0
    req = result["written"]["restore"]
    extra = req.get("hyperparameters") or {}
    what = f"{req['branch']}@{req['step']}" + (f" with {_format_hps(extra)}" if extra else "")
    if args.wait:
        applied = result["applied"] or {}
        _emit(f"{applied.get('what') or 'restored ' + what} (request {result['id']}, node {applied.get('node')})\n"
              f"new branch: {result['branch']}")
    else:
        _emit(f"requested restore {what} as {result['id']}; the trainer carries it out at its next batch "
              "(add --wait to wait for the new branch)")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from tb_retune.cli._requests import request_stop

    result = request_stop(Experiment(args.experiment), wait=args.wait, timeout=_timeout(args))
    if args.json:
        _emit(_dump(result))
    elif args.wait:
        _emit(f"stopped at step {result['step']} (state {result['state']})")
    else:
        _emit(f"wrote {os.path.join(args.experiment, 'retune.json')}: stop; the trainer ends fit after its "
              "current batch (add --wait to wait for it)")
    return 0


def _cmd_note(args: argparse.Namespace) -> int:
    from tb_retune.cli._requests import set_note

    result = set_note(Experiment(args.experiment), args.node, args.text)
    if args.json:
        _emit(_dump(result))
    else:
        what = f"note on {args.node}" if args.text else f"removal of the note on {args.node}"
        _emit(f"wrote {os.path.join(args.experiment, 'retune.json')}: {what}; the trainer records it "
              "in the tree when it takes the revision")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from tb_retune.cli._views import render_status
    from tb_retune.experiment import requests
    from tb_retune.reader.tree import trainer_liveness

    exp = Experiment(args.experiment)
    status = exp.status()
    if status is None:
        exp.tree()  # no status file: an experiment only if its event files hold a tree
    control, control_error = exp.control()
    now = time.time()
    if args.json:
        out = dict(status or {})
        out["trainer"] = trainer_liveness(status, now)
        out["control"] = requests.control_record(status)
        out["control_file"] = control
        out["control_error"] = control_error
        _emit(_dump(out))
    else:
        _emit(render_status(args.experiment, status, control, control_error, now))
    return 0


def _cmd_tree(args: argparse.Namespace) -> int:
    from tb_retune.cli._views import ASCII_GLYPHS, UNICODE_GLYPHS, render_tree

    exp = Experiment(args.experiment)
    glyphs = ASCII_GLYPHS if args.ascii or not _unicode_ok() else UNICODE_GLYPHS
    _emit(render_tree(args.experiment, exp.tree(), glyphs))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tb_retune.cli import _export

    exp = Experiment(args.experiment)
    tree = exp.tree()
    if args.format == "json":
        text = _export.to_json(args.experiment, tree)
    elif args.format == "csv":
        text = _export.to_csv(tree)
    else:
        text = _export.to_dot(args.experiment, tree)
    _emit(text, args.output)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from tb_retune.cli import _export

    exp = Experiment(args.experiment)
    exp.node(args.node)  # refuses an unknown node, naming the known ones
    path = _export.path_to(exp.tree(), args.node)
    configs = {n["id"]: exp.node(n["id"]).get("config") for n in path}
    doc = _export.replay_schedule(path, configs)
    _emit(_dump(doc), args.output)
    if _to_file(args.output):
        steps = [e["at_step"] for e in doc["schedule"]]
        _emit(f"wrote {args.output}: {len(steps)} schedule entries (steps {', '.join(map(str, steps))}) "
              f"for the path {' -> '.join(n['id'] for n in path)}, which ends at step {path[-1]['end_step']}")
    return 0


# -- entry point --------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _prefer_tensorflow_stub(argv: Sequence[str]) -> None:
    """Reads local event files without importing TensorFlow (seconds saved).

    TensorBoard's loaders use TensorFlow's file system when TensorFlow is
    installed, else a pure-Python stub that reads local files just as well.
    Only the console script does this (the process is ours), and only when
    no experiment is remote (``gs://``, ``s3://``: TensorFlow reads those).
    """
    if "tensorflow" in sys.modules or any("://" in a for a in argv):
        return
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tb-retune``; returns the exit status (0, 1 refused, 2 usage)."""
    if argv is None:
        argv = sys.argv[1:]
        _prefer_tensorflow_stub(argv)
    parser = build_parser()
    from tb_retune.cli._worker import split_command

    own, worker_command = split_command(list(argv))
    try:
        args = parser.parse_args(own)
        if worker_command is not None:
            args.worker_command = worker_command
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if getattr(args, "timeout", None) is not None and not args.wait:
        print(f"{PROG} {args.command}: error: --timeout needs --wait (see {PROG} {args.command} --help)",
              file=sys.stderr)
        return 2
    tb_logger = logging.getLogger("tensorboard")
    level = tb_logger.level
    tb_logger.setLevel(logging.ERROR)  # TensorBoard's loader warnings are not ours to show
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `tb-retune tree ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (RetuneError, OSError) as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; what was written stays in retune.json", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("TB_RETUNE_DEBUG"):
            raise
        print(f"{PROG}: error: unexpected {type(e).__name__}: {_one_line(e)} "
              "(set TB_RETUNE_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
    finally:
        tb_logger.setLevel(level)
