"""``fit`` with RetuneCallback against ``fit`` with TensorBoard's callback and bare ``fit``,
and the latency of a live change from the save of ``retune.json`` to the optimizer.

All fits use one compiled model whose weights and optimizer state are reset
before each run, so every run trains the same steps from the same state with an
already-traced train function (tracing takes longer than the fit itself and
would hide what a callback costs). Each run gets a fresh log folder.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from benchmarks._common import Profile, interleaved, median, pair_ratios, percentile

#: The small MLP of the overhead benchmark and how long it trains.
INPUTS, HIDDEN, CLASSES = 32, 64, 10
SAMPLES, BATCH = 3200, 32  # 100 steps per epoch
EPOCHS = 5

#: The learning rates of the control-latency benchmark cycle through these.
_LR_BASE = 1e-3


def _data(samples: int = SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, INPUTS)).astype("float32")
    y = rng.integers(0, CLASSES, size=samples).astype("int32")
    return x, y


def make_model(hidden: int = HIDDEN, depth: int = 2, inputs: int = INPUTS, optimizer: str = "adam") -> Any:
    import keras

    keras.utils.set_random_seed(0)
    layers = [keras.Input((inputs,))]
    layers += [keras.layers.Dense(hidden, activation="relu") for _ in range(depth)]
    layers += [keras.layers.Dense(CLASSES)]
    model = keras.Sequential(layers)
    opt = keras.optimizers.Adam(_LR_BASE) if optimizer == "adam" else keras.optimizers.SGD(_LR_BASE, momentum=0.9)
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    return model


class _Resettable:
    """One compiled model, put back to the same weights and optimizer state before each run."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._weights = model.get_weights()
        self._opt = [v.numpy() for v in model.optimizer.variables]

    def reset(self) -> None:
        self.model.set_weights(self._weights)
        for var, value in zip(self.model.optimizer.variables, self._opt, strict=True):
            var.assign(value)
        self.model.stop_training = False


def _callbacks(kind: str, logdir: str) -> list[Any]:
    import keras

    import tb_retune

    if kind == "bare":
        return []
    if kind == "tensorboard":
        # What a person adds instead: the defaults, at the same frequency as ours.
        return [keras.callbacks.TensorBoard(logdir, update_freq="epoch")]
    if kind == "tensorboard_nograph":
        return [keras.callbacks.TensorBoard(logdir, update_freq="epoch", write_graph=False)]
    if kind == "retune":
        # The defaults: scalars each epoch, a checkpoint each epoch.
        return [tb_retune.RetuneCallback(logdir, verbose=False)]
    if kind == "retune_nockpt":
        return [tb_retune.RetuneCallback(logdir, verbose=False, checkpoint_every_epochs=None)]
    raise ValueError(kind)


_RETUNE_HOOKS = ("on_train_begin", "on_train_batch_begin", "on_epoch_end", "on_train_end")


def _hook_timer(callback: Any, names: tuple[str, ...] = _RETUNE_HOOKS) -> dict[str, float]:
    """Wraps the hooks ``names`` and sums the wall time spent in each, and the
    training thread's CPU time in all of them (``cpu``).

    For RetuneCallback ``on_train_batch_end`` is left alone: wrapping it
    would turn off Keras's async callback dispatch and change what is
    measured (TensorBoard's callback overrides it in its class already).
    """
    spent: dict[str, float] = collections.defaultdict(float)
    for name in names:
        inner = getattr(callback, name)

        def wrapper(*args: Any, _inner: Callable[..., Any] = inner, _name: str = name, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return _inner(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - t0
                spent["cpu"] += time.thread_time() - c0

        setattr(callback, name, wrapper)
    return spent


def _own_hooks(callback: Any) -> tuple[str, ...]:
    """The ``on_*`` hooks that a callback's class (or a base below keras's Callback) defines."""
    import keras

    names: set[str] = set()
    for cls in type(callback).__mro__:
        if cls is keras.callbacks.Callback:
            break
        names |= {n for n in vars(cls) if n.startswith("on_") and callable(vars(cls)[n])}
    return tuple(sorted(names))


@contextlib.contextmanager
def _thread_cpu() -> Iterator[list[float]]:
    """The CPU time of the Python threads started in the block (a bare ``fit``
    starts none: they are the callback's), summed when each ends; the block's
    threads are waited for on the way out."""
    total = [0.0]
    started: list[threading.Thread] = []
    original_run, original_start = threading.Thread.run, threading.Thread.start

    def run(self: threading.Thread) -> None:
        try:
            original_run(self)
        finally:
            total[0] += time.thread_time()  # this thread's CPU time, all of it

    def start(self: threading.Thread) -> None:
        started.append(self)
        original_start(self)

    threading.Thread.run, threading.Thread.start = run, start  # type: ignore[method-assign]
    try:
        yield total
    finally:
        threading.Thread.run, threading.Thread.start = original_run, original_start  # type: ignore[method-assign]
        for t in started:
            t.join(timeout=10)


#: What the headline ratios are: ``"direct_cpu"``, 1 + the CPU time that the
#: callback itself costs the process (its hooks on the training thread, and its
#: threads) over a bare fit's CPU time; or the median of the interleaved fits'
#: per-pair ratios in ``"cpu"`` (process time) or ``"wall"`` time. The direct
#: CPU figure is the one that holds where other jobs share the cores (README).
HEADLINE = "direct_cpu"


def _summary(ratios: list[float]) -> dict[str, Any]:
    """The median of per-pair ratios and their spread."""
    return {"median": round(median(ratios), 4), "p25": round(percentile(ratios, 25), 4),
            "p75": round(percentile(ratios, 75), 4), "min": round(min(ratios), 4), "max": round(max(ratios), 4),
            "pairs": len(ratios)}


def overhead(*, pairs: int, epochs: int = EPOCHS, nograph: bool = True, profile: bool = True,
             direct_runs: int = 3) -> dict[str, Any]:
    """Wall time of ``fit`` with RetuneCallback over ``fit`` with TensorBoard / with nothing."""
    x, y = _data()
    state = _Resettable(make_model())
    root = tempfile.mkdtemp(prefix="tbr-bench-fit-")
    kinds = ["bare", "tensorboard", "retune", "retune_nockpt"] + (["tensorboard_nograph"] if nograph else [])
    counter = [0]

    def run(kind: str) -> tuple[float, float]:
        state.reset()
        counter[0] += 1
        logdir = os.path.join(root, f"{kind}-{counter[0]}")
        cbs = _callbacks(kind, logdir)
        c0, t0 = time.process_time(), time.perf_counter()
        state.model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=cbs, shuffle=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        shutil.rmtree(logdir, ignore_errors=True)
        return wall, cpu

    try:
        # Warm up: the first fit traces the train function; each callback kind
        # imports and initialises what it needs once.
        for kind in kinds:
            run(kind)
        wall: dict[str, list[float]] = {k: [] for k in kinds}
        cpu: dict[str, list[float]] = {k: [] for k in kinds}
        for _, kind in interleaved(pairs, kinds):
            w, c = run(kind)
            wall[kind].append(w)
            cpu[kind].append(c)

        # Where our time goes: extra, instrumented runs (not in the interleaved ratios): the wall
        # time in each hook, and the CPU time that the callback costs the process (the training
        # thread's inside its hooks, and all of its threads'), TensorBoard's callback measured alike.
        hooks: dict[str, dict[str, float]] = {}
        direct_cpu: dict[str, float] = {}
        measured = ("retune", "retune_nockpt", "tensorboard")
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in measured}
        for _, kind in interleaved(direct_runs, list(measured)):  # rotated, as the pairs are
            state.reset()
            counter[0] += 1
            logdir = os.path.join(root, f"hooks-{counter[0]}")
            cb = _callbacks(kind, logdir)[0]
            spent = _hook_timer(cb, _RETUNE_HOOKS if kind != "tensorboard" else _own_hooks(cb))
            with _thread_cpu() as threads_cpu:
                state.model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[cb], shuffle=False)
            runs[kind].append({**spent, "threads_cpu": threads_cpu[0]})
            shutil.rmtree(logdir, ignore_errors=True)
        for kind in measured:
            per = runs[kind]
            direct_cpu[kind] = median([p["cpu"] + p["threads_cpu"] for p in per])
            if kind == "tensorboard":
                continue
            hooks[kind] = {name: round(median([p.get(name, 0.0) for p in per]) * 1000, 2) for name in _RETUNE_HOOKS}
            hooks[kind]["total"] = round(sum(hooks[kind].values()), 2)
            hooks[kind]["cpu_in_hooks"] = round(median([p["cpu"] for p in per]) * 1000, 2)
            hooks[kind]["cpu_of_threads"] = round(median([p["threads_cpu"] for p in per]) * 1000, 2)
        bare_cpu = median(cpu["bare"])
        direct = {
            "retune_nockpt/bare": 1 + direct_cpu["retune_nockpt"] / bare_cpu,
            "retune/tensorboard": (bare_cpu + direct_cpu["retune"]) / (bare_cpu + direct_cpu["tensorboard"]),
        }

        r_tb = pair_ratios(wall["retune"], wall["tensorboard"])
        r_bare = pair_ratios(wall["retune_nockpt"], wall["bare"])
        c_tb = pair_ratios(cpu["retune"], cpu["tensorboard"])
        c_bare = pair_ratios(cpu["retune_nockpt"], cpu["bare"])
        measures = {"wall": (r_tb, r_bare), "cpu": (c_tb, c_bare)}
        if HEADLINE == "direct_cpu":
            head_tb, head_bare = direct["retune/tensorboard"], direct["retune_nockpt/bare"]
        else:
            head_tb, head_bare = median(measures[HEADLINE][0]), median(measures[HEADLINE][1])
        out: dict[str, Any] = {
            "overhead_vs_tensorboard_callback": round(head_tb, 4),
            "overhead_vs_bare_fit": round(head_bare, 4),
            "overhead_vs_bare_fit_cpu_pairs": round(median(c_bare), 4),
            "overhead_vs_bare_fit_wall_pairs": round(median(r_bare), 4),
            "overhead_vs_tensorboard_cpu_pairs": round(median(c_tb), 4),
            "overhead_vs_tensorboard_wall_pairs": round(median(r_tb), 4),
            "details": {
                "headline": HEADLINE,
                # 1 + the callback's own CPU time over a bare fit's (TensorBoard's callback alike).
                "direct_cpu": {k: round(v, 4) for k, v in direct.items()},
                "callback_cpu_ms_per_fit": {k: round(v * 1000, 2) for k, v in direct_cpu.items()},
                # The interleaved fits, in wall and in CPU time, each with the spread of its per-pair ratios.
                "ratios": {name: {"retune/tensorboard": _summary(a), "retune_nockpt/bare": _summary(b)}
                           for name, (a, b) in measures.items()},
                "fit": {"model": f"MLP {INPUTS}-{HIDDEN}-{HIDDEN}-{CLASSES}, Adam", "samples": SAMPLES,
                        "batch_size": BATCH, "epochs": epochs, "steps": epochs * SAMPLES // BATCH,
                        "pairs": pairs},
                "wall_s_median": {k: round(median(v), 4) for k, v in wall.items()},
                "wall_s_min": {k: round(min(v), 4) for k, v in wall.items()},
                "cpu_s_median": {k: round(median(v), 4) for k, v in cpu.items()},
                "pair_ratios": {
                    "retune/tensorboard": [round(r, 3) for r in r_tb],
                    "retune_nockpt/bare": [round(r, 3) for r in r_bare],
                },
                "overhead_with_checkpoints_vs_bare": round(median(pair_ratios(wall["retune"], wall["bare"])), 4),
                "ratio_of_minimums": {
                    "retune/tensorboard": round(min(wall["retune"]) / min(wall["tensorboard"]), 4),
                    "retune_nockpt/bare": round(min(wall["retune_nockpt"]) / min(wall["bare"]), 4),
                },
                "cpu_ratio": {
                    "retune/tensorboard": round(median(pair_ratios(cpu["retune"], cpu["tensorboard"])), 4),
                    "retune_nockpt/bare": round(median(pair_ratios(cpu["retune_nockpt"], cpu["bare"])), 4),
                },
                "retune_hook_ms_per_fit": hooks,
                "hook_share_of_bare_fit": {
                    k: round(v["total"] / 1000 / median(wall["bare"]), 4) for k, v in hooks.items()
                },
            },
        }
        if nograph:
            out["details"]["overhead_vs_tensorboard_nograph"] = round(
                median(pair_ratios(wall["retune"], wall["tensorboard_nograph"])), 4)
        if profile:
            # One more run with cProfile switched on inside RetuneCallback's hooks only.
            state.reset()
            counter[0] += 1
            cb = _callbacks("retune_nockpt", os.path.join(root, f"prof-{counter[0]}"))[0]
            prof = Profile()
            prof.wrap(cb, ("on_train_begin", "on_train_batch_begin", "on_epoch_end", "on_train_end"))
            state.model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[cb], shuffle=False)
            out["details"]["profile_retune_nockpt_fit"] = prof.top()
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- control latency -----------------------------------------------------------


def _atomic_save(path: str, doc: str, tmp_dir: str | None = None) -> float:
    """What an editor or a script does: write a temporary file, then rename it onto the file.

    The temporary file is next to the file (as editors and our own writers do),
    or in ``tmp_dir`` (a folder on the same filesystem that is not watched).
    Returns ``time.perf_counter()`` just before the rename: the moment the save
    becomes visible (taken before, as a thread that waits for the GIL after
    the rename would read the clock late).
    """
    tmp = os.path.join(tmp_dir or os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(doc)
    t = time.perf_counter()
    os.replace(tmp, path)
    return t


def control_latency(*, saves: int, batch_ms: float = 5.0, seed: int = 0,
                    tmp_outside: bool = False, profiler: Profile | None = None) -> dict[str, Any]:
    """Milliseconds from an atomic save of ``retune.json`` to the new learning rate in the optimizer.

    A probe callback placed after RetuneCallback reads the optimizer's learning
    rate at each batch boundary (the training thread's view) and pads each batch
    to ``batch_ms``. Another thread saves a new learning rate, waits until the
    probe sees it, pauses a random 10-40 ms, and saves the next one. Each save
    is timed in three parts: save -> revision parsed (watcher thread),
    parsed -> the next batch boundary, and the work done there to apply it.
    With ``profiler``, RetuneCallback's batch hook runs under it.
    """
    import keras

    import tb_retune

    rng = random.Random(seed)
    # 1,000 steps (about 5 s) per epoch: an epoch end (with its checkpoint) falls
    # within the run, as in real training, but not every second.
    x, y = _data(32000)
    model = make_model()
    root = tempfile.mkdtemp(prefix="tbr-bench-latency-")
    logdir = os.path.join(root, "exp")
    control = os.path.join(logdir, "retune.json")
    tmp_dir = os.path.join(root, "tmp") if tmp_outside else None
    if tmp_dir:
        os.makedirs(tmp_dir)
    lock = threading.Lock()
    wanted: list[float | None] = [None]
    seen_at: list[float] = [0.0]
    seen = threading.Event()
    done = threading.Event()
    boundaries: list[float] = []  # perf_counter at each batch boundary (probe)
    batch_index: list[int] = []  # the batch number within its epoch at each boundary
    applies: list[tuple[float, float]] = []  # RetuneCallback's hook on batches that applied a revision
    revision_at: list[float] = []  # the watcher thread has parsed and handed over a revision

    class Probe(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._begin = 0.0

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            now = time.perf_counter()
            lr = float(self.model.optimizer.learning_rate)
            with lock:
                target = wanted[0]
                if target is not None and not seen.is_set() and abs(lr - target) <= 1e-6 * target:
                    seen_at[0] = now
                    seen.set()
            if done.is_set():
                self.model.stop_training = True
            boundaries.append(now)
            batch_index.append(batch)
            # Pad the batch to batch_ms (sleeping releases the GIL, as a real step does).
            pad = batch_ms / 1000 - (now - self._begin) if self._begin else 0.0
            if pad > 0:
                time.sleep(pad)
            self._begin = time.perf_counter()

    retune = tb_retune.RetuneCallback(logdir, verbose=False)
    if profiler is not None:
        profiler.wrap(retune, ("on_train_batch_begin",))
    controller = retune.controller
    inner_revision = controller._on_revision

    def on_revision(data: bytes | None) -> None:
        inner_revision(data)
        revision_at.append(time.perf_counter())

    # Set before fit: the controller hands this bound attribute to its watcher.
    controller._on_revision = on_revision  # type: ignore[method-assign]
    inner_hook = retune.on_train_batch_begin

    def hook(batch: int, logs: Any = None) -> None:
        before = controller.mailbox.taken
        t0 = time.perf_counter()
        inner_hook(batch, logs)
        if controller.mailbox.taken != before:
            applies.append((t0, time.perf_counter()))

    retune.on_train_batch_begin = hook  # type: ignore[method-assign]
    timeline: list[dict[str, float]] = []
    errors: list[str] = []
    watcher_kind: list[str] = ["?"]

    def writer() -> None:
        try:
            # Wait until training runs (the first batches have gone by).
            while len(boundaries) < 5 and not done.is_set():
                time.sleep(0.01)
            if controller.watcher is not None:
                watcher_kind[0] = controller.watcher.kind
            for i in range(saves):
                target = float(f"{_LR_BASE * (1 + (i + 1) / 100):.6g}")
                with lock:
                    wanted[0] = target
                    seen.clear()
                    n_rev, n_apply = len(revision_at), len(applies)
                doc = json.dumps({"hyperparameters": {"learning_rate": target}}) + "\n"
                t_save = _atomic_save(control, doc, tmp_dir)
                if not seen.wait(5.0):
                    errors.append(f"save {i}: learning rate {target} not in force after 5 s")
                    break
                row = {"total": seen_at[0] - t_save}
                if len(revision_at) > n_rev:
                    row["parsed"] = revision_at[n_rev] - t_save
                if len(applies) > n_apply:
                    row["boundary"] = applies[n_apply][0] - t_save
                    row["apply"] = applies[n_apply][1] - applies[n_apply][0]
                    # 0 when the change waited for an epoch to end and the next to start
                    row["batch"] = batch_index[-1] if batch_index else -1
                timeline.append({k: (v if k == "batch" else v * 1000) for k, v in row.items()})
                time.sleep(rng.uniform(0.010, 0.040))
        except Exception as e:  # reported, never hangs the fit
            errors.append(repr(e))
        finally:
            done.set()

    try:
        os.makedirs(logdir, exist_ok=True)
        t = threading.Thread(target=writer, name="bench-control-writer", daemon=True)
        t.start()
        model.fit(x, y, batch_size=BATCH, epochs=10_000, verbose=0, callbacks=[retune, Probe()], shuffle=False)
        t.join(timeout=10)
        if errors:
            raise RuntimeError("; ".join(errors))
        latencies = [r["total"] for r in timeline]
        parsed = [r["parsed"] for r in timeline if "parsed" in r]
        waits = [r["boundary"] - r["parsed"] for r in timeline if "boundary" in r and "parsed" in r]
        apply = [r["apply"] for r in timeline if "apply" in r]
        gaps = [(b - a) * 1000 for a, b in zip(boundaries, boundaries[1:], strict=False)]
        epoch_gaps = [g for g, i in zip(gaps, batch_index[1:], strict=False) if i == 0]
        inner_gaps = [g for g, i in zip(gaps, batch_index[1:], strict=False) if i != 0]
        slow = sorted(timeline, key=lambda r: -r["total"])[:3]
        return {
            "control_latency_ms_p50": round(percentile(latencies, 50), 2),
            "control_latency_ms_p99": round(percentile(latencies, 99), 2),
            "details": {
                "saves": len(latencies),
                "temp_file": "outside the watched folder" if tmp_outside else "next to retune.json",
                "watcher": watcher_kind[0],
                "debounce_ms": controller.options.debounce_s * 1000,
                "steps_per_epoch": len(x) // BATCH,
                "batch_ms_median": round(median(gaps), 2),
                "batch_ms_max_within_epoch": round(max(inner_gaps), 2) if inner_gaps else None,
                # Keras ends an epoch and starts the next between two batches
                "epoch_transition_ms": {"median": round(median(epoch_gaps), 2),
                                        "max": round(max(epoch_gaps), 2)} if epoch_gaps else None,
                "saves_applied_at_epoch_start": sum(1 for r in timeline if r.get("batch") == 0),
                "latency_ms_min": round(min(latencies), 2),
                "latency_ms_max": round(max(latencies), 2),
                # save -> the watcher thread has read, parsed and validated the new revision
                "save_to_parsed_ms": {"p50": round(percentile(parsed, 50), 2),
                                      "p99": round(percentile(parsed, 99), 2)},
                # parsed -> the training thread's next batch boundary
                "parsed_to_boundary_ms": {"p50": round(percentile(waits, 50), 2),
                                          "p99": round(percentile(waits, 99), 2)},
                # time in RetuneCallback.on_train_batch_begin on the batch that applies it
                "apply_in_hook_ms": {"p50": round(percentile(apply, 50), 2),
                                     "p99": round(percentile(apply, 99), 2)},
                "slowest_saves_ms": [{k: round(v, 1) for k, v in r.items()} for r in slow],
                "p99_without_epoch_transitions": round(
                    percentile([r["total"] for r in timeline if r.get("batch") != 0], 99), 2),
            },
        }
    finally:
        done.set()
        shutil.rmtree(root, ignore_errors=True)
