"""One process of a two-process JAX ``DataParallel`` fit with ``RetuneCallback``.

``python tests/distributed_jax_script.py LOGDIR PORT PROCESS_ID [EPOCHS]``:
both processes run it on the same LOGDIR. Process 0 also edits the control
file during the fit (three live changes and a restore). At the end each
process writes its weights and what it applied to ``LOGDIR/../process-<i>.npz``
and ``.json``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
logdir, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 6
scenario = len(sys.argv) <= 5 or sys.argv[5] != "quiet"
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tb_retune  # noqa: E402


def save(path: str, obj: Any) -> None:
    tmp = path + ".swp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


keras.distribution.set_distribution(keras.distribution.DataParallel(auto_shard_dataset=False))
keras.utils.set_random_seed(0)  # the same initial weights in every process
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.0),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 4)).astype("float32")
y = (x[:, 0] + x[:, 1] > 0).astype("int32")
x, y = x[pid::2], y[pid::2]  # each process its own half: 64 samples, 4 steps of 16 per epoch

every = int(os.environ.get("TB_RETUNE_TEST_AGREE_EVERY", "1"))
callback = tb_retune.RetuneCallback(logdir, verbose=False, keep_checkpoints=None, agree_every_steps=every)
control = os.path.join(logdir, "retune.json")
requests = {  # (branch, step seen at a batch start) -> what process 0 writes then
    ("main", 3): {"hyperparameters": {"learning_rate": 0.01}},
    ("main", 9): {"hyperparameters": {"learning_rate": 0.01, "momentum": 0.5}},
    ("main", 14): {"hyperparameters": {"learning_rate": 0.02, "momentum": 0.5},
                   "restore": {"id": "r-1", "branch": "main", "step": 8}},
    ("main-s8", 12): {"hyperparameters": {"learning_rate": 0.03, "momentum": 0.5}},
}


class Driver(keras.callbacks.Callback):
    """Process 0 edits the control file, as a person would, while steps run."""

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        c = callback.controller
        request = requests.get((c.branch, c.current_step()))
        if request is not None:
            posted = c.inbox.posted
            save(control, request)
            assert c.inbox.wait_posted(posted, timeout=60), "the watcher did not see the save"


callbacks: list[Any] = [callback]
if pid == 0 and scenario:
    callbacks.append(Driver())
model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
values = {f"model/{v.path}": np.asarray(v.value) for v in model.weights}
values.update({f"optimizer/{v.path}": np.asarray(v.value) for v in model.optimizer.variables})
root = os.path.dirname(logdir)
np.savez(os.path.join(root, f"process-{pid}.npz"), **values)
state = callback.controller.session.state.public()
save(os.path.join(root, f"process-{pid}.json"), {
    "applied": [{k: a.get(k) for k in ("step", "kind", "what", "branch")} for a in state.get("applied", [])],
    "branch": callback.controller.branch, "step": int(np.asarray(model.optimizer.iterations.value)),
})
