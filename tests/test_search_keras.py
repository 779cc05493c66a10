"""The engine inside a real Keras ``fit``: a small TrialHost over a real model
and optimizer (a sketch of what the controller does), so the protocol is
proven against Keras: restores of weights, optimizer slots and step in the
middle of ``fit``, a retrace for a baked-in hyperparameter (``momentum``,
``nesterov``), and ``val_loss`` evaluated on the validation data at a
trial's end."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tb_retune.experiment.search import parse_search  # noqa: E402
from tb_retune.trainer.search import SearchEngine  # noqa: E402


class KerasHost(keras.callbacks.Callback):
    """A TrialHost over ``self.model`` in ``fit``: checkpoints in memory."""

    def __init__(self, logdir: str, validation: tuple[np.ndarray, np.ndarray]) -> None:
        super().__init__()
        self.engine = SearchEngine(logdir, self)
        self.validation = validation
        self.checkpoints: dict[tuple[str, int], tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]] = {}
        self.branch = "main"
        self.pending: dict[str, float] = {}
        self.logged: set[str] = set()
        self.retrace = False
        self.errors: list[str] = []
        self.starts: dict[str, tuple[int, list[np.ndarray]]] = {}
        self.request: Any = None
        self.done: Any = None

    def step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    # -- fit hooks: what the controller does at a boundary -------------------------
    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        step = self.step()
        if step == 20 and self.request is not None:
            self.save()
            self.engine.submit(self.request)
            self.request = None
        logs_now, self.pending = self.pending, {}
        action = self.engine.on_boundary(step, logs_now or None)
        if action.done is not None:
            self.done = action.done
        if self.retrace:
            self.model.make_train_function(force=True)
            self.retrace = False

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if logs and self.step() % 5 == 0:
            self.pending["loss"] = float(logs["loss"])
            self.logged.add("loss")

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        for k, v in (logs or {}).items():
            self.pending[k] = float(v)
            self.logged.add(k)

    # -- TrialHost ------------------------------------------------------------------
    def hyperparameters(self) -> Mapping[str, Any]:
        opt = self.model.optimizer
        return {"learning_rate": float(opt.learning_rate.numpy()), "momentum": float(opt.momentum),
                "nesterov": bool(opt.nesterov)}

    def metrics(self) -> Collection[str] | None:
        return sorted(self.logged) or None

    def save(self) -> tuple[str, int]:
        opt = self.model.optimizer
        where = (self.branch, self.step())
        self.checkpoints[where] = ([w.copy() for w in self.model.get_weights()],
                                   [v.numpy().copy() for v in opt.variables], dict(self.hyperparameters()))
        return where

    def checkpoint_hyperparameters(self, branch: str, step: int) -> Mapping[str, Any] | None:
        found = self.checkpoints.get((branch, step))
        return dict(found[2]) if found else None

    def keep_checkpoint(self, branch: str, step: int) -> None:
        pass  # nothing is ever removed here

    def keep_checkpoint_now(self) -> tuple[str, int]:
        return self.save()

    def restore(self, branch: str, step: int, hyperparameters: Mapping[str, Any], new_branch_name: str,
                node_record_extra: Mapping[str, Any]) -> str:
        self.save()
        weights, slots, _ = self.checkpoints[(branch, step)]
        opt = self.model.optimizer
        self.model.set_weights(weights)
        for var, value in zip(opt.variables, slots, strict=True):
            var.assign(value)
        opt.learning_rate.assign(hyperparameters["learning_rate"])
        opt.momentum = float(hyperparameters["momentum"])  # baked into the trace: retrace
        opt.nesterov = bool(hyperparameters["nesterov"])
        self.retrace = True
        self.branch = new_branch_name
        self.starts[new_branch_name] = (self.step(), [w.copy() for w in weights])
        self.pending = {}
        return new_branch_name

    def update_node_record(self, node_record_extra: Mapping[str, Any]) -> None:
        pass

    def evaluate(self, metric: str) -> float | None:
        if metric != "val_loss":
            return None
        x, y = self.validation
        return float(self.model.evaluate(x, y, verbose=0, return_dict=True)["loss"])

    def report_error(self, message: str) -> None:
        self.errors.append(message)

    def log(self, message: str) -> None:
        pass


def test_a_search_inside_a_real_fit(tmp_path: Any) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    x_val = rng.normal(size=(64, 8)).astype("float32")
    y_val = (x_val @ rng.normal(size=(8, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.5), loss="mse")
    host = KerasHost(str(tmp_path), (x_val, y_val))
    host.request = parse_search({
        "id": "s-k", "from": {"branch": "main", "step": 20},
        "space": {"learning_rate": {"low": 1e-3, "high": 0.1, "log": True}, "momentum": {"low": 0.0, "high": 0.9},
                  "nesterov": {"choices": [True, False]}},
        "trials": 3, "steps_per_trial": 15, "objective": {"metric": "val_loss"}, "pruner": "median"})
    # 10 batches an epoch; the search needs 20 + 3 * 15 steps and a few for the end.
    model.fit(x, y, batch_size=32, epochs=9, validation_data=(x_val, y_val), verbose=0, callbacks=[host])
    assert host.errors == []
    entry = host.engine.searches()["s-k"]
    assert entry["state"] == "done" and len(entry["trials"]) == 3
    source_weights = host.checkpoints[("main", 20)][0]
    for t in entry["trials"]:
        start_step, start_weights = host.starts[t["branch"]]
        assert start_step == 20  # the step count came back with the slots
        assert all(np.array_equal(a, b) for a, b in zip(start_weights, source_weights, strict=True))
        assert t["state"] == "complete" and t["step"] == 35 and np.isfinite(t["value"])
    assert entry["trials"][0]["hyperparameters"] == {"learning_rate": pytest.approx(0.01), "momentum": 0.5,
                                                     "nesterov": False}
    # The best trial's value is its end state's val_loss; training went on from there with its settings.
    best = entry["best"]
    assert host.done is not None and host.done.from_branch == best["branch"]
    end_weights = host.checkpoints[(best["branch"], 35)][0]
    model_now = keras.models.clone_model(model)
    model_now.set_weights(end_weights)
    model_now.compile(loss="mse")
    assert float(model_now.evaluate(x_val, y_val, verbose=0)) == pytest.approx(best["value"], rel=1e-5)
    assert host.hyperparameters()["nesterov"] == best["hyperparameters"]["nesterov"]
    assert host.hyperparameters()["momentum"] == pytest.approx(best["hyperparameters"]["momentum"])
