"""A search (issue 17) against what a person would write instead, side by side in one process.

* **Between two trials**: the time a trial switch adds to its batch in our search (the trial's end
  checkpoint, Optuna's tell and ask in the journal, the restore of the source checkpoint, the new
  settings and the retrace for ``momentum``), without the objective's evaluation, against
  ``model.load_weights`` of the source + the new settings + one ``make_train_function`` (and the
  trace of its first call) in a plain ``fit``. Both are the batch's time minus the median batch.
* **A search's wall time**: N trials of K steps from one source state in one running ``fit``
  (``RetuneCallback``, the request in ``retune.json``, from the first trial's start to the search's
  end), against the same N trials in a plain Optuna ``study.optimize`` loop that, for each trial,
  builds and compiles the model, loads the source weights (optimizer state included), sets the
  trial's settings, fits K steps and evaluates ``val_loss``. Same model, data, sampler (random, the
  same seed), no pruner.

```sh
.venv/bin/python benchmarks/bench_search.py --quick --json bench-search.json
```
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import interleaved, log, median, pair_ratios, quiet, spread, write_result  # noqa: E402

SPACE = {"learning_rate": {"low": 1e-3, "high": 0.1, "log": True}, "momentum": {"low": 0.0, "high": 0.95}}
BATCH = 32


def _data() -> tuple[Any, ...]:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3200, 32)).astype("float32")
    y = (x[:, :10].argmax(axis=1)).astype("int32")
    return x[:2560], y[:2560], x[2560:], y[2560:]


def _model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _batch_probes(on_end: Any) -> tuple[Any, Any]:
    """Two callbacks: the first (placed before the others) starts each batch's clock, the
    second (after them) stops it and calls ``on_end(seconds)``."""
    import keras

    clock: dict[str, float] = {}

    class Begin(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            clock["t"] = time.perf_counter()

    class End(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            on_end(time.perf_counter() - clock["t"])

    return Begin(), End()


def ours(trials: int, steps: int, seed_id: str, space: dict[str, Any] = SPACE) -> dict[str, Any]:
    """One fit with a search of ``trials`` x ``steps`` asked for at the start."""
    import keras

    import tb_retune
    from tb_retune.trainer import search_host

    x, y, xv, yv = _data()
    model = _model()
    evaluating = {"s": 0.0}
    inner = search_host.SessionTrialHost.evaluate

    def timed_evaluate(self: Any, metric: str) -> float | None:
        t0 = time.perf_counter()
        try:
            return inner(self, metric)
        finally:
            evaluating["s"] += time.perf_counter() - t0

    batches: list[tuple[float, bool, float]] = []
    with tempfile.TemporaryDirectory() as logdir:
        with open(os.path.join(logdir, "retune.json"), "w") as f:
            json.dump({"search": {"id": seed_id, "space": space, "trials": trials, "steps_per_trial": steps,
                                  "objective": {"metric": "val_loss"}, "sampler": "random"}}, f)
        callback = tb_retune.RetuneCallback(logdir, verbose=False)
        seen = {"branch": "", "evaluating": 0.0}

        def on_end(seconds: float) -> None:
            branch = callback.controller.branch
            switched = branch != seen["branch"]
            batches.append((seconds, switched, evaluating["s"] - seen["evaluating"]))
            seen["branch"], seen["evaluating"] = branch, evaluating["s"]
            s = callback.controller.session
            if s is not None and s.search is not None and s.search.running is None and len(batches) > 2:
                model.stop_training = True

        begin, end = _batch_probes(on_end)
        search_host.SessionTrialHost.evaluate = timed_evaluate  # type: ignore[method-assign]
        try:
            model.fit(x, y, batch_size=BATCH, epochs=1000, verbose=0, shuffle=False, validation_data=(xv, yv),
                      callbacks=[begin, callback, end])
        finally:
            search_host.SessionTrialHost.evaluate = inner  # type: ignore[method-assign]
        with open(os.path.join(logdir, "retune-status.json")) as f:
            entry = json.load(f)["searches"][seed_id]
    assert entry["state"] == "done" and len(entry["trials"]) == trials, entry
    normal = median([b for b, switched, _ in batches[1:] if not switched])
    # Trial 0 starts in on_train_begin (the request is there at the start); the first batch traces.
    switches = [b - e - normal for b, switched, e in batches[1:] if switched]
    wall = entry["outcome"]["time"] - entry["trials"][0]["started"]
    keras.backend.clear_session()
    return {"switch_s": switches, "wall_s": wall, "batch_s": normal,
            "evaluate_s": evaluating["s"] / trials}


def theirs_switch(trials: int, steps: int) -> list[float]:
    """``load_weights`` + settings + ``make_train_function`` every ``steps`` batches of a plain fit."""
    import keras
    import numpy as np

    x, y, _, _ = _data()
    model = _model()
    rng = np.random.default_rng(1)
    batches: list[tuple[float, bool]] = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "source.weights.h5")
        state = {"n": 0, "switched": False}

        class Switch(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                state["switched"] = False
                if state["n"] == 1:
                    model.save_weights(path)
                elif state["n"] > 1 and (state["n"] - 1) % steps == 0:
                    model.load_weights(path)
                    model.optimizer.learning_rate.assign(float(np.exp(rng.uniform(np.log(1e-3), np.log(0.1)))))
                    model.optimizer.momentum = float(rng.uniform(0.0, 0.95))
                    model.make_train_function(force=True)
                    state["switched"] = True
                state["n"] += 1
                if state["n"] > 1 + trials * steps:
                    model.stop_training = True

        def on_end(seconds: float) -> None:
            batches.append((seconds, state["switched"]))

        begin, end = _batch_probes(on_end)
        model.fit(x, y, batch_size=BATCH, epochs=1000, verbose=0, shuffle=False, callbacks=[begin, Switch(), end])
    normal = median([b for b, s in batches[2:] if not s])
    keras.backend.clear_session()
    return [b - normal for b, s in batches[2:] if s]


def theirs_optimize(trials: int, steps: int, seed_id: str) -> float:
    """The plain Optuna loop: each trial rebuilds the model, reloads the source and fits."""
    import keras
    import optuna

    from tb_retune.trainer.search._study import seed_of

    x, y, xv, yv = _data()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "source.weights.h5")
        source = _model()
        source.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0)  # built, with optimizer state
        source.save_weights(path)

        def objective(trial: optuna.Trial) -> float:
            model = _model()
            model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0)  # builds the optimizer
            model.load_weights(path)
            model.optimizer.learning_rate.assign(trial.suggest_float("learning_rate", 1e-3, 0.1, log=True))
            model.optimizer.momentum = trial.suggest_float("momentum", 0.0, 0.95)
            model.make_train_function(force=True)
            model.fit(x, y, batch_size=BATCH, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
            return float(model.evaluate(xv, yv, batch_size=BATCH, verbose=0))

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed_of(seed_id)))
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=trials)
        wall = time.perf_counter() - t0
    keras.backend.clear_session()
    return wall


def compare(*, rounds: int, trials: int, steps: int) -> dict[str, Any]:
    ours_switch: list[float] = []
    ours_lr_switch: list[float] = []
    their_switch: list[float] = []
    walls: dict[str, list[float]] = {"ours": [], "theirs": []}
    evaluate: list[float] = []
    for r, kind in interleaved(rounds, ("ours", "theirs", "ours_lr")):
        sid = f"bench-{r}"
        if kind == "ours_lr":  # learning_rate only: a variable, so no retrace
            lr_out = ours(trials, steps, sid, {"learning_rate": SPACE["learning_rate"]})
            ours_lr_switch += lr_out["switch_s"]
            log(f"  round {r} ours, learning_rate only: switch {median(lr_out['switch_s']) * 1e3:.1f} ms")
        elif kind == "ours":
            out = ours(trials, steps, sid)
            ours_switch += out["switch_s"]
            walls["ours"].append(out["wall_s"])
            evaluate.append(out["evaluate_s"])
            log(f"  round {r} ours: search {out['wall_s']:.2f} s, switch {median(out['switch_s']) * 1e3:.1f} ms")
        else:
            walls["theirs"].append(theirs_optimize(trials, steps, sid))
            their_switch += theirs_switch(trials, steps)
            log(f"  round {r} theirs: optimize {walls['theirs'][-1]:.2f} s, "
                f"switch {median(their_switch) * 1e3:.1f} ms")
    return {
        "trial_switch_vs_load_weights": median(ours_switch) / median(their_switch),
        "trial_switch_lr_only_vs_load_weights": median(ours_lr_switch) / median(their_switch),
        "search_vs_optuna_optimize": median(pair_ratios(walls["ours"], walls["theirs"])),
        "details": {
            "trials": trials, "steps_per_trial": steps, "rounds": rounds,
            "trial_switch_ms": {"ours_median": median(ours_switch) * 1e3, "ours_spread": spread(ours_switch),
                                "ours_lr_only_median": median(ours_lr_switch) * 1e3,
                                "theirs_median": median(their_switch) * 1e3, "theirs_spread": spread(their_switch)},
            "search_wall_s": {"ours": walls["ours"], "theirs": walls["theirs"]},
            "evaluate_ms_per_trial": median(evaluate) * 1e3,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 6 trials x 40 steps (2-3 minutes on 2 cores)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    args = parser.parse_args(argv)
    quiet()
    rounds, trials, steps = (2, 6, 40) if args.quick else (4, 8, 80)
    result = compare(rounds=rounds, trials=trials, steps=steps)
    d = result["details"]
    print(f"trial switch (restore + settings + retrace) vs load_weights + make_train_function: "
          f"{result['trial_switch_vs_load_weights']:.2f}x ({d['trial_switch_ms']['ours_median']:.1f} ms vs "
          f"{d['trial_switch_ms']['theirs_median']:.1f} ms)")
    print(f"  the same with learning_rate only in the space (no retrace): "
          f"{result['trial_switch_lr_only_vs_load_weights']:.2f}x ({d['trial_switch_ms']['ours_lr_only_median']:.1f} ms)")
    print(f"search wall time vs optuna study.optimize rebuilding the model per trial: "
          f"{result['search_vs_optuna_optimize']:.2f}x ({median(d['search_wall_s']['ours']):.2f} s vs "
          f"{median(d['search_wall_s']['theirs']):.2f} s; {trials} trials x {steps} steps; evaluation "
          f"{d['evaluate_ms_per_trial']:.1f} ms a trial on our side)")
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
