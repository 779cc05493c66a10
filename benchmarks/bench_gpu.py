"""The fit-overhead and checkpoint rows on a GPU, with a ResNet-sized model on synthetic data.

Run by ``benchmarks/gpu.sh`` (which checks for an NVIDIA GPU first). On a GPU a
step of ResNet-50 takes milliseconds, so what a callback costs per batch and
per epoch shows against a real step, and a checkpoint's snapshot includes the
copy from the device. Nothing is downloaded: ``ResNet50(weights=None)`` builds
the architecture with random weights, and the data are random.

    python benchmarks/bench_gpu.py                 # ResNet50, 224x224 inputs, batch 32 (needs a GPU)
    python benchmarks/bench_gpu.py --tiny          # a small ResNet-ish model, 32x32: checks the script on CPU
    python benchmarks/bench_gpu.py --require-gpu   # exit 0 with a message when TensorFlow sees no GPU

The rows are those of ``run.py``: ``overhead_vs_bare_fit`` (RetuneCallback
without the epoch checkpoint over bare ``fit``), ``overhead_vs_tensorboard_callback``
(RetuneCallback at its defaults over ``keras.callbacks.TensorBoard``), each
the median of interleaved pairs, in wall and CPU time; and the checkpoint
rows of ``bench_checkpoint`` at this model's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def _resnet_ish(inputs: int, classes: int) -> Any:
    """A small residual network (three stages of two blocks): the tiny stand-in for ResNet-50."""
    import keras
    from keras import layers

    x_in = keras.Input((inputs, inputs, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x_in)
    for width in (16, 32, 64):
        for block in range(2):
            stride = 2 if block == 0 and width != 16 else 1
            y = layers.Conv2D(width, 3, strides=stride, padding="same", activation="relu")(x)
            y = layers.BatchNormalization()(layers.Conv2D(width, 3, padding="same")(y))
            if stride != 1 or x.shape[-1] != width:
                x = layers.Conv2D(width, 1, strides=stride)(x)
            x = layers.Activation("relu")(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(x_in, layers.Dense(classes)(x))


def build(tiny: bool) -> tuple[Any, np.ndarray, np.ndarray, int]:
    """The compiled model, synthetic data and the batch size."""
    import keras

    keras.utils.set_random_seed(0)
    size, classes, batch, samples = (32, 10, 16, 128) if tiny else (224, 1000, 32, 32 * 40)
    model = _resnet_ish(size, classes) if tiny else keras.applications.ResNet50(
        weights=None, input_shape=(size, size, 3), classes=classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not tiny))
    rng = np.random.default_rng(0)
    x = rng.random((samples, size, size, 3), dtype=np.float32)
    y = rng.integers(0, classes, samples).astype("int32")
    model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)  # traced, slots built
    return model, x, y, batch


def fit_overhead(model: Any, x: np.ndarray, y: np.ndarray, batch: int, *, pairs: int, epochs: int) -> dict[str, Any]:
    """Interleaved fits of the four kinds, each from the same weights; median pair ratios."""
    from benchmarks._common import interleaved, median, pair_ratios, spread
    from benchmarks.bench_fit import _callbacks, _Resettable

    state = _Resettable(model)
    kinds = ["bare", "retune_nockpt", "tensorboard", "retune"]
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    root = tempfile.mkdtemp(prefix="tbr-bench-gpu-fit-")
    try:
        for r, kind in interleaved(pairs + 1, kinds):  # round 0 warms each kind up and is dropped
            state.reset()
            logdir = os.path.join(root, f"{kind}-{r}")
            c0, w0 = time.process_time(), time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=False,
                      callbacks=_callbacks(kind, logdir))
            if r:
                wall[kind].append(time.perf_counter() - w0)
                cpu[kind].append(time.process_time() - c0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out: dict[str, Any] = {"steps": epochs * -(-len(x) // batch), "pairs": pairs,
                           "step_ms_bare": round(median(wall["bare"]) * 1000 / (epochs * -(-len(x) // batch)), 2)}
    for key, ours, theirs in (("overhead_vs_bare_fit", "retune_nockpt", "bare"),
                              ("overhead_vs_tensorboard_callback", "retune", "tensorboard"),
                              ("overhead_with_checkpoints_vs_bare", "retune", "bare")):
        w, c = pair_ratios(wall[ours], wall[theirs]), pair_ratios(cpu[ours], cpu[theirs])
        out[key] = round(median(w), 4)
        out[key + "_cpu"] = round(median(c), 4)
        out[key + "_spread"] = spread(w)
    out["wall_s_median"] = {k: round(median(v), 3) for k, v in wall.items()}
    return out


def gpu_names() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a small ResNet-ish model on 32x32 inputs (runs on CPU)")
    parser.add_argument("--require-gpu", action="store_true", help="exit 0 with a message when no GPU is visible")
    parser.add_argument("--pairs", type=int, help="interleaved fit rounds (default 5; 2 with --tiny)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (default 2)")
    parser.add_argument("--checkpoint-rounds", type=int, help="checkpoint rounds (default 7; 2 with --tiny)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    args = parser.parse_args(argv)

    from benchmarks._common import log, machine, quiet

    quiet()
    gpus = gpu_names()
    if not gpus and args.require_gpu:
        print("bench_gpu: TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty; is the "
              "CUDA build of TensorFlow installed? see BUILD.md); nothing to measure.")
        return 0
    from benchmarks import bench_checkpoint
    from benchmarks.run import checkpoint_table, table

    started = time.perf_counter()
    model, x, y, batch = build(args.tiny)
    name = "resnet_ish_tiny" if args.tiny else "resnet50"
    log(f"{name}: {model.count_params():,} parameters, inputs {x.shape[1:]}, batch {batch}, "
        f"devices {gpus or ['CPU']}")
    result: dict[str, Any] = {"model": name, "gpus": gpus, "details": {}}
    fit = fit_overhead(model, x, y, batch, pairs=args.pairs or (2 if args.tiny else 5), epochs=args.epochs)
    result["details"]["fit"] = fit
    for key in ("overhead_vs_bare_fit", "overhead_vs_tensorboard_callback", "overhead_with_checkpoints_vs_bare"):
        result[key] = fit[key]
    log(f"  fit: step {fit['step_ms_bare']} ms bare; retune / bare x{fit['overhead_vs_bare_fit']:.3f} "
        f"(CPU x{fit['overhead_vs_bare_fit_cpu']:.3f}); retune / TensorBoard x{fit['overhead_vs_tensorboard_callback']:.3f}")
    folder = tempfile.mkdtemp(prefix="tbr-bench-gpu-ckpt-")
    try:
        entry = bench_checkpoint._one_size(model, folder, args.checkpoint_rounds or (2 if args.tiny else 7), False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    entry.pop("rounds_ms", None)
    result["details"]["checkpoint"] = {"sizes": {name: entry}}
    for key in ("checkpoint_vs_save_weights", "checkpoint_vs_save_weights_fsynced",
                "checkpoint_training_thread_vs_save_weights", "restore_vs_load_weights"):
        result[key] = entry[key]
    result["seconds"] = round(time.perf_counter() - started, 1)
    info = machine()
    print()
    print(f"tb-retune on {', '.join(gpus) or 'CPU only'} ({name}, {result['seconds']} s), {info['nproc']} x "
          f"{info['cpu']}, TensorFlow {info.get('tensorflow')}, step {fit['step_ms_bare']} ms")
    print()
    print(table(result))
    print()
    print(checkpoint_table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
