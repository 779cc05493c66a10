"""A real, small training loop that implements the search engine's TrialHost.

Linear regression trained by SGD with momentum (and Nesterov) in numpy:
the learning rate, the momentum and ``nesterov`` really change how it
trains, checkpoints hold the weights, the velocity (the optimizer's slot)
and the step, and a restore brings all of them back. It logs ``loss`` every
``log_every`` steps and ``val_loss`` at each epoch end, as ``fit`` does with
``update_freq``. No Keras: the engine must not need it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from tb_retune.trainer.search import Action, SearchEngine


@dataclasses.dataclass
class Checkpoint:
    w: np.ndarray
    v: np.ndarray
    step: int
    hyperparameters: dict[str, Any]


@dataclasses.dataclass
class Branch:
    name: str
    parent: tuple[str, int] | None
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    start_w: np.ndarray | None = None
    start_v: np.ndarray | None = None
    start_step: int = 0


class LoopHost:
    """The trainer side for tests: a real loop, its checkpoints and branches.

    ``checkpoints`` and ``branches`` may be shared with a later LoopHost, as
    a restarted trainer finds the checkpoint files of the one that died.
    """

    def __init__(self, *, seed: int = 0, batch: int = 16, steps_per_epoch: int = 10, log_every: int = 2,
                 checkpoints: dict[tuple[str, int], Checkpoint] | None = None,
                 branches: dict[str, Branch] | None = None, evaluate: bool = True,
                 checkpoint_dir: str | None = None) -> None:
        rng = np.random.default_rng(seed)
        d = 6
        self.x = rng.normal(size=(batch * steps_per_epoch, d)) / math.sqrt(d)
        self.w_true = rng.normal(size=d)
        self.y = self.x @ self.w_true + 0.05 * rng.normal(size=len(self.x))
        self.x_val = rng.normal(size=(64, d)) / math.sqrt(d)
        self.y_val = self.x_val @ self.w_true
        self.batch = batch
        self.steps_per_epoch = steps_per_epoch
        self.log_every = log_every
        self.w = np.zeros(d)
        self.v = np.zeros(d)
        self.step = 0
        self.hps: dict[str, Any] = {"learning_rate": 0.05, "momentum": 0.5, "nesterov": False}
        self.branch = "main"
        self.checkpoints = checkpoints if checkpoints is not None else {}
        self.branches = branches if branches is not None else {"main": Branch("main", None)}
        self.logged: set[str] = set()
        self.errors: list[str] = []
        self.lines: list[str] = []
        self.can_evaluate = evaluate
        self.pending_logs: dict[str, float] = {}
        self.evaluations: list[tuple[str, int, str]] = []
        self.kept: set[tuple[str, int]] = set()
        self.waits = 0
        #: Called instead of sleeping while the engine waits for other processes' trials.
        self.on_wait: Any = None
        #: What ``steps_left`` answers (a worker's fit length), None: unknown.
        self.steps_budget: int | None = None
        # Checkpoints in files too, for a trainer process that is killed and started again.
        self.checkpoint_dir = checkpoint_dir
        if checkpoint_dir is not None:
            self._load_checkpoint_files()

    # -- the loop --------------------------------------------------------------
    def _loss(self, x: np.ndarray, y: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            return float(np.mean((x @ self.w - y) ** 2))

    def train_step(self) -> None:
        i = (self.step % self.steps_per_epoch) * self.batch
        x, y = self.x[i:i + self.batch], self.y[i:i + self.batch]
        lr, mom = float(self.hps["learning_rate"]), float(self.hps["momentum"])
        with np.errstate(all="ignore"):
            w_look = self.w + mom * self.v if self.hps["nesterov"] else self.w
            grad = 2 * x.T @ (x @ w_look - y) / len(x)
            self.v = mom * self.v - lr * grad
            self.w = self.w + self.v
        self.step += 1
        if self.step % self.log_every == 0:
            self.pending_logs["loss"] = self._loss(x, y)
        if self.step % self.steps_per_epoch == 0:
            self.pending_logs["loss"] = self._loss(self.x, self.y)
            self.pending_logs["val_loss"] = self._loss(self.x_val, self.y_val)
        self.logged.update(self.pending_logs)

    def save(self) -> tuple[str, int]:
        ckpt = Checkpoint(self.w.copy(), self.v.copy(), self.step, dict(self.hps))
        self.checkpoints[(self.branch, self.step)] = ckpt
        if self.checkpoint_dir is not None:
            import json
            import os

            from tb_retune.experiment import atomic

            os.makedirs(self.checkpoint_dir, exist_ok=True)
            doc = {"branch": self.branch, "step": self.step, "w": ckpt.w.tolist(), "v": ckpt.v.tolist(),
                   "hyperparameters": ckpt.hyperparameters}
            atomic.atomic_write_bytes(os.path.join(self.checkpoint_dir, f"{self.branch}@{self.step}.json"),
                                      json.dumps(doc).encode())
        return self.branch, self.step

    def _load_checkpoint_files(self) -> None:
        import json
        import os

        assert self.checkpoint_dir is not None
        if not os.path.isdir(self.checkpoint_dir):
            return
        for name in os.listdir(self.checkpoint_dir):
            if name.endswith(".json"):
                with open(os.path.join(self.checkpoint_dir, name)) as f:
                    doc = json.load(f)
                self.checkpoints[(doc["branch"], doc["step"])] = Checkpoint(
                    np.array(doc["w"]), np.array(doc["v"]), doc["step"], doc["hyperparameters"])

    def drive(self, engine: SearchEngine, steps: int, stop: Any = None) -> list[Action]:
        """Runs ``steps`` train steps, calling the engine at each boundary as
        the controller does; returns the actions that did something."""
        actions = []
        for _ in range(steps):
            logs, self.pending_logs = self.pending_logs, {}
            action = engine.on_boundary(self.step, logs or None)
            if action.kind != "nothing":
                actions.append(action)
            if stop is not None and stop(action):
                break
            self.train_step()
        return actions

    # -- TrialHost ------------------------------------------------------------------
    def hyperparameters(self) -> Mapping[str, Any]:
        return dict(self.hps)

    def metrics(self) -> Collection[str] | None:
        return sorted(self.logged) if self.logged else None

    def checkpoint_hyperparameters(self, branch: str, step: int) -> Mapping[str, Any] | None:
        ckpt = self.checkpoints.get((branch, step))
        return dict(ckpt.hyperparameters) if ckpt is not None else None

    def keep_checkpoint(self, branch: str, step: int) -> None:
        self.kept.add((branch, step))

    def keep_checkpoint_now(self) -> tuple[str, int]:
        where = self.save()
        self.kept.add(where)
        return where

    def restore(self, branch: str, step: int, hyperparameters: Mapping[str, Any], new_branch_name: str,
                node_record_extra: Mapping[str, Any]) -> str:
        self.save()  # the state left behind stays restorable, as the controller keeps it
        ckpt = self.checkpoints.get((branch, step))
        if ckpt is None:
            from tb_retune._errors import CheckpointError

            raise CheckpointError(f"branch {branch!r} has no checkpoint at step {step}")
        self.w, self.v, self.step = ckpt.w.copy(), ckpt.v.copy(), ckpt.step
        self.hps = {k: hyperparameters.get(k, v) for k, v in self.hps.items()}
        name, n = new_branch_name, 2
        while name in self.branches:
            name, n = f"{new_branch_name}-{n}", n + 1
        self.branches[name] = Branch(name, (branch, step), [dict(node_record_extra)],
                                     self.w.copy(), self.v.copy(), self.step)
        self.branch = name
        self.pending_logs = {}
        return name

    def update_node_record(self, node_record_extra: Mapping[str, Any]) -> None:
        self.branches[self.branch].records.append(dict(node_record_extra))

    def evaluate(self, metric: str) -> float | None:
        self.evaluations.append((self.branch, self.step, metric))
        if not self.can_evaluate:
            return None
        if metric == "val_loss":
            return self._loss(self.x_val, self.y_val)
        if metric == "loss":
            return self._loss(self.x, self.y)
        return None

    def report_error(self, message: str) -> None:
        self.errors.append(message)

    def log(self, message: str) -> None:
        self.lines.append(message)

    def wait(self, seconds: float) -> bool:
        self.waits += 1
        if self.on_wait is not None:
            return bool(self.on_wait())
        time.sleep(min(seconds, 0.05))
        return True

    def steps_left(self) -> int | None:
        return self.steps_budget


class FileTrainer:
    """The loop as a trainer process would run it, on a thread: it takes
    ``search`` requests from ``retune.json`` (validated by the control
    schema), runs them through a real SearchEngine, and publishes
    ``retune-status.json`` atomically with ``searches``, as the controller
    will. For tests of the command line against a live search."""

    def __init__(self, logdir: str, host: LoopHost, *, step_s: float = 0.002, publish_metrics: bool = True) -> None:
        import threading

        self.logdir = logdir
        self.host = host
        self.engine = SearchEngine(logdir, host)
        self.step_s = step_s
        self.publish_metrics = publish_metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-file-trainer", daemon=True)
        self._seen: bytes | None = None

    def __enter__(self) -> FileTrainer:
        self.publish()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.publish(state="finished")

    def publish(self, state: str = "training") -> None:
        import os
        import time

        from tb_retune.experiment import atomic

        host = self.host
        status = {
            "pid": os.getpid(), "heartbeat": time.time(), "state": state, "branch": host.branch,
            "node": f"{host.branch}-1", "step": host.step, "hyperparameters": dict(host.hps),
            "checkpoints": {b: sorted(s for bb, s in host.checkpoints if bb == b) for b, _ in host.checkpoints},
            "metrics": sorted(host.logged),
            "errors": [{"time": 0, "message": m} for m in host.errors],
            "searches": self.engine.searches(),
        }
        if not self.publish_metrics:
            del status["metrics"]
        atomic.atomic_write_json(os.path.join(self.logdir, "retune-status.json"), status)

    def _take_control_file(self) -> None:
        import os

        from tb_retune._errors import ControlError
        from tb_retune.experiment.control import parse_control

        try:
            with open(os.path.join(self.logdir, "retune.json"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        if data == self._seen:
            return
        self._seen = data
        try:
            revision = parse_control(data, self.host.hyperparameters(), None)
        except ControlError as e:
            self.host.report_error(str(e))
            return
        if revision.search is not None:
            self.engine.submit(revision.search)

    def _run(self) -> None:
        import time

        last = 0.0
        while not self._stop.is_set():
            self._take_control_file()
            self.host.drive(self.engine, 1)
            if time.monotonic() - last > 0.05:
                self.publish()
                last = time.monotonic()
            time.sleep(self.step_s)
