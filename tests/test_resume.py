"""A real trainer process killed with SIGKILL at random points resumes."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import read_status, wait_for

pytestmark = pytest.mark.backend  # make test runs these under every Keras backend

SCRIPT = os.path.join(os.path.dirname(__file__), "trainer_script.py")
STEPS_PER_EPOCH = 8  # 128 samples, batch 16


def _start(logdir: str, out: Any, epochs: int = 12) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, SCRIPT, logdir, "--epochs", str(epochs), "--sleep", "0.01",
                             "--every-steps", "3"], stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume(tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    os.makedirs(logdir)
    with open(os.path.join(logdir, "retune.json"), "w") as f:
        json.dump({"schedule": [{"at_step": 20, "hyperparameters": {"learning_rate": 0.02}}]}, f)
    rng = random.Random(42)
    log_path = str(tmp_path / "trainer.log")
    seen_steps = []
    with open(log_path, "ab") as out:
        for _round in range(3):
            before = read_status(logdir).get("step", -1)
            proc = _start(logdir, out)
            try:
                wait_for(lambda b=before, p=proc: read_status(logdir).get("pid") == p.pid
                         and read_status(logdir).get("step", -1) > b + 10, timeout=60, what="progress")
                time.sleep(rng.uniform(0.0, 0.6))  # anywhere, checkpoint writes included
            finally:
                proc.kill()
                proc.wait()
            seen_steps.append(read_status(logdir).get("step"))
        # A restore asked for while no trainer runs is carried out on restart.
        ckpts = read_status(logdir)["checkpoints"]["main"]
        assert 20 in ckpts  # the node boundary is kept by the retention policy
        with open(os.path.join(logdir, "retune.json"), "w") as f:
            json.dump({"schedule": [{"at_step": 20, "hyperparameters": {"learning_rate": 0.02}}],
                       "restore": {"id": "r-offline", "branch": "main", "step": 20}}, f)
        proc = _start(logdir, out)
        assert proc.wait(timeout=120) == 0
    log = open(log_path).read()
    resumed = re.findall(r"retune: resumed branch main at step (\d+)", log)
    assert len(resumed) == 3, log
    steps = [int(s) for s in resumed]
    assert steps == sorted(steps) and steps[-1] > 0, steps  # never back to scratch
    status = read_status(logdir)
    assert status["state"] == "finished"
    assert status["restores_done"] == ["r-offline"]
    branch = status["branch"]
    assert branch == "main-s20"
    # The branch starts from the state just before the change at 20; the
    # schedule entry at 20 belongs to the past it inherits and does not fire.
    assert status["hyperparameters"]["learning_rate"] == pytest.approx(0.05)
    # fit counts epochs from where it was: the branch ends at epoch 12.
    assert status["epoch"] == 12

    # Every checkpoint left is complete and loadable.
    from tb_retune.trainer.checkpoints import CheckpointStore

    store = CheckpointStore(os.path.join(logdir, "checkpoints"))
    for info in store.all_infos():
        meta, arrays = store.read_arrays(info)
        assert meta["step"] == info.step and arrays
    for _root, _, files in os.walk(os.path.join(logdir, "checkpoints")):
        assert not [name for name in files if name.startswith(".")]

    # Scalars and tree, as TensorBoard's data provider serves them: no duplicates.
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

    from tb_retune.experiment import metadata

    mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"retune": 0, "scalars": 0})
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    from tensorboard import context

    ctx = context.RequestContext()
    scalars = provider.read_scalars(ctx, experiment_id="", plugin_name="scalars", downsample=10_000,
                                    run_tag_filter=None)
    loss_steps = [d.step for d in scalars["main"]["loss"]]
    assert loss_steps == sorted(set(loss_steps)), loss_steps
    lr = {d.step: d.value for d in scalars["main"]["hyperparameters/learning_rate"]}
    assert lr[20] == pytest.approx(0.02) and lr[0] == pytest.approx(0.05)
    tensors = provider.read_tensors(ctx, experiment_id="", plugin_name=metadata.PLUGIN_NAME, downsample=100,
                                    run_tag_filter=None)
    nodes = {tag: [metadata.decode_node(_proto(d)) for d in data]
             for tag, data in tensors["main"].items()}
    assert sorted(nodes) == ["retune/node/main-1", "retune/node/main-2"]
    assert {n["step"] for n in nodes["retune/node/main-2"]} == {20}
    # The same file read from scratch (no purge involved) has no duplicates either.
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(os.path.join(logdir, "main"), size_guidance={"tensors": 0},
                                             purge_orphaned_data=False)
    acc.Reload()
    raw_steps = [e.step for e in acc.Tensors("loss")]
    assert raw_steps == sorted(set(raw_steps)), raw_steps


def _proto(datum: Any) -> Any:
    from tensorboard.util import tensor_util

    return tensor_util.make_tensor_proto(datum.numpy)
