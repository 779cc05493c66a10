"""Event-file writing for one branch: scalars, tree nodes and notes.

Uses TensorBoard's own pure-Python event writer, so writing summaries does
not touch the TensorFlow graph and costs microseconds per value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tb_retune.experiment import metadata

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(
        plugin_name=scalar_metadata.PLUGIN_NAME,
        content=scalar_metadata.create_summary_metadata("", "").plugin_data.content,
    ),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)


def scalars_pb(values: Mapping[str, float]) -> summary_pb2.Summary:
    """One Summary with a scalar per tag (pure; non-finite values kept as is)."""
    summary = summary_pb2.Summary()
    for tag, value in values.items():
        v = summary.value.add(tag=tag, metadata=_SCALAR_METADATA)
        v.tensor.dtype = 1  # DT_FLOAT
        v.tensor.float_val.append(float(value))
    return summary


def truncate_run(run_dir: str, step: int) -> int:
    """Drops the events at or after ``step`` from a run's event files.

    A trainer that resumes from the checkpoint at ``step`` trains those
    steps again: without this, TensorBoard would show both copies (the
    multiplexer honours the SessionLog.START below, but other readers may
    not). Each file is rewritten to a temporary name, fsynced, then put in
    place with ``os.replace``. Returns the number of events dropped.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    if not os.path.isdir(run_dir):
        return 0
    for name in sorted(os.listdir(run_dir)):
        if "tfevents" not in name or name.startswith("."):
            continue
        path = os.path.join(run_dir, name)
        events = list(EventFileLoader(path).Load())
        keep = [e for e in events if e.step < step or e.HasField("file_version")]
        if len(keep) == len(events):
            continue
        dropped += len(events) - len(keep)
        tmp = os.path.join(run_dir, f".{name}.truncate")
        with open(tmp, "wb") as f:
            writer = RecordWriter(f)
            for e in keep:
                writer.write(e.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


class BranchWriter:
    """Writes one branch's run folder (``<experiment>/<branch>/``)."""

    def __init__(self, logdir: str, *, start_step: int) -> None:
        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self._writer = EventFileWriter(logdir, max_queue_size=100, flush_secs=5)
        # A SessionLog.START tells TensorBoard that the run (re)starts at this
        # step: after a crash and resume it drops the orphaned points above it.
        self._add(event_pb2.Event(session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)), start_step)

    def _add(self, event: event_pb2.Event, step: int) -> None:
        event.wall_time = time.time()
        event.step = int(step)
        self._writer.add_event(event)

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        clean = {}
        for tag, value in values.items():
            try:
                clean[tag] = float(value)  # NaN and inf are kept: a diverging loss is news
            except (TypeError, ValueError):
                continue
        if clean:
            self._add(event_pb2.Event(summary=scalars_pb(clean)), step)

    def hyperparameters(self, step: int, values: Mapping[str, Any]) -> None:
        # Numbers and booleans (as 0/1); None (a setting turned off) is left out.
        self.scalars(step, {metadata.hyperparameter_tag(name): value for name, value in values.items()
                            if isinstance(value, (bool, int, float))})

    def summary(self, pb: summary_pb2.Summary, step: int) -> None:
        """Writes a ready-made summary (the HParams session of trainer.hparams)."""
        self._add(event_pb2.Event(summary=pb), step)

    def node(self, record: Mapping[str, Any]) -> None:
        """Writes a node record and flushes, so the tree survives a crash."""
        self._add(event_pb2.Event(summary=metadata.node_pb(record)), int(record["step"]))
        self._writer.flush()

    def notes(self, records: Sequence[Mapping[str, Any]], step: int) -> None:
        """Writes note records (``metadata.note_record``) at ``step`` and flushes."""
        for record in records:
            self._add(event_pb2.Event(summary=metadata.note_pb(record)), step)
        if records:
            self._writer.flush()

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
