"""The per-step cost of the multi-process agreement (issue 16), two JAX processes.

Two processes on 127.0.0.1 (gloo collectives, ``keras.distribution.DataParallel``)
run the same ``fit``, once bare and once with ``RetuneCallback`` (no epoch
checkpoint, so what is left is the callback's hooks and the agreement: one
``broadcast_one_to_all`` of one int64 per batch boundary), interleaved
bare / retune runs, each started afresh (and a third run agreeing only
every 10 steps, ``agree_every_steps=10``). Rows:

- ``overhead_vs_bare_fit``: the median of (retune fit time / bare fit time)
  over the pairs, timed in process 0 from ``on_train_begin`` to ``on_train_end``;
- ``step_ms_bare`` / ``step_ms_retune``: the median step time of each;
- ``agreement_us``: one empty agreement (``Cluster.broadcast_bytes(None)``),
  timed alone in a loop of 500 in the same two processes.

What grows with the number of processes P: the agreement is one broadcast per
step, whose cost grows with P like any collective (gloo's broadcast is a tree
or ring over P processes: log P to P hops, of 8 bytes); the data each change
sends is the control file once, to every process. What does not grow: the
files (only process 0 writes), the checkpoints (written once), the watcher
(one, in process 0).

    python benchmarks/bench_distributed.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child(mode: str, port: int, pid: int, epochs: int, out: str) -> None:
    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import keras
    import numpy as np

    import tb_retune

    keras.distribution.set_distribution(keras.distribution.DataParallel(auto_shard_dataset=False))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(pid)
    x = rng.normal(size=(3200, 20)).astype("float32")
    y = rng.integers(0, 10, size=3200).astype("int32")
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            times.append(time.perf_counter())

        def on_train_end(self, logs: Any = None) -> None:
            times.append(time.perf_counter())

    result: dict[str, Any] = {}
    if mode == "agreement":
        from tb_retune.trainer.distributed import Cluster

        cluster = Cluster(jax.process_index(), jax.process_count())
        for _ in range(20):
            cluster.broadcast_bytes(None)
        t0 = time.perf_counter()
        for _ in range(500):
            cluster.broadcast_bytes(None)
        result["agreement_us"] = (time.perf_counter() - t0) / 500 * 1e6
    else:
        model.fit(x[:320], y[:320], batch_size=32, epochs=1, verbose=0)  # compile outside the timing
        callbacks: list[Any] = [Clock()]
        if mode.startswith("retune"):
            logdir = os.path.join(out, "exp")
            every = 10 if mode == "retune10" else 1
            callbacks.insert(0, tb_retune.RetuneCallback(logdir, verbose=False, checkpoint_every_epochs=None,
                                                         agree_every_steps=every))
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=callbacks)
        result["seconds"] = times[1] - times[0]
        result["steps"] = epochs * 100
    if pid == 0:
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(result, f)


def run_pair_of_processes(mode: str, epochs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        procs = [subprocess.Popen([sys.executable, __file__, "--child", mode, str(port), str(i), str(epochs), out],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i in (0, 1)]
        errors = [p.communicate(timeout=600)[1] for p in procs]
        for p, err in zip(procs, errors, strict=True):
            if p.returncode != 0:
                raise RuntimeError(f"a benchmark process failed:\n{err[-3000:]}")
        with open(os.path.join(out, "result.json")) as f:
            return dict(json.load(f))


def measure(quick: bool = False) -> dict[str, Any]:
    pairs, epochs = (2, 3) if quick else (4, 6)
    ratios, ratios10, bare_ms, retune_ms = [], [], [], []
    for _ in range(pairs):
        bare = run_pair_of_processes("bare", epochs)
        retune = run_pair_of_processes("retune", epochs)
        retune10 = run_pair_of_processes("retune10", epochs)
        ratios.append(retune["seconds"] / bare["seconds"])
        ratios10.append(retune10["seconds"] / bare["seconds"])
        bare_ms.append(bare["seconds"] / bare["steps"] * 1e3)
        retune_ms.append(retune["seconds"] / retune["steps"] * 1e3)
    agreement = run_pair_of_processes("agreement", 0)

    def median(v: list[float]) -> float:
        v = sorted(v)
        return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2

    return {"processes": 2, "pairs": pairs, "steps_per_fit": epochs * 100,
            "overhead_vs_bare_fit": median(ratios), "ratios": ratios,
            "overhead_vs_bare_fit_agree_every_10": median(ratios10), "ratios_agree_every_10": ratios10,
            "step_ms_bare": median(bare_ms), "step_ms_retune": median(retune_ms),
            "agreement_us": agreement["agreement_us"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, port, pid, epochs, out = sys.argv[2:7]
        child(mode, int(port), int(pid), int(epochs), out)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    result = measure(args.quick)
    print(f"two JAX processes, {result['steps_per_fit']} steps per fit, {result['pairs']} interleaved pairs")
    print(f"  fit + RetuneCallback / bare fit (multi-process) {result['overhead_vs_bare_fit']:8.3f} x  "
          f"(pairs: {', '.join(f'{r:.3f}' for r in result['ratios'])})")
    print(f"  the same, agree_every_steps=10                 {result['overhead_vs_bare_fit_agree_every_10']:8.3f} x  "
          f"(pairs: {', '.join(f'{r:.3f}' for r in result['ratios_agree_every_10'])})")
    print(f"  step, bare                                     {result['step_ms_bare']:8.3f} ms")
    print(f"  step, with RetuneCallback                      {result['step_ms_retune']:8.3f} ms")
    print(f"  one agreement (broadcast of one int64)         {result['agreement_us']:8.1f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
