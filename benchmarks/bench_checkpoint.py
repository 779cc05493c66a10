"""A node-boundary checkpoint (``CheckpointStore.save``/``load``) against Keras's own
``model.save_weights``/``load_weights``, at three model sizes.

Keras 3's ``save_weights`` already writes the optimizer's variables (the
``.weights.h5`` file has an ``optimizer/vars`` group holding the iteration
count, the learning rate and every slot), and ``load_weights`` assigns them
back when the optimizer is built, so the baseline needs nothing added to be
the same state as ours. It is not durable, though: it neither fsyncs nor
renames a finished file into place, while our store does both (a crash never
leaves a half-written checkpoint under its final name). The ratio against
``save_weights`` followed by an fsync of its file is reported beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import numpy as np

from benchmarks._common import log, median, pair_ratios, profile_top, spread, timed

#: (name, inputs, hidden width, hidden layers): the fit benchmarks' MLP (7 thousand
#: parameters), then 1 million and 17 million parameters (Adam keeps two slots per weight).
SIZES = (("small", 32, 64, 2), ("medium", 512, 512, 4), ("large", 2048, 2048, 4))


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


def _round(store: Any, model: Any, step: int, path: str, meta: dict[str, Any],
           *, ours_first: bool) -> tuple[dict[str, float], tuple[int, int]]:
    """One save and one load each, ours and Keras's, in the order given; seconds and file sizes."""
    opt = model.optimizer
    t: dict[str, float] = {}
    # Alternate which goes first, so neither always meets the other's dirty pages.
    order = ["save", "save_weights"] if ours_first else ["save_weights", "save"]
    info = None
    for what in order:
        if what == "save":
            t[what], info = timed(lambda: store.save(model, opt, branch="main", step=step, node="main-1",
                                                     kind="boundary", meta=meta))
        else:
            t[what], _ = timed(lambda: model.save_weights(path))
    assert info is not None
    t["fsync"], _ = timed(lambda: _fsync_file(path))
    # What the training loop itself pays in fit: the trainer copies the values
    # and a background thread writes and fsyncs them (BackgroundWriter).
    t["snapshot"], _ = timed(lambda: store.snapshot(model, opt, branch="main", step=step, node="main-1",
                                                    kind="boundary", meta=meta))
    for what in (["load", "load_weights"] if ours_first else ["load_weights", "load"]):
        if what == "load":
            t[what], _ = timed(lambda: store.load(model, opt, info))
        else:
            t[what], _ = timed(lambda: model.load_weights(path))
    sizes = (os.path.getsize(info.path), os.path.getsize(path))
    os.unlink(path)
    return t, sizes


def _one_size(model: Any, folder: str, n: int, profile: bool) -> dict[str, Any]:
    """``n`` interleaved rounds of save and load, ours and Keras's, on one model."""
    from tb_retune.trainer.checkpoints import CheckpointStore

    store = CheckpointStore(os.path.join(folder, "checkpoints"), keep_last=5)
    opt = model.optimizer
    meta = {"epoch": 1, "hyperparameters": {"learning_rate": 1e-3}}
    ours_save: list[float] = []
    ours_snapshot: list[float] = []
    theirs_save: list[float] = []
    theirs_save_durable: list[float] = []
    ours_load: list[float] = []
    theirs_load: list[float] = []
    sizes = (0, 0)
    for i in range(n + 1):  # the first round warms up and is dropped
        t, sizes = _round(store, model, 1000 + i, os.path.join(folder, f"model-{1000 + i}.weights.h5"),
                          meta, ours_first=i % 2 == 0)
        if i == 0:
            continue
        ours_save.append(t["save"])
        ours_snapshot.append(t["snapshot"])
        theirs_save.append(t["save_weights"])
        theirs_save_durable.append(t["save_weights"] + t["fsync"])
        ours_load.append(t["load"])
        theirs_load.append(t["load_weights"])
    save_ratio = median(pair_ratios(ours_save, theirs_save))
    load_ratio = median(pair_ratios(ours_load, theirs_load))
    entry: dict[str, Any] = {
        "params": int(model.count_params()),
        "reps": n,
        "file_mb": {"ours": round(sizes[0] / 2**20, 2), "save_weights": round(sizes[1] / 2**20, 2)},
        "save_ms": {"ours": round(median(ours_save) * 1000, 2),
                    "ours_training_thread": round(median(ours_snapshot) * 1000, 2),
                    "save_weights": round(median(theirs_save) * 1000, 2),
                    "save_weights+fsync": round(median(theirs_save_durable) * 1000, 2)},
        "load_ms": {"ours": round(median(ours_load) * 1000, 2),
                    "load_weights": round(median(theirs_load) * 1000, 2)},
        "checkpoint_vs_save_weights": round(save_ratio, 4),
        "checkpoint_vs_save_weights_fsynced": round(median(pair_ratios(ours_save, theirs_save_durable)), 4),
        "checkpoint_training_thread_vs_save_weights": round(median(pair_ratios(ours_snapshot, theirs_save)), 4),
        "restore_vs_load_weights": round(load_ratio, 4),
        "save_ratio_spread": spread(pair_ratios(ours_save, theirs_save)),
        "load_ratio_spread": spread(pair_ratios(ours_load, theirs_load)),
    }
    if profile and (save_ratio > 1.2 or load_ratio > 1.2):
        last = store.latest("main")
        assert last is not None
        entry["profile_save"] = profile_top(
            lambda: store.save(model, opt, branch="main", step=9999, node="main-1", kind="boundary", meta=meta))
        entry["profile_load"] = profile_top(lambda: store.load(model, opt, last))
    return entry


def compare(*, reps: dict[str, int], profile: bool = True) -> dict[str, Any]:
    """Per size: median ratios of interleaved saves and loads, ours over Keras's."""
    out: dict[str, Any] = {"sizes": {}}
    root = tempfile.mkdtemp(prefix="tbr-bench-ckpt-")
    try:
        for name, inputs, width, depth in SIZES:
            folder = os.path.join(root, name)
            os.makedirs(folder)
            entry = _one_size(_model(inputs, width, depth), folder, reps.get(name, 5), profile)
            out["sizes"][name] = entry
            log(f"  checkpoint {name} ({entry['params']:,} parameters): save x{entry['checkpoint_vs_save_weights']:.2f}, "
                f"load x{entry['restore_vs_load_weights']:.2f}")
            shutil.rmtree(folder, ignore_errors=True)
        # The headline numbers are the worst of the three sizes; each size has its own key.
        for key in ("checkpoint_vs_save_weights", "restore_vs_load_weights", "checkpoint_vs_save_weights_fsynced",
                    "checkpoint_training_thread_vs_save_weights"):
            worst = max(out["sizes"], key=lambda n, key=key: out["sizes"][n][key])
            out[key] = out["sizes"][worst][key]
            out[f"{key}_worst_size"] = worst
            for n, e in out["sizes"].items():
                out[f"{key}_{n}"] = e[key]
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)
