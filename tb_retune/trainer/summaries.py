"""Event-file writing for one branch: scalars, tree nodes and notes.

Writes TensorBoard's events through :class:`tb_retune.experiment.event_file.EventFile`
on the caller's thread: no TensorFlow graph, no thread of its own, microseconds
per value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata

from tb_retune.experiment import metadata
from tb_retune.experiment.atomic import fsync_dir
from tb_retune.experiment.event_file import EventFile, write_records

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
    """Drops the events *after* ``step`` from a run's event files; returns how many.

    A trainer that resumes from the checkpoint at ``step`` trains the steps
    after it again: without this, TensorBoard would show both copies (the
    multiplexer honours the writer's SessionLog.START, other readers may
    not). The points at ``step`` itself and before stay: the checkpoint holds
    the state after them (an epoch's scalars are logged at the step of its
    checkpoint) and the resume does not log them again.

    Nothing is lost: the dropped events are first written, fsynced, to
    ``.retune-dropped-after-<step>.<file>`` beside the event file (the name
    holds no "tfevents", so TensorBoard does not read it; any TFRecord reader,
    such as ``EventFileLoader``, does). Then each event file is rewritten to
    a temporary name, fsynced and put in place with ``os.replace``.

    Raises ValueError for a negative ``step``: no checkpoint has one.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"truncate_run: step must be an integer >= 0 (a checkpoint's step), got {step!r}")
    dropped = 0
    if not os.path.isdir(run_dir):
        return 0

    def write_file(path: str, events: list[event_pb2.Event]) -> None:
        with open(path, "wb") as f:
            write_records(f, events)
            f.flush()
            os.fsync(f.fileno())

    for name in sorted(os.listdir(run_dir)):
        if "tfevents" not in name or name.startswith("."):
            continue
        path = os.path.join(run_dir, name)
        events = list(EventFileLoader(path).Load())
        keep = [e for e in events if e.step <= step or e.HasField("file_version")]
        if len(keep) == len(events):
            continue
        cut = [e for e in events if not (e.step <= step or e.HasField("file_version"))]
        dropped += len(cut)
        aside = os.path.join(run_dir, f".retune-dropped-after-{step:010d}.{name.replace('tfevents', 'events')}")
        n = 1
        while os.path.exists(aside):
            n += 1
            aside = os.path.join(run_dir, f".retune-dropped-after-{step:010d}-{n}.{name.replace('tfevents', 'events')}")
        write_file(aside, cut)
        tmp = os.path.join(run_dir, f".{name}.truncate")
        write_file(tmp, keep)
        os.replace(tmp, path)
    if dropped:
        fsync_dir(run_dir)
    return dropped


class BranchWriter:
    """Writes one branch's run folder (``<experiment>/<branch>/``)."""

    def __init__(self, logdir: str, *, start_step: int, session_start: bool = True,
                 keep_start_step: bool = False) -> None:
        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self._writer = EventFile(logdir)
        if session_start:
            # A SessionLog.START tells TensorBoard that the run (re)starts at this
            # step: after a crash and resume it drops the orphaned points at or
            # above it. A resume keeps the points at its own step (the epoch's
            # scalars logged with the checkpoint it resumes from): keep_start_step.
            start = event_pb2.Event(session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
            self._add(start, start_step + 1 if keep_start_step else start_step)

    def _add(self, event: event_pb2.Event, step: int) -> None:
        event.wall_time = time.time()
        event.step = int(step)
        self._writer.add(event)

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

    def node(self, record: Mapping[str, Any], *, flush: bool = True) -> None:
        """Writes a node record and flushes, so the tree survives a crash
        (``flush=False``: the caller flushes, e.g. from another thread)."""
        self._add(event_pb2.Event(summary=metadata.node_pb(record)), int(record["step"]))
        if flush:
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
