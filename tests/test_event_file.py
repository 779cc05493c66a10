"""Event files written on the caller's thread (tb_retune.experiment.event_file):
what TensorFlow and TensorBoard read back, no thread of their own, and the
epoch's points in the file while fit still runs."""

from __future__ import annotations

import glob
import os
import re
import threading
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from tb_retune.experiment.event_file import EventFile
from tb_retune.trainer.summaries import BranchWriter
from tests.conftest import tiny_data, tiny_model, wait_for


def _events(folder: str) -> list[event_pb2.Event]:
    (path,) = glob.glob(os.path.join(folder, "*tfevents*"))
    return list(EventFileLoader(path).Load())


def test_tensorflow_reads_every_record_back_and_checks_its_crc(tmp_path: Any) -> None:
    import tensorflow as tf

    writer = BranchWriter(str(tmp_path / "main"), start_step=0)
    for step in range(5):
        writer.scalars(step, {"loss": 1.0 / (step + 1), "accuracy": step / 10})
    writer.node({"version": 1, "id": "n1", "branch": "main", "step": 3, "config": {"x": "y" * 3000}})
    writer.close()
    (path,) = glob.glob(str(tmp_path / "main" / "*tfevents*"))
    assert re.fullmatch(r"events\.out\.tfevents\.\d{10}\..+\.\d+\.\d+", os.path.basename(path))

    records = [event_pb2.Event.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert records[0].file_version == "brain.Event:2"
    assert records[1].session_log.status == event_pb2.SessionLog.START
    losses = [(e.step, tensor_util.make_ndarray(v.tensor).item()) for e in records
              for v in e.summary.value if v.tag == "loss"]
    assert losses == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]
    assert [e.step for e in _events(str(tmp_path / "main"))] == [e.step for e in records]

    # The checksums are real: TensorFlow refuses a record with one byte changed.
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    with open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(path))


def test_a_branch_writer_starts_no_thread_and_flush_hands_the_bytes_over(tmp_path: Any) -> None:
    before = threading.active_count()
    writer = BranchWriter(str(tmp_path / "main"), start_step=0)
    writer.scalars(7, {"loss": 0.5})
    assert threading.active_count() == before
    assert [e.step for e in _events(str(tmp_path / "main")) if e.HasField("summary")] == []  # still buffered
    writer.flush()
    assert [e.step for e in _events(str(tmp_path / "main")) if e.HasField("summary")] == [7]
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.scalars(8, {"loss": 0.4})


def test_two_files_of_one_process_in_one_second_have_names_of_their_own(tmp_path: Any) -> None:
    files = [EventFile(str(tmp_path)) for _ in range(3)]
    assert len({f.path for f in files}) == 3
    for f in files:
        f.close()


def test_an_epochs_points_reach_the_file_while_fit_still_runs(tmp_path: Any) -> None:
    """The scalars are flushed off the training thread after they are logged,
    not only at a checkpoint or at the end (no checkpoint each epoch here)."""
    import keras

    import tb_retune

    logdir = str(tmp_path / "exp")
    release = threading.Event()
    seen: list[list[int]] = []

    def epoch_steps() -> list[int]:
        try:
            return sorted({e.step for e in _events(os.path.join(logdir, "main"))
                           for v in e.summary.value if v.tag == "loss"})
        except ValueError:  # no file yet
            return []

    class Hold(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if epoch == 1:  # RetuneCallback has logged epoch 0's points by now
                seen.append(wait_for(epoch_steps, timeout=60, what="epoch 0's loss in the event file"))
                release.wait(60)

    model = tiny_model()
    x, y = tiny_data(64)
    callback = tb_retune.RetuneCallback(logdir, verbose=False, checkpoint_every_epochs=None)
    fit = threading.Thread(target=lambda: model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                                                    callbacks=[callback, Hold()]), daemon=True)
    fit.start()
    try:
        wait_for(lambda: seen, timeout=120, what="the hold at epoch 1")
        assert seen[0] == [4]  # epoch 0 ended at step 4, and fit waits in epoch 1
    finally:
        release.set()
        fit.join(120)
    assert not fit.is_alive()
    assert epoch_steps() == [4, 8]
