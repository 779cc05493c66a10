"""A node-boundary checkpoint (``CheckpointStore.snapshot`` + ``write``, and ``load``)
against Keras's own ``model.save_weights``/``load_weights``, at three model sizes,
and the memory of a background write at 100 million parameters.

Keras 3's ``save_weights`` already writes the optimizer's variables (the
``.weights.h5`` file has an ``optimizer/vars`` group holding the iteration
count, the learning rate and every slot), and ``load_weights`` assigns them
back when the optimizer is built, so the baseline needs nothing added to be
the same state as ours. It is not durable, though: it neither fsyncs nor
renames a finished file into place, while our store does both (a crash never
leaves a half-written checkpoint under its final name) and checksums every
array. The ratio against ``save_weights`` followed by an fsync of its file is
reported beside it.

Our side is timed as ``fit`` runs it: the training thread takes the snapshot
(one copy into a reused buffer), the writer thread writes, checksums and
fsyncs it. "What fit pays" is the snapshot; the durable write is snapshot +
write, the whole cost of a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from benchmarks._common import log, median, pair_ratios, profile_top, spread, timed

#: (name, inputs, hidden width, hidden layers): the fit benchmarks' MLP (7 thousand
#: parameters), then 1 million and 17 million parameters (Adam keeps two slots per weight).
SIZES = (("small", 32, 64, 2), ("medium", 512, 512, 4), ("large", 2048, 2048, 4))
#: The memory check's model: 101 million parameters, 1.2 GB of state with Adam's slots; it is
#: also timed like the others (``reps["xl"]`` rounds, in the same child process).
XL = ("xl", 4096, 4096, 6)


def _model(inputs: int, width: int, depth: int) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    layers = [keras.Input((inputs,))]
    layers += [keras.layers.Dense(width, activation="relu") for _ in range(depth)]
    layers += [keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # One real step, so the optimizer's slots hold values and its iteration count is 1.
    model.fit(np.zeros((32, inputs), "float32"), np.zeros(32, "int32"), epochs=1, verbose=0)
    return model


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _timed_cpu(t: dict[str, float], key: str, fn: Any) -> Any:
    """Runs ``fn``; puts its wall seconds under ``key`` and this process's CPU seconds under ``key + '_cpu'``."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    t[key], t[key + "_cpu"] = time.perf_counter() - w0, time.process_time() - c0
    return out


def _round(store: Any, model: Any, step: int, path: str, meta: dict[str, Any],
           *, ours_first: bool) -> tuple[dict[str, float], tuple[int, int]]:
    """One checkpoint and one load each, ours and Keras's, in the order given; seconds and file sizes."""
    opt = model.optimizer
    t: dict[str, float] = {}
    # Alternate which goes first, so neither always meets the other's dirty pages.
    info = None
    for what in (["ours", "save_weights"] if ours_first else ["save_weights", "ours"]):
        if what == "ours":
            snap = _timed_cpu(t, "snapshot", lambda: store.snapshot(model, opt, branch="main", step=step,
                                                                    node="main-1", kind="boundary", meta=meta))
            info = _timed_cpu(t, "write", lambda snap=snap: store.write(snap))
            t["save"], t["save_cpu"] = t["snapshot"] + t["write"], t["snapshot_cpu"] + t["write_cpu"]
        else:
            _timed_cpu(t, "save_weights", lambda: model.save_weights(path))
            _timed_cpu(t, "fsync", lambda: _fsync_file(path))
    assert info is not None
    for what in (["load", "load_weights"] if ours_first else ["load_weights", "load"]):
        if what == "load":
            _timed_cpu(t, what, lambda: store.load(model, opt, info))
        else:
            _timed_cpu(t, what, lambda: model.load_weights(path))
    sizes = (os.path.getsize(info.path), os.path.getsize(path))
    os.unlink(path)
    return t, sizes


def _ratio(ours: list[float], theirs: list[float]) -> tuple[float, str]:
    pairs = pair_ratios(ours, theirs)
    return round(median(pairs), 4), spread(pairs)


def _one_size(model: Any, folder: str, n: int, profile: bool) -> dict[str, Any]:
    """``n`` interleaved rounds of checkpoint and load, ours and Keras's, on one model."""
    from tb_retune.trainer.checkpoints import CheckpointStore

    store = CheckpointStore(os.path.join(folder, "checkpoints"), keep_last=5)
    opt = model.optimizer
    meta = {"epoch": 1, "hyperparameters": {"learning_rate": 1e-3}}
    rounds: list[dict[str, float]] = []
    sizes = (0, 0)
    for i in range(n + 1):  # the first round warms up (and fills the snapshot buffer) and is dropped
        t, sizes = _round(store, model, 1000 + i, os.path.join(folder, f"model-{1000 + i}.weights.h5"),
                          meta, ours_first=i % 2 == 0)
        if i:
            rounds.append(t)

    def col(key: str) -> list[float]:
        return [r[key] for r in rounds]

    durable = [r["save_weights"] + r["fsync"] for r in rounds]
    save, save_spread = _ratio(col("save"), col("save_weights"))
    fsynced, fsynced_spread = _ratio(col("save"), durable)
    thread, thread_spread = _ratio(col("snapshot"), col("save_weights"))
    load, load_spread = _ratio(col("load"), col("load_weights"))
    # CPU time moves less than wall time on a busy machine: what this process spent, its fsyncs' waits aside.
    thread_cpu, thread_cpu_spread = _ratio(col("snapshot_cpu"), col("save_weights_cpu"))
    save_cpu, save_cpu_spread = _ratio(col("save_cpu"), col("save_weights_cpu"))
    fsynced_cpu, fsynced_cpu_spread = _ratio(col("save_cpu"), [r["save_weights_cpu"] + r["fsync_cpu"] for r in rounds])
    load_cpu, load_cpu_spread = _ratio(col("load_cpu"), col("load_weights_cpu"))
    entry: dict[str, Any] = {
        "params": int(model.count_params()),
        "reps": n,
        "file_mb": {"ours": round(sizes[0] / 2**20, 2), "save_weights": round(sizes[1] / 2**20, 2)},
        "save_ms": {"ours": round(median(col("save")) * 1000, 2),
                    "ours_training_thread": round(median(col("snapshot")) * 1000, 2),
                    "ours_writer_thread": round(median(col("write")) * 1000, 2),
                    "save_weights": round(median(col("save_weights")) * 1000, 2),
                    "save_weights+fsync": round(median(durable) * 1000, 2)},
        "load_ms": {"ours": round(median(col("load")) * 1000, 2),
                    "load_weights": round(median(col("load_weights")) * 1000, 2)},
        "checkpoint_vs_save_weights": save,
        "checkpoint_vs_save_weights_fsynced": fsynced,
        "checkpoint_training_thread_vs_save_weights": thread,
        "restore_vs_load_weights": load,
        "save_ratio_spread": save_spread,
        "fsynced_ratio_spread": fsynced_spread,
        "training_thread_ratio_spread": thread_spread,
        "load_ratio_spread": load_spread,
        "cpu": {"training_thread_vs_save_weights": thread_cpu, "training_thread_spread": thread_cpu_spread,
                "checkpoint_vs_save_weights": save_cpu, "checkpoint_spread": save_cpu_spread,
                "checkpoint_vs_save_weights_fsynced": fsynced_cpu, "fsynced_spread": fsynced_cpu_spread,
                "restore_vs_load_weights": load_cpu, "load_spread": load_cpu_spread,
                "ms": {"snapshot": round(median(col("snapshot_cpu")) * 1000, 2),
                       "write": round(median(col("write_cpu")) * 1000, 2),
                       "save_weights": round(median(col("save_weights_cpu")) * 1000, 2),
                       "fsync": round(median(col("fsync_cpu")) * 1000, 2),
                       "load": round(median(col("load_cpu")) * 1000, 2),
                       "load_weights": round(median(col("load_weights_cpu")) * 1000, 2)}},
    }
    # Every round's times (ms), for other estimators than the median of the pair ratios.
    entry["rounds_ms"] = {k: [round(r[k] * 1000, 2) for r in rounds] for k in sorted(rounds[0])} if rounds else {}
    for key, ours_keys, their_keys in (("fsynced", ("snapshot", "write"), ("save_weights", "fsync")),
                                       ("training_thread", ("snapshot",), ("save_weights",))):
        for clock in ("", "_cpu"):
            ours = [sum(r[k + clock] for k in ours_keys) for r in rounds]
            theirs = [sum(r[k + clock] for k in their_keys) for r in rounds]
            # The ratio of the fastest round of each side: interference only ever adds time.
            entry.setdefault("min_ratio", {})[key + clock] = round(min(ours) / min(theirs), 4) if rounds else None
    if profile and (save > 1.2 or load > 1.2 or fsynced > 1.0 or thread > 0.3):
        last = store.latest("main")
        assert last is not None
        entry["profile_save"] = profile_top(
            lambda: store.save(model, opt, branch="main", step=9999, node="main-1", kind="boundary", meta=meta))
        entry["profile_load"] = profile_top(lambda: store.load(model, opt, last))
    return entry


# -- memory at 100 M parameters (in a process of its own: a clean peak) --------
def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Resets VmHWM (the peak RSS) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def _peak_extra_bytes(fn: Any) -> tuple[float, int]:
    """Seconds ``fn`` took, and how far the peak RSS rose above the RSS before it."""
    import gc

    gc.collect()
    _reset_peak()
    before = _rss_kib("VmRSS")
    seconds, _ = timed(fn)
    return seconds, (_rss_kib("VmHWM") - before) * 1024


def memory_child(folder: str, reps: int = 0) -> dict[str, Any]:
    """Runs in a fresh process: the peak memory of a background write against the model's state;
    then, with ``reps``, the timed rounds of :func:`_one_size` at this size (under ``size``)."""
    from tb_retune.trainer.checkpoint_writer import BackgroundWriter
    from tb_retune.trainer.checkpoints import CheckpointStore, collect_variables

    _, inputs, width, depth = XL
    model = _model(inputs, width, depth)
    opt = model.optimizer
    state = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for _, v in collect_variables(model, opt))
    store = CheckpointStore(os.path.join(folder, "checkpoints"))
    errors: list[str] = []
    written: list[Any] = []
    meta = {"epoch": 1}

    def background(step: int) -> None:
        writer = BackgroundWriter(store, written.append, errors.append)
        try:
            writer.submit(store.snapshot(model, opt, branch="main", step=step, node="main-1", kind="epoch",
                                         meta=meta))
            writer.flush()
        finally:
            writer.stop()

    path = os.path.join(folder, "xl.weights.h5")
    # The first write is the worst case: its buffer is new (later ones reuse it and add nothing).
    ours_s, ours = _peak_extra_bytes(lambda: background(1))
    theirs_s, theirs = _peak_extra_bytes(lambda: model.save_weights(path))
    if errors or len(written) != 1:
        raise RuntimeError(f"the background write failed: {errors}")
    file_mb = round(os.path.getsize(written[-1].path) / 2**20, 1)
    store.free_buffers()
    os.unlink(written[-1].path)
    os.unlink(path)
    os.makedirs(os.path.join(folder, "timed"))
    size = _one_size(model, os.path.join(folder, "timed"), reps, profile=False) if reps else None
    return {
        **({"size": size} if size else {}),
        "params": int(model.count_params()),
        "state_mb": round(state / 2**20, 1),
        "file_mb": file_mb,
        "peak_extra_mb": {"background_write": round(ours / 2**20, 1), "save_weights": round(theirs / 2**20, 1)},
        "seconds": {"background_write": round(ours_s, 2), "save_weights": round(theirs_s, 2)},
        # The model's own state plus what the write added at its peak, over the state.
        "background_write_memory_vs_state": round((state + ours) / state, 3),
        "save_weights_memory_vs_state": round((state + theirs) / state, 3),
    }


def memory(folder: str, reps: int = 0) -> dict[str, Any]:
    """The 100 M-parameter memory check in a child process (so its peak RSS is its own), and ``reps``
    timed rounds at that size."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import json, sys; from benchmarks._common import quiet; quiet(); "
            "from benchmarks.bench_checkpoint import memory_child; "
            "print(json.dumps(memory_child(sys.argv[1], int(sys.argv[2]))))")
    done = subprocess.run([sys.executable, "-c", code, folder, str(reps)], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory check failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def compare(*, reps: dict[str, int], profile: bool = True, xl: bool = True) -> dict[str, Any]:
    """Per size: median ratios of interleaved checkpoints and loads, ours over Keras's; then the 100 M memory check."""
    out: dict[str, Any] = {"sizes": {}}
    root = tempfile.mkdtemp(prefix="tbr-bench-ckpt-")
    try:
        for name, inputs, width, depth in SIZES:
            folder = os.path.join(root, name)
            os.makedirs(folder)
            entry = _one_size(_model(inputs, width, depth), folder, reps.get(name, 5), profile)
            out["sizes"][name] = entry
            log(f"  checkpoint {name} ({entry['params']:,} parameters): save x{entry['checkpoint_vs_save_weights']:.2f}, "
                f"durable x{entry['checkpoint_vs_save_weights_fsynced']:.2f}, "
                f"training thread x{entry['checkpoint_training_thread_vs_save_weights']:.3f} "
                f"({entry['training_thread_ratio_spread']}; CPU x{entry['cpu']['training_thread_vs_save_weights']:.3f} "
                f"{entry['cpu']['training_thread_spread']}), durable CPU x{entry['cpu']['checkpoint_vs_save_weights_fsynced']:.3f} "
                f"({entry['cpu']['fsynced_spread']}), load x{entry['restore_vs_load_weights']:.2f}")
            shutil.rmtree(folder, ignore_errors=True)
        # The headline numbers are the worst of the three sizes; each size has its own key.
        for key in ("checkpoint_vs_save_weights", "restore_vs_load_weights", "checkpoint_vs_save_weights_fsynced",
                    "checkpoint_training_thread_vs_save_weights"):
            worst = max(out["sizes"], key=lambda n, key=key: out["sizes"][n][key])
            out[key] = out["sizes"][worst][key]
            out[f"{key}_worst_size"] = worst
            for n, e in out["sizes"].items():
                out[f"{key}_{n}"] = e[key]
        for key in ("checkpoint_vs_save_weights_fsynced", "training_thread_vs_save_weights"):
            for n, e in out["sizes"].items():  # the same ratios in process CPU time, per size
                out[f"{key.replace('training_thread', 'checkpoint_training_thread')}_cpu_{n}"] = e["cpu"][key]
        if xl:
            folder = os.path.join(root, XL[0])
            os.makedirs(folder)
            t0 = time.perf_counter()
            mem = memory(folder, reps.get("xl", 0))
            mem["check_s"] = round(time.perf_counter() - t0, 1)
            entry = mem.pop("size", None)
            if entry:  # the 100 M size: in the table, but not in the worst-of-three headline (issue 20's is 17 M)
                out["sizes"]["xl"] = entry
                for key in ("checkpoint_vs_save_weights_fsynced", "checkpoint_training_thread_vs_save_weights",
                            "restore_vs_load_weights"):
                    out[f"{key}_xl"] = entry[key]
                log(f"  checkpoint xl ({entry['params']:,} parameters, {entry['reps']} rounds): "
                    f"durable x{entry['checkpoint_vs_save_weights_fsynced']:.2f} "
                    f"(CPU x{entry['cpu']['checkpoint_vs_save_weights_fsynced']:.2f}), training thread "
                    f"x{entry['checkpoint_training_thread_vs_save_weights']:.3f}, load x{entry['restore_vs_load_weights']:.2f}")
            out["details"] = {"memory_xl": mem}
            out["background_write_memory_vs_state"] = mem["background_write_memory_vs_state"]
            log(f"  checkpoint xl ({mem['params']:,} parameters, {mem['state_mb']} MiB of state): peak memory during "
                f"a background write x{mem['background_write_memory_vs_state']:.2f} of the state "
                f"(save_weights x{mem['save_weights_memory_vs_state']:.2f})")
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)
