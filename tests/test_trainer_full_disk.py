"""A full disk (ENOSPC) is reported, training goes on, and it recovers (issue 14 item 4).

The disk is real: a 16 MB tmpfs mounted in a user and mount namespace of
its own (``unshare -Urm``, no root needed), filled to the last byte by a
file while ``fit`` runs, then freed. The trainer runs inside the namespace
and prints what it saw; where user namespaces are not allowed, the test is
skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAINER = textwrap.dedent("""
    import json, os, sys, time
    import keras
    import tb_retune
    from tests.conftest import tiny_data, tiny_model

    fs = sys.argv[1]
    logdir = os.path.join(fs, "exp")
    filler = os.path.join(fs, "filler")

    def fill():
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\\0" * 65536)
                    f.flush()
            except OSError:
                pass
            try:
                os.fsync(f.fileno())
            except OSError:
                pass

    seen = {}

    class Disk(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step == 20:
                fill()
            if step == 60:
                with open(os.path.join(logdir, "retune-status.json")) as f:
                    seen["status_while_full"] = json.load(f)
                os.unlink(filler)  # space returns
            time.sleep(0.03)

    x, y = tiny_data(128)  # 16 steps per epoch with batch 8
    tiny_model().fit(x, y, batch_size=8, epochs=14, verbose=0,
                     callbacks=[tb_retune.RetuneCallback(logdir, verbose=True, update_freq=4,
                                                         checkpoint_every_steps=8), Disk()])
    with open(os.path.join(logdir, "retune-status.json")) as f:
        seen["status"] = json.load(f)
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(os.path.join(logdir, "main"), size_guidance={"tensors": 0})
    acc.Reload()  # as TensorBoard reads it, orphaned-data purging included
    seen["loss_steps"] = sorted({e.step for e in acc.Tensors("loss")})
    print("RESULT " + json.dumps(seen), flush=True)
""")


def _namespaces_work(folder: str) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {folder}"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.slow
def test_enospc_is_reported_training_goes_on_and_recovers(tmp_path: Any) -> None:
    fs = str(tmp_path / "fs")
    os.makedirs(fs)
    if not _namespaces_work(fs):
        pytest.skip("user and mount namespaces are not available here (unshare -Urm)")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    command = f'mount -t tmpfs -o size=16m tmpfs "{fs}" && exec "{sys.executable}" -c "$TRAINER" "{fs}"'
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", command], cwd=ROOT, env=dict(env, TRAINER=TRAINER),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    seen = json.loads(line[len("RESULT "):])
    status = seen["status"]
    assert status["state"] == "finished" and status["step"] == 14 * 16
    messages = [e["message"] for e in status["errors"]]
    full = [m for m in messages if "not written: no space left on device" in m]
    assert len(full) == 1 and "training goes on without it" in full[0], messages  # once per full stretch
    assert any("checkpoints are written again" in m for m in messages), messages
    # The log says it at once, the status as soon as it can be written.
    assert "no space left on device" in proc.stdout
    # Checkpoints that fell in the full stretch are missing; later ones are back.
    steps = status["checkpoints"]["main"]
    assert any(20 < s < 60 and s % 8 == 0 and s not in steps for s in range(21, 60)), steps
    assert max(steps) == 14 * 16 and any(60 < s < 14 * 16 for s in steps), steps
    # The event files are written again once space returns, and TensorBoard
    # still shows the points from before the full stretch.
    assert any("are written again" in m for m in messages) or not any("event files" in m for m in messages)
    loss = seen["loss_steps"]
    assert [s for s in loss if s <= 16] == [4, 8, 12, 16], loss
    assert max(loss) == 14 * 16 and any(60 < s < 130 for s in loss), loss  # back within a second or so
