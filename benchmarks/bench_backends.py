"""The trainer's costs on each Keras backend, against that backend's own bare ``fit``.

Keras picks its backend once, at import, so each backend is measured in a
child process of its own (``KERAS_BACKEND=tensorflow``, ``jax``, ``torch``),
one after the other, and the rows come back side by side in one table:

- ``overhead_vs_bare_fit``: ``fit`` with ``RetuneCallback`` (no epoch
  checkpoint) over bare ``fit``, interleaved pairs, as in ``bench_fit``;
- ``control_latency_ms_p50/p99``: an atomic save of ``retune.json`` to the new
  learning rate in force at a batch boundary (``bench_fit.control_latency``;
  its probe reads the learning rate at every batch, which on JAX syncs the
  state each batch: the probe pays for that, not the callback);
- ``rejit_ms``: what a change that must rebuild the compiled step costs (a
  retrace on TensorFlow, a re-jit on JAX, nothing to rebuild in torch's eager
  step): the extra time of the batch that applies a momentum change, over the
  median batch, and ``rejit_vs_step``, that extra as a multiple of one step.

    python benchmarks/bench_backends.py [--quick]        # all three, the table
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import interleaved, median, pair_ratios  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")
STEPS_PER_EPOCH = 100  # bench_fit's 3,200 samples in batches of 32


def _overhead(pairs: int, epochs: int) -> dict[str, Any]:
    import shutil

    from benchmarks import bench_fit

    x, y = bench_fit._data()
    state = bench_fit._Resettable(bench_fit.make_model())
    root = tempfile.mkdtemp(prefix="tbr-bench-backend-")
    walls: dict[str, list[float]] = {"bare": [], "retune_nockpt": []}
    try:
        for n, (_, kind) in enumerate([(0, "bare"), (0, "retune_nockpt"), *interleaved(pairs, list(walls))]):
            state.reset()
            logdir = os.path.join(root, f"{kind}-{n}")
            callbacks = bench_fit._callbacks(kind, logdir)
            t0 = time.perf_counter()
            state.model.fit(x, y, batch_size=bench_fit.BATCH, epochs=epochs, verbose=0, callbacks=callbacks,
                            shuffle=False)
            if n >= 2:  # the first two are the warm-up (tracing, imports)
                walls[kind].append(time.perf_counter() - t0)
            shutil.rmtree(logdir, ignore_errors=True)
        # Where our time goes: one more run with RetuneCallback's hooks timed (not in the ratio).
        state.reset()
        callback = bench_fit._callbacks("retune_nockpt", os.path.join(root, "hooks"))[0]
        spent = bench_fit._hook_timer(callback)
        state.model.fit(x, y, batch_size=bench_fit.BATCH, epochs=epochs, verbose=0, callbacks=[callback],
                        shuffle=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratios = pair_ratios(walls["retune_nockpt"], walls["bare"])
    steps = epochs * STEPS_PER_EPOCH
    bare = median(walls["bare"])
    return {"overhead_vs_bare_fit": round(median(ratios), 4),
            "pair_ratios": [round(r, 3) for r in ratios],
            "overhead_vs_bare_fit_from_hooks": round(1 + sum(v for k, v in spent.items() if k != "cpu") / bare, 4),
            "fixed_ms_per_fit": round((spent["on_train_begin"] + spent["on_train_end"]) * 1000, 1),
            "us_per_batch": round(spent["on_train_batch_begin"] * 1e6 / steps, 2),
            "bare_fit_s_median": round(bare, 3), "steps": steps}


def _rejit(changes: int) -> dict[str, Any]:
    """Batch times around momentum changes (SGD): each one rebuilds the compiled step."""
    import keras

    import tb_retune
    from benchmarks import bench_fit

    x, y = bench_fit._data()
    model = bench_fit.make_model(optimizer="sgd")
    every = 40
    at = [every * (i + 1) for i in range(changes)]
    begins: list[float] = []
    in_hook: dict[int, float] = {}

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            begins.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="tbr-bench-rejit-") as root:
        logdir = os.path.join(root, "exp")
        os.makedirs(logdir)
        schedule = [{"at_step": s, "hyperparameters": {"momentum": 0.8 if i % 2 == 0 else 0.9}}
                    for i, s in enumerate(at)]
        with open(os.path.join(logdir, "retune.json"), "w") as f:
            json.dump({"schedule": schedule}, f)
        callback = tb_retune.RetuneCallback(logdir, verbose=False, checkpoint_every_epochs=None)
        inner = callback.on_train_batch_begin

        def timed_hook(batch: int, logs: Any = None) -> None:
            t0 = time.perf_counter()
            inner(batch, logs)
            in_hook[len(begins) - 1] = time.perf_counter() - t0

        callback.on_train_batch_begin = timed_hook  # type: ignore[method-assign]
        epochs = -(-(at[-1] + every) // STEPS_PER_EPOCH)
        model.fit(x, y, batch_size=bench_fit.BATCH, epochs=epochs, verbose=0, shuffle=False,
                  callbacks=[Clock(), callback])
    batch_s = [b - a for a, b in zip(begins, begins[1:], strict=False)]
    # Batch i runs from begins[i] to begins[i + 1]; leave out epoch starts and the change batches.
    quiet = [t for i, t in enumerate(batch_s) if i not in at and i % STEPS_PER_EPOCH and i > 5]
    step = median(quiet)
    extra = [batch_s[i] - step for i in at if i < len(batch_s)]
    hook = [in_hook.get(i, 0.0) for i in at]
    return {"step_ms_median": round(step * 1000, 3), "rejit_ms": round(median(extra) * 1000, 2),
            "rejit_vs_step": round(median(extra) / step, 1) if step > 0 else None,
            "rejit_ms_each": [round(e * 1000, 1) for e in extra],
            "apply_and_rebuild_in_hook_ms": round(median(hook) * 1000, 2), "changes": len(at)}


def measure(quick: bool) -> dict[str, Any]:
    """Every row for the backend of this process (run in a child per backend)."""
    import keras

    from benchmarks import bench_fit

    out: dict[str, Any] = {"backend": keras.backend.backend()}
    out["fit"] = _overhead(pairs=5 if quick else 9, epochs=3 if quick else 5)
    latency = bench_fit.control_latency(saves=20 if quick else 60)
    out["latency"] = {k: latency[k] for k in ("control_latency_ms_p50", "control_latency_ms_p99")}
    out["latency"]["apply_in_hook_ms"] = latency["details"]["apply_in_hook_ms"]
    out["rejit"] = _rejit(changes=3 if quick else 6)
    return out


def compare(quick: bool, backends: tuple[str, ...] = BACKENDS) -> dict[str, Any]:
    """Runs :func:`measure` under each backend, one child process each, one after the other."""
    result: dict[str, Any] = {"details": {}}
    for backend in backends:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--json", f.name] + (["--quick"] if quick else [])
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
            if proc.returncode != 0:
                result["details"][backend] = {"error": proc.stderr[-2000:]}
                continue
            child = json.load(f)
        child["seconds"] = round(time.perf_counter() - t0, 1)
        result["details"][backend] = child
        result[f"backend_overhead_vs_bare_fit_{backend}"] = child["fit"]["overhead_vs_bare_fit"]
        result[f"backend_control_latency_ms_p99_{backend}"] = child["latency"]["control_latency_ms_p99"]
        result[f"backend_rejit_ms_{backend}"] = child["rejit"]["rejit_ms"]
        result[f"backend_rejit_vs_step_{backend}"] = child["rejit"]["rejit_vs_step"]
    return result


def table(result: dict[str, Any]) -> str:
    details = result.get("details", {})
    lines = ["| backend | fit + RetuneCallback / bare fit | 1 + our hooks / bare fit | fixed ms per fit | "
             "us per batch | control latency p50 / p99 ms | step ms | "
             "change that rebuilds the step: extra ms (x one step) | of which in our hook ms |",
             "|---|---:|---:|---:|---:|---|---:|---|---:|"]
    for backend, d in details.items():
        if "error" in d:
            lines.append(f"| {backend} | error: {d['error'].strip().splitlines()[-1] if d['error'].strip() else '?'} ||||||||")
            continue
        f, la, r = d["fit"], d["latency"], d["rejit"]
        lines.append(f"| {backend} | {f['overhead_vs_bare_fit']:.3f} | {f['overhead_vs_bare_fit_from_hooks']:.3f} | "
                     f"{f['fixed_ms_per_fit']} | {f['us_per_batch']} | {la['control_latency_ms_p50']} / "
                     f"{la['control_latency_ms_p99']} | {r['step_ms_median']} | {r['rejit_ms']} ({r['rejit_vs_step']}x) | "
                     f"{r['apply_and_rebuild_in_hook_ms']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from benchmarks._common import quiet

    quiet()
    out = measure(args.quick) if args.child else compare(args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if not args.child:
        print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
