"""What the two demos share: arguments, data, model, TensorBoard, messages.

Kept free of TensorFlow at import time, so that TensorBoard can be started
first and come up while TensorFlow is being imported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_LR = 0.005
DEFAULT_MOMENTUM = 0.5


def parse_args(description: str, default_logdir: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--logdir", default=default_logdir,
                   help="The experiment folder, <runs root>/<experiment>. TensorBoard is started on "
                        "its parent folder. Defaults to %(default)s.")
    p.add_argument("--epochs", type=int, default=40,
                   help="Total epochs of the experiment (a resumed run trains on up to this number). "
                        "Defaults to %(default)s.")
    p.add_argument("--minutes", type=float, default=3.0,
                   help="About how long --epochs take: sets a pause per batch so that there is time "
                        "to play. 0 trains at full speed. Defaults to %(default)s.")
    p.add_argument("--batch-size", type=int, default=32, help="Defaults to %(default)s.")
    p.add_argument("--update-freq", type=int, default=10,
                   help="Write the batch-level scalars every N steps. Defaults to %(default)s.")
    p.add_argument("--port", type=int, default=0,
                   help="TensorBoard's port; 0 picks a free one. Defaults to %(default)s.")
    p.add_argument("--no-tensorboard", action="store_true", help="Do not start TensorBoard.")
    p.add_argument("--seed", type=int, default=0, help="Defaults to %(default)s.")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "update_freq"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.minutes < 0:
        p.error(f"--minutes must be >= 0, got {args.minutes}")
    if not 0 <= args.port < 65536:
        p.error(f"--port must be in 0..65535, got {args.port}")
    return args


def seconds_per_batch(args: argparse.Namespace, train_size: int) -> float:
    """The pause per batch that makes --epochs last about --minutes."""
    steps = args.epochs * -(-train_size // args.batch_size)
    return args.minutes * 60.0 / steps


# ------------------------------------------------------------------ data, model
def load_data(seed: int) -> tuple[Any, Any, Any, Any]:
    """scikit-learn's 8x8 handwritten digits (shipped with the package, no
    download), split 80/20, as float32 in [0, 16] and int labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x.astype("float32"), y.astype("int32"), test_size=0.2, random_state=seed, stratify=y)
    return x_train, y_train, x_val, y_val


def build_model(seed: int) -> Any:
    """A small MLP. SGD with momentum, so that learning rate, momentum and
    nesterov are all worth changing while it trains."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Rescaling(1 / 16),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="digits_mlp")
    return model


def make_optimizer() -> Any:
    import keras

    return keras.optimizers.SGD(learning_rate=DEFAULT_LR, momentum=DEFAULT_MOMENTUM, nesterov=False)


def quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Pacer:
    """Sleeps so that batches start ``delay`` seconds apart (not after a
    long pause: a retrace or a checkpoint does not cause a burst).
    :meth:`stop` cuts the pause short, so that Ctrl-C answers at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._next: float | None = None
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def wait(self) -> None:
        if self.delay <= 0 or self._stopped:
            return
        now = time.monotonic()
        if self._next is None or now - self._next > 1.0:
            self._next = now
        while not self._stopped and self._next > now:
            time.sleep(min(self._next - now, 0.05))
            now = time.monotonic()
        self._next += self.delay


# ---------------------------------------------------------------- status file
def read_status(logdir: str) -> dict[str, Any]:
    """The trainer's status file, ``{}`` when absent or unreadable."""
    from tb_retune.experiment.control_file import read_status  # light: no TensorFlow

    return read_status(logdir) or {}


def already_done(logdir: str, epochs: int) -> int | None:
    """The epoch an earlier run reached, when it is already >= ``epochs``."""
    status = read_status(logdir)
    if status.get("state") == "training":
        return None  # a live trainer (or one that died): let the callback decide
    epoch = status.get("epoch")
    if isinstance(epoch, int) and epoch >= epochs:
        return epoch
    return None


# ----------------------------------------------------------------- TensorBoard
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_setup() -> None:  # pragma: no cover - runs in the child
    # Its own process group: a Ctrl-C in the terminal reaches only us, and we
    # stop TensorBoard ourselves after the final checkpoint. On Linux it also
    # gets SIGTERM if we die without cleaning up (SIGKILL).
    os.setpgrp()
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


try:  # loaded before fork: the child only calls into it
    import ctypes

    _LIBC: Any = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
except OSError:
    _LIBC = None


class TensorBoardError(Exception):
    """TensorBoard did not start."""


@dataclass
class TensorBoard:
    """A ``tensorboard`` child process serving ``root`` on 127.0.0.1."""

    root: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @classmethod
    def start(cls, root: str, port: int = 0) -> TensorBoard:
        port = port or free_port()
        fd, log_path = tempfile.mkstemp(prefix="tb-retune-demo-tensorboard-", suffix=".log")
        cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", root,
               "--host", "127.0.0.1", "--port", str(port)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        with os.fdopen(fd, "wb") as log:
            process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=env, preexec_fn=_child_setup)
        return cls(root, port, process, log_path)

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """Waits until TensorBoard answers; returns its plugin listing."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise TensorBoardError(f"TensorBoard exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "data/plugins_listing", timeout=2) as r:
                    listing = json.loads(r.read().decode("utf-8"))
                    return listing if isinstance(listing, dict) else {}
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TensorBoardError(f"TensorBoard did not answer on {self.url} within {timeout:.0f} s:\n"
                                       f"{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:]).rstrip() or "(its log is empty)"
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


# -------------------------------------------------------------------- signals
class GracefulStop:
    """SIGINT/SIGTERM ask training to stop after the current batch; a second
    Ctrl-C interrupts at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False
        self.on_request: Callable[[], None] | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this batch, with a final checkpoint "
              "(Ctrl-C again to interrupt at once)", flush=True)
        if self.on_request is not None:
            self.on_request()

    @contextlib.contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._old.clear()


def serve_until_interrupted(tb: TensorBoard) -> None:
    print(f"TensorBoard keeps serving {tb.url}#retune - press Ctrl-C to quit.", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        old = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while tb.process.poll() is None:
                time.sleep(0.5)
        finally:
            signal.signal(signal.SIGTERM, old)


# ------------------------------------------------------------------- messages
def _shown(path: str) -> str:
    """``path`` relative to the working folder when it is inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def venv_command(name: str) -> str:
    """How to call the console script ``name`` of this Python's environment."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(here):
        return _shown(here)
    return shutil.which(name) or name


def print_instructions(title: str, logdir: str, tb: TensorBoard | None) -> None:
    logdir = os.path.abspath(logdir)
    control = os.path.join(logdir, "retune.json")
    experiment = os.path.basename(logdir)
    # The demo starts slow on purpose (learning_rate 0.005, momentum 0.5):
    # a larger learning rate shows at once in the curves.
    example = {"hyperparameters": {"learning_rate": 0.05}}
    more = {"hyperparameters": {"momentum": 0.9, "nesterov": True}}
    lines = ["", "=" * 78, title]
    if tb is not None:
        lines.append(f"  TensorBoard:  {tb.url}#retune   (the Retune tab)")
    lines += [
        f"  Control file: {control}",
        f"  Status:       {os.path.join(logdir, 'retune-status.json')}",
        "",
        f"Things to try while it trains (it starts slow: learning_rate {DEFAULT_LR}, momentum {DEFAULT_MOMENTUM}):",
        "  (a) Change the learning rate, from a shell:",
        f"        {venv_command('tb-retune')} set {shlex.quote(_shown(logdir))} learning_rate=0.05",
        "      or by writing the control file:",
        f"        echo {shlex.quote(json.dumps(example))} > {shlex.quote(control)}",
        "      Any hyperparameter of the optimizer works, e.g. put this in it:",
        f"        {json.dumps(more)}",
        "  (b) In the Retune tab, click a node of the tree and press Restore on one of its",
        "      checkpoints: training goes back to that step and carries on as a new branch.",
    ]
    if tb is not None:
        lines += [f"  (c) Compare the branches in the Scalars dashboard ({tb.url}#scalars):",
                  f"      the runs {experiment}/main, {experiment}/main-s<step>, ... share one step axis."]
    else:
        lines += ["  (c) Compare the branches in TensorBoard's Scalars dashboard:",
                  f"        {venv_command('tensorboard')} --logdir {shlex.quote(_shown(os.path.dirname(logdir)))}"]
    lines += ["Ctrl-C stops after the current batch (with a checkpoint); run the same command",
              "again to resume.", "=" * 78, ""]
    print("\n".join(lines), flush=True)


def report(logdir: str, epochs: int) -> None:
    status = read_status(logdir)
    state, step, epoch = status.get("state"), status.get("step"), status.get("epoch")
    print(f"Training {state} at step {step}, epoch {epoch} of {epochs} "
          f"(branch {status.get('branch')}, node {status.get('node')}).", flush=True)
    if state == "stopped" or (isinstance(epoch, int) and epoch < epochs):
        print("Run the same command again to resume.", flush=True)
    elif isinstance(epoch, int):
        print(f"To train on, run again with --epochs {epoch + epochs} (--epochs is the total).", flush=True)


def train_custom_loop(args: argparse.Namespace, stopper: GracefulStop, pacer: Pacer, controller: Any, *,
                      batches: Callable[[int], Any], step: Callable[[Any, Any], Any],
                      epoch_logs: Callable[[], dict[str, float]], reset: Callable[[], None]) -> None:
    """The epoch loop of the custom-loop demos (one per backend); only ``step``
    differs. ``controller.begin()`` has been called; this calls ``end()``."""
    stopper.on_request = pacer.stop
    state = "failed"
    try:
        stopping = False
        for epoch in range(controller.initial_epoch, args.epochs):
            reset()
            for x, y in batches(epoch):
                pacer.wait()
                controller.before_step()  # O(1) unless a change is due: then it is applied here
                stopping = stopper.requested or controller.stop_requested
                if stopping:
                    break
                controller.after_step(step(x, y))  # batch scalars every --update-freq steps
            if stopping:  # a stopped epoch is not over: a resumed run trains it again
                break
            logs = epoch_logs()
            controller.end_epoch(epoch, logs)
            print(f"epoch {epoch + 1}/{args.epochs} step {controller.current_step()} "
                  + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
        state = "stopped" if stopping else "finished"
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, still with a checkpoint
        state = "stopped"
        raise
    finally:
        controller.end(state)


def training_params(args: argparse.Namespace) -> dict[str, Any]:
    """What a custom loop tells ``controller.begin()`` for the run's record."""
    return {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
            "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}


def run_demo(args: argparse.Namespace, title: str,
             prepare: Callable[[], Callable[[GracefulStop], None]]) -> int:
    """Starts TensorBoard, calls ``prepare()`` (imports, data, model) while it
    comes up, prints where things are, trains with ``train(stopper)`` and
    cleans up. Returns the exit code."""
    from tb_retune import ExperimentLockedError

    logdir = os.path.abspath(args.logdir)
    quiet_tensorflow()
    tb: TensorBoard | None = None
    try:
        if not args.no_tensorboard:
            tb = TensorBoard.start(os.path.dirname(logdir), args.port)
            print(f"Starting TensorBoard on {tb.url} (pid {tb.process.pid}) for {os.path.dirname(logdir)}",
                  flush=True)
        # Run by `tb-retune worker`, the script trains a running search's trials, not the experiment.
        worker = bool(os.environ.get("TB_RETUNE_WORKER"))
        done = None if worker else already_done(logdir, args.epochs)
        train = prepare() if done is None else None
        if tb is not None:
            listing = tb.wait_ready()
            if "retune" not in listing:
                print("warning: TensorBoard has no Retune tab (the tb_retune plugin did not load); "
                      f"its log:\n{tb.log_tail()}", flush=True)
        stopper = GracefulStop()
        if train is None:
            print(f"{args.logdir} has already trained {done} epochs, and --epochs {args.epochs} is the total: "
                  f"run with --epochs {(done or 0) + args.epochs} to train on.", flush=True)
        elif worker:
            with stopper.installed():
                train(stopper)
        else:
            print_instructions(title, logdir, tb)
            with stopper.installed():
                train(stopper)
            report(logdir, args.epochs)
        if tb is not None and not stopper.requested:
            serve_until_interrupted(tb)
        return 0
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr, flush=True)
        return 130
    except ExperimentLockedError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except TensorBoardError as e:
        print(f"error: {e}\nPass another --port (0 picks a free one), or --no-tensorboard.",
              file=sys.stderr, flush=True)
        return 1
    finally:
        if tb is not None:
            # A second Ctrl-C while TensorBoard is being stopped must not
            # leave it running or print a traceback.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                tb.stop()
            finally:
                signal.signal(signal.SIGINT, previous)
